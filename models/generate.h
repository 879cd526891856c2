// Text generation from a GPT through a workspace's key/value cache (GptWorkspace::Decode): each
// new token costs one position's worth of compute instead of a pass over the whole prefix, on
// the same layer kernels as training. Greedy, temperature and top-k sampling.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "models/gpt.h"
#include "models/gpt_workspace.h"

namespace tandem {

struct SamplingConfig {
  float temperature = 1.0f;  // 0 means greedy
  int top_k = 0;             // 0 means the whole vocabulary
  Status Validate() const;
};

// Picks the next token from logits (V) under `sampling`.
int32_t SampleToken(const float* logits, int V, const SamplingConfig& sampling, Rng& rng);

// One sequence being generated, in a workspace of its own: generators on the same weights may
// run on different threads at once (see gpt_workspace.h). The weights must not change while a
// generator uses them.
class Generator {
 public:
  // Decodes from `model`'s weights (shared: the generator keeps them alive).
  explicit Generator(const Gpt& model);
  explicit Generator(std::shared_ptr<const GptWeights> weights);

  void Reset();
  // Appends `token` at the next position and returns the logits (V) for the token after it.
  // When the context is full, the cache is rebuilt from the most recent context/2 tokens.
  const float* Feed(int32_t token);
  // Appends tokens[0..k) and returns their logits (k,V), row i predicting the token after
  // tokens[i] (what a speculative-decoding verifier needs). Requires k <= context; rebuilds the
  // cache first as Feed does when the tokens do not fit.
  const float* FeedMany(const int32_t* tokens, int k);
  // Forgets the tokens after the first `position` (rejected drafts).
  void Truncate(int position);
  int position() const { return workspace_.position(); }

  // Feeds `prompt` (non-empty) and samples up to max_new_tokens, stopping after `stop_token`
  // (>= 0) or end-of-text. Returns the new tokens only.
  std::vector<int32_t> Generate(const std::vector<int32_t>& prompt, int max_new_tokens,
                                const SamplingConfig& sampling, Rng& rng,
                                int32_t stop_token = -1);

 private:
  GptWorkspace workspace_;
  std::vector<int32_t> history_;  // tokens in the cache, for rebuilding it
};

}  // namespace tandem

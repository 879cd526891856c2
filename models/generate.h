// Text generation from a GPT with a key/value cache: each new token costs one position's worth of
// compute instead of a pass over the whole prefix. Greedy, temperature and top-k sampling.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "models/gpt.h"

namespace tandem {

struct SamplingConfig {
  float temperature = 1.0f;  // 0 means greedy
  int top_k = 0;             // 0 means the whole vocabulary
  Status Validate() const;
};

// Picks the next token from logits (V) under `sampling`.
int32_t SampleToken(const float* logits, int V, const SamplingConfig& sampling, Rng& rng);

class Generator {
 public:
  // `model` must outlive the generator and must not change while it is used; adapters, if any,
  // must be merged (MergeLora) first.
  explicit Generator(const Gpt& model);

  void Reset();
  // Appends `token` at the next position and returns the logits (V) for the token after it.
  // When the context is full, the cache is rebuilt from the most recent context/2 tokens.
  const float* Feed(int32_t token);
  int position() const { return pos_; }

  // Feeds `prompt` (non-empty) and samples up to max_new_tokens, stopping after `stop_token`
  // (>= 0) or end-of-text. Returns the new tokens only.
  std::vector<int32_t> Generate(const std::vector<int32_t>& prompt, int max_new_tokens,
                                const SamplingConfig& sampling, Rng& rng,
                                int32_t stop_token = -1);

 private:
  const float* Step(int32_t token, int pos);

  const Gpt& model_;
  int pos_ = 0;
  std::vector<int32_t> history_;  // tokens in the cache, for rebuilding it
  std::vector<float> k_cache_, v_cache_;  // (L, context, C)
  std::vector<float> x_, ln_, qkv_, atty_, fch_, scores_, logits_;
};

}  // namespace tandem

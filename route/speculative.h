// Speculative decoding (Leviathan, Kalman, Matias 2023; Chen et al. 2023): the device drafts γ
// tokens with its own model, the cloud scores the context and the whole draft in one k-token pass
// (GptWorkspace::Decode) and keeps each drafted token x with probability min(1, p(x)/q(x)); at
// the first rejection the next token is drawn from norm(max(0, p − q)), and after a full
// acceptance one more token comes from p. Every token emitted is then distributed exactly as
// the cloud's own sampling distribution p (route/sampling.h: temperature, top-k, top-p), and at
// temperature 0 the output is the cloud's greedy text.
//
// The cloud sits behind Verifier, so the same device loop runs against a model in this process
// (LocalVerifier) or, later, the coordinator's inference service over the transport.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "models/gpt_weights.h"
#include "models/gpt_workspace.h"
#include "route/sampling.h"

namespace tandem {

// The cloud's answer to one draft.
struct Verdict {
  int accepted = 0;     // drafted tokens kept, in [0, γ]
  int32_t next = -1;    // the token after them (the residual's draw or, after all γ, p's)
};

// The cloud side of speculative decoding. Implementations own their sampling options and their
// randomness; a verifier is used by one thread at a time.
class Verifier {
 public:
  virtual ~Verifier() = default;
  virtual int vocab() const = 0;
  // The longest sequence the verifier holds: Verify requires |context| + γ <= context_length().
  virtual int context_length() const = 0;
  // `context`: the whole sequence so far (prompt and every token accepted), non-empty; `draft`
  // (γ >= 0 tokens) follows it; `q` (γ,V) holds, row i, the device's distribution that draft[i]
  // was drawn from (q[i][draft[i]] > 0). Errors (InvalidArgument, nothing changes): sizes, tokens
  // outside [0, V), rows that are not distributions, a sequence too long.
  virtual StatusOr<Verdict> Verify(std::span<const int32_t> context,
                                   std::span<const int32_t> draft, std::span<const float> q) = 0;
};

// The rejection rule itself. draft (γ), q (γ,V) and p (γ+1,V): row i of p is the cloud's
// distribution for the token at draft position i, row γ the one after the whole draft. Draws one
// uniform per examined token and one for the next token.
Verdict SpeculativeAccept(std::span<const int32_t> draft, std::span<const float> q,
                          std::span<const float> p, int V, Rng& rng);

// Checks a Verify request's shapes and values against `vocab` and `context_length`.
Status ValidateDraft(std::span<const int32_t> context, std::span<const int32_t> draft,
                     std::span<const float> q, int vocab, int context_length);

// A verifier over a GPT in this process. It keeps the last sequence in its key/value cache and,
// on the next call, re-feeds only what differs from it (a continuing sequence costs its new
// tokens), in one Decode of the new context tokens and the draft together.
class LocalVerifier : public Verifier {
 public:
  // `weights` are shared (kept alive) and must not change while the verifier is in use.
  LocalVerifier(std::shared_ptr<const GptWeights> weights, SamplingOptions sampling,
                uint64_t seed);
  int vocab() const override { return workspace_.config().vocab; }
  int context_length() const override { return workspace_.config().context; }
  StatusOr<Verdict> Verify(std::span<const int32_t> context, std::span<const int32_t> draft,
                           std::span<const float> q) override;
  // New sampling options (valid) and randomness for the calls that follow; the cache is kept.
  // What a service verifying for many devices uses: each request brings its own.
  void Reseed(const SamplingOptions& sampling, uint64_t seed);

 private:
  GptWorkspace workspace_;
  SamplingOptions sampling_;
  Rng rng_;
  std::vector<int32_t> history_;  // the tokens in the cache
  std::vector<float> p_;          // (γ+1,V)
};

struct SpeculativeOptions {
  int gamma = 4;  // tokens drafted per verifier call
  SamplingOptions sampling;  // the device's q; the verifier's p follows the verifier's own
  Status Validate() const;
};

// Counts over every Generate since construction or ResetStats.
struct SpeculativeStats {
  int64_t drafted = 0;         // tokens the device proposed
  int64_t accepted = 0;        // of those, kept by the verifier
  int64_t verifier_calls = 0;
  int64_t generated = 0;       // tokens returned
  // accepted / drafted (NaN before any draft), generated / verifier_calls (NaN before a call).
  double acceptance_rate() const;
  double tokens_per_call() const;
};

// The device side: drafts with its own model in a workspace of its own, asks `verifier` for the
// verdict, rolls its cache back to the accepted prefix.
class SpeculativeDecoder {
 public:
  // `device` weights are shared; `verifier` must outlive the decoder. Both models must share the
  // vocabulary (checked by Generate).
  SpeculativeDecoder(std::shared_ptr<const GptWeights> device, Verifier* verifier,
                     SpeculativeOptions options);

  // Up to max_new_tokens new tokens after `prompt` (non-empty), stopping after end-of-text or
  // `stop_token` (>= 0), or when the sequence fills the verifier's context. The device's draws
  // use `rng`. Errors: invalid options, vocabularies that differ, a prompt that is empty, out of
  // range or longer than the verifier's context, and the verifier's errors.
  StatusOr<std::vector<int32_t>> Generate(std::span<const int32_t> prompt, int max_new_tokens,
                                          Rng& rng, int32_t stop_token = -1);

  const SpeculativeStats& stats() const { return stats_; }
  void ResetStats() { stats_ = {}; }

 private:
  GptWorkspace workspace_;
  Verifier* verifier_;
  SpeculativeOptions options_;
  SpeculativeStats stats_;
  std::vector<float> q_;  // (γ,V)
};

}  // namespace tandem

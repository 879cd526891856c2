// The distribution a sampler draws the next token from, made explicit: temperature, top-k and
// nucleus (top-p, Holtzman et al. 2020) turn a row of logits into probabilities. Speculative
// decoding needs the probabilities themselves, not just a draw: it accepts a drafted token with
// probability min(1, p/q) for exactly these p (cloud) and q (device).
#pragma once

#include <cstdint>
#include <span>

#include "core/rng.h"
#include "core/status.h"

namespace tandem {

struct SamplingOptions {
  float temperature = 1.0f;  // 0 means greedy: all mass on the largest logit
  int top_k = 0;             // keep the k largest logits; 0 means the whole vocabulary
  float top_p = 1.0f;        // then the smallest set of most likely tokens with mass >= top_p
  // Errors: temperature < 0 or not finite, top_k < 0, top_p outside (0, 1].
  Status Validate() const;
};

// probs (V) = the distribution of the next token for `logits` (V) under `options`, which must be
// valid. Order of operations: top-k on the logits, softmax at the temperature, then top-p on the
// result, renormalised. Ties at a cut keep the lower token id (also greedy's choice, as
// std::max_element). The kept tokens' probabilities are > 0 and sum to 1 (in double).
void SamplingProbs(const float* logits, int V, const SamplingOptions& options, float* probs);

// A draw from probs (V), which must sum to about 1: the smallest i with u <= probs[0] + ... +
// probs[i] for u uniform in [0, sum), never a token of probability 0.
int32_t SampleFromProbs(std::span<const float> probs, Rng& rng);

}  // namespace tandem

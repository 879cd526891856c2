// Confidence-weighted ensembles of clients' predictions that secure aggregation can sum
// (<section>.ensemble = "confidence" in distill-up and fedmkt).
//
// Each client weighs itself, per position, by its own confidence there: w = its max-probability
// at T = 1 (the probability it gives its own top guess). Why max-probability rather than
// 1 − normalised entropy: it lies in [1/V, 1], so in the clear Σw > 0 always (a client that knows
// nothing still counts a little, as in the plain mean), it is what the coordinator's
// confidence threshold reads off the ensemble too (distill/kd_terms.h KdConfidence), and it is
// cheap. It is read at T = 1 — the model's own calibration — not at the distillation
// temperature, which flattens every client towards the same weight.
//
// A client uploads, for N positions, the flat vector
//     [ w_i · p_i  (N,V) | w_i  (N) ],     p_i = softmax(z_i / T),
// a sum of which is all the coordinator needs: the ensemble is
//     p̄_i = Σ_k w_ki·p_ki / max(Σ_k w_ki, floor).
// The member count divides both sums alike, so the mean the privacy pipeline delivers gives the
// same ratio. In the clear a row of w·p sums to w, so the w block repeats it; under DP noise the
// w block is one noisy number against V in the row sum (V times less noise), and the floor keeps
// a noisy Σw near or below zero from dividing by it (the row is then renormalised anyway by
// EnsembleTeacherLogits, so the floor only stops a sign flip).
#pragma once

#include <cstddef>
#include <span>

#include "core/status.h"

namespace tandem {

// Floor under the (mean) weight sum of a position: below it the weights are noise.
constexpr double kConfidenceWeightFloor = 1e-6;

// Values a client uploads for N positions of V tokens: N·V + N.
constexpr size_t ConfidenceContributionLength(size_t N, size_t V) { return N * V + N; }

// out (N·V + N) as above from logits (N,V). Requires T > 0.
void ConfidenceContribution(float* out, const float* logits, int N, int V, float temperature);

// probs (N,V) = the ensemble Σ w·p / max(Σ w, kConfidenceWeightFloor) from the (mean or sum of)
// contributions `sum` (N·V + N). Under DP noise rows need not lie on the simplex:
// EnsembleTeacherLogits (kMeanProbabilities) floors and renormalises them.
void ConfidenceEnsemble(float* probs, const float* sum, int N, int V);

// Checks one client's upload: the length, every w in [0, 1], every w·p entry in [0, w] and each
// row summing to its w within 1e-3. InvalidArgument naming the row; the values are not echoed.
Status CheckConfidenceContribution(std::span<const float> values, int N, int V);

}  // namespace tandem

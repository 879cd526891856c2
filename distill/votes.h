// Differentially private vote uploads for the ensemble (<section>.ensemble = "votes" in
// distill-up and fedmkt): PATE's noisy vote histogram (Papernot et al. 2018, "Scalable Private
// Learning with PATE", GNMax) with the clients as the teachers.
//
// Each client uploads, per position, a vote instead of probabilities: 1 on its top-1 token, or
// with top_k = k, 1/k on each of its k most probable tokens (ties broken towards the lower token).
// The privacy pipeline sums the votes into a histogram (N,V) — securely, if configured — and adds
// Gaussian noise to it; the coordinator distils on the noisy histogram, each position's counts
// clamped at 0 and normalised (the softened distribution: EnsembleTeacherLogits floors and
// renormalises), not on its argmax, so a position where clients split keeps both answers.
//
// Sensitivity, per client over a whole round (user-level DP across all positions of the round,
// which is what one Gaussian mechanism per round in the accountant means): one position's vote
// has L2 norm 1 (top-1) or 1/√k (top-k); a round's N positions have L2 norm √N resp. √(N/k)
// (VoteSensitivity). The pipeline clips every upload to its clip norm C like any other, adds
// N(0, σ²C²) to the sum, and the accountant charges one sampled Gaussian mechanism of noise
// multiplier σ per round. So:
//  - C ≥ VoteSensitivity: no vote is clipped, and each histogram entry carries noise of standard
//    deviation σ·C ≥ σ·√(N/k) — against at most K votes (K clients) per entry;
//  - C < VoteSensitivity: every vote vector is scaled by C/√(N/k) and the noise is σ·C, the same
//    signal-to-noise ratio. The clip norm cannot buy accuracy here: only fewer positions per round
//    (windows × context), more clients per round, or a larger ε can.
// Per-position ("item-level") accounting as in PATE proper would charge √N less, but it protects
// one prediction, not one client's data; tandem accounts per client.
#pragma once

#include <cstddef>
#include <span>

#include "core/status.h"

namespace tandem {

// out (N,V) = one vote per row of logits (N,V): 1/k on the row's k largest logits, 0 elsewhere.
// Requires 1 <= top_k <= V.
void VoteContribution(float* out, const float* logits, int N, int V, int top_k);

// The L2 norm of one client's votes on N positions: √(N / top_k). Adding or removing one client
// moves the (unclipped) histogram by exactly this much in L2.
double VoteSensitivity(int N, int top_k);

// Checks one client's upload: N·V values, each row exactly top_k entries of 1/top_k and the rest 0.
// InvalidArgument naming the row; the values are not echoed.
Status CheckVoteContribution(std::span<const float> values, int N, int V, int top_k);

}  // namespace tandem

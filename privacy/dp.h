// The differential-privacy mechanisms applied to a contribution (DESIGN.md "Privacy"): L2 clipping,
// adaptive clipping after Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning
// with Adaptive Clipping" (NeurIPS 2021, arXiv 1905.03871), and Gaussian noise, central or split
// across clients. Pure functions on float spans; the caller owns every buffer.
#pragma once

#include <cstdint>
#include <span>

#include "core/status.h"
#include "privacy/secure_rng.h"

namespace tandem::privacy {

struct ClipResult {
  double norm = 0.0;     // L2 norm before clipping (computed in double)
  bool clipped = false;  // norm > clip_norm: the adaptive-clipping bit is !clipped
  double scale = 1.0;    // the factor every value was multiplied by (1 when not clipped)
};

// Scales `values` in place so that their L2 norm is at most clip_norm. After clipping the float
// vector's norm is <= clip_norm exactly (the scale is shrunk by 2^-22 to absorb float rounding),
// so the sensitivity bound holds. A zero vector is left alone (no division).
// InvalidArgument, values untouched: a NaN or infinite value (named by index), or clip_norm not
// finite and > 0.
StatusOr<ClipResult> ClipL2(std::span<float> values, double clip_norm);

// Andrew et al. 2021, Section 2 (the geometric update): the clip norm after a round whose noisy
// fraction of unclipped contributions was `noisy_bit_fraction` (b̄; the noise may push it outside
// [0, 1]): C·exp(−η(b̄ − γ)). C shrinks when more than the target quantile γ went unclipped.
// Requires C > 0, γ in [0, 1], η >= 0, all finite, and a finite b̄ (checked, aborts).
double NextClipNorm(double clip_norm, double noisy_bit_fraction, double target_quantile,
                    double learning_rate);

// Andrew et al. 2021, Theorem 1: releasing the bit count with noise stddev σ_b (on bits shifted to
// ±1/2, sensitivity 1/2) alongside the update sum with noise multiplier z_Δ costs as much privacy
// as one Gaussian mechanism with multiplier z = (z_Δ^-2 + (2σ_b)^-2)^(-1/2). Given the z the
// accountant is told about, returns the z_Δ the update must use: (z^-2 − (2σ_b)^-2)^(-1/2).
// InvalidArgument unless z > 0 and σ_b > z/2 (a smaller σ_b would by itself spend more than z).
StatusOr<double> UpdateNoiseMultiplier(double noise_multiplier, double bit_sigma);

// Distributed noise: the stddev each of K contributors adds so that the sum of any K of them
// carries noise stddev σ·C: σ·C/√K. With dropouts the sum has fewer than K shares, so K must be
// the guaranteed minimum number of contributors (e.g. the secure-aggregation threshold).
// Requires sigma >= 0, clip > 0, K >= 1 (checked, aborts).
double DistributedNoiseStddev(double noise_multiplier, double clip_norm, int64_t min_contributors);

// values[i] += stddev · N(0, 1), the normals drawn from `rng`. stddev = 0 draws nothing.
// Requires stddev finite and >= 0 (checked, aborts).
void AddGaussianNoise(std::span<float> values, double stddev, SecureRng& rng);

}  // namespace tandem::privacy

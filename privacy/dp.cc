// Clipping, adaptive clipping and Gaussian noise for contributions (see dp.h for the paper).
#include "privacy/dp.h"

#include <cmath>
#include <cstdio>
#include <string>

namespace tandem::privacy {

StatusOr<ClipResult> ClipL2(std::span<float> values, double clip_norm) {
  if (!std::isfinite(clip_norm) || clip_norm <= 0.0) {
    return Status::InvalidArgument("clip norm must be finite and > 0, got " +
                                   std::to_string(clip_norm));
  }
  double sum_sq = 0.0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    if (!std::isfinite(v)) {
      return Status::InvalidArgument("contribution value " + std::to_string(i) + " of " +
                                     std::to_string(values.size()) + " is not finite");
    }
    sum_sq += v * v;  // a float squared cannot overflow a double
  }
  ClipResult r;
  r.norm = std::sqrt(sum_sq);
  if (r.norm <= clip_norm) return r;  // includes the zero vector: never divides
  // Each float product rounds by at most 2^-24 relative and the float scale by another 2^-24, so
  // shrinking by 2^-22 keeps the clipped norm <= clip_norm (the double norm's own rounding,
  // ~n·2^-53 relative at worst, stays far below that for any contribution under 2^25 values).
  const float scale = static_cast<float>(clip_norm / r.norm * (1.0 - 0x1.0p-22));
  for (float& v : values) v *= scale;
  r.clipped = true;
  r.scale = scale;
  return r;
}

double NextClipNorm(double clip_norm, double noisy_bit_fraction, double target_quantile,
                    double learning_rate) {
  TANDEM_CHECK(std::isfinite(clip_norm) && clip_norm > 0.0);
  TANDEM_CHECK(std::isfinite(noisy_bit_fraction));
  TANDEM_CHECK(target_quantile >= 0.0 && target_quantile <= 1.0);
  TANDEM_CHECK(std::isfinite(learning_rate) && learning_rate >= 0.0);
  return clip_norm * std::exp(-learning_rate * (noisy_bit_fraction - target_quantile));
}

StatusOr<double> UpdateNoiseMultiplier(double noise_multiplier, double bit_sigma) {
  if (!std::isfinite(noise_multiplier) || noise_multiplier <= 0.0) {
    return Status::InvalidArgument("noise multiplier must be finite and > 0 with adaptive "
                                   "clipping, got " + std::to_string(noise_multiplier));
  }
  if (!(bit_sigma > noise_multiplier / 2.0)) {
    return Status::InvalidArgument(
        "adaptive clipping: the noise on the clipped-bit count (" + std::to_string(bit_sigma) +
        ") must exceed half the noise multiplier (" + std::to_string(noise_multiplier / 2.0) +
        "), or the bits alone would spend the whole privacy budget (Andrew et al. 2021, "
        "Theorem 1)");
  }
  if (std::isinf(bit_sigma)) return noise_multiplier;
  const double inv = 1.0 / (noise_multiplier * noise_multiplier) -
                     1.0 / (4.0 * bit_sigma * bit_sigma);
  return 1.0 / std::sqrt(inv);
}

double DistributedNoiseStddev(double noise_multiplier, double clip_norm, int64_t min_contributors) {
  TANDEM_CHECK(std::isfinite(noise_multiplier) && noise_multiplier >= 0.0);
  TANDEM_CHECK(std::isfinite(clip_norm) && clip_norm > 0.0);
  TANDEM_CHECK(min_contributors >= 1);
  // Independent Gaussians add variances: K · (σC/√K)² = (σC)².
  return noise_multiplier * clip_norm / std::sqrt(static_cast<double>(min_contributors));
}

void AddGaussianNoise(std::span<float> values, double stddev, SecureRng& rng) {
  TANDEM_CHECK(std::isfinite(stddev) && stddev >= 0.0);
  if (stddev == 0.0) return;
  for (float& v : values) v = static_cast<float>(v + stddev * rng.Normal());
}

}  // namespace tandem::privacy

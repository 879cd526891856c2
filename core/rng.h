// Deterministic random numbers: xoshiro256** (Blackman & Vigna) seeded through splitmix64, with a
// state that can be saved in a checkpoint and restored bit-for-bit. Not cryptographic: privacy
// noise uses a cryptographically seeded generator in privacy/.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "core/status.h"

namespace tandem {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0);

  uint64_t NextU64();
  // Uniform in [0, 1).
  double Uniform();
  float UniformF() { return static_cast<float>(Uniform()); }
  // Uniform integer in [0, n), without modulo bias. Requires n > 0.
  uint64_t Below(uint64_t n);
  // Standard normal (Box-Muller, one value per call, the second cached).
  double Normal();
  // Gamma(shape, 1) by Marsaglia-Tsang; used for Dirichlet draws.
  double Gamma(double shape);

  // A new generator whose stream is independent of this one (derived from `stream`).
  Rng Fork(uint64_t stream) const;

  // "s0 s1 s2 s3" in hex, and back.
  std::string SaveState() const;
  Status LoadState(const std::string& state);

 private:
  std::array<uint64_t, 4> s_;
  bool has_cached_normal_ = false;
  double cached_normal_ = 0.0;
};

}  // namespace tandem

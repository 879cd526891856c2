#include "core/rng.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace tandem {
namespace {

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = SplitMix64(x);
}

uint64_t Rng::NextU64() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

double Rng::Uniform() { return (NextU64() >> 11) * 0x1.0p-53; }

uint64_t Rng::Below(uint64_t n) {
  TANDEM_CHECK(n > 0);
  // Lemire's rejection method on the top bits.
  const uint64_t threshold = (0 - n) % n;
  while (true) {
    uint64_t r = NextU64();
    __uint128_t m = static_cast<__uint128_t>(r) * n;
    if (static_cast<uint64_t>(m) >= threshold) return static_cast<uint64_t>(m >> 64);
  }
}

double Rng::Normal() {
  if (has_cached_normal_) {
    has_cached_normal_ = false;
    return cached_normal_;
  }
  double u1 = Uniform();
  while (u1 <= 0.0) u1 = Uniform();
  const double u2 = Uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  cached_normal_ = r * std::sin(2.0 * M_PI * u2);
  has_cached_normal_ = true;
  return r * std::cos(2.0 * M_PI * u2);
}

double Rng::Gamma(double shape) {
  TANDEM_CHECK(shape > 0);
  if (shape < 1.0) {
    // Boost: Gamma(a) = Gamma(a + 1) * U^(1/a).
    double u = Uniform();
    while (u <= 0.0) u = Uniform();
    return Gamma(shape + 1.0) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x, v;
    do {
      x = Normal();
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = Uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

Rng Rng::Fork(uint64_t stream) const {
  uint64_t x = s_[0] ^ Rotl(s_[1], 13) ^ Rotl(s_[2], 29) ^ Rotl(s_[3], 47) ^
               (stream * 0xd1342543de82ef95ULL + 1);
  Rng child(SplitMix64(x));
  return child;
}

std::string Rng::SaveState() const {
  char buf[4 * 17 + 32];
  std::snprintf(buf, sizeof(buf), "%016llx %016llx %016llx %016llx %d %a",
                static_cast<unsigned long long>(s_[0]), static_cast<unsigned long long>(s_[1]),
                static_cast<unsigned long long>(s_[2]), static_cast<unsigned long long>(s_[3]),
                has_cached_normal_ ? 1 : 0, cached_normal_);
  return buf;
}

Status Rng::LoadState(const std::string& state) {
  unsigned long long a, b, c, d;
  int cached;
  double normal;
  if (std::sscanf(state.c_str(), "%llx %llx %llx %llx %d %la", &a, &b, &c, &d, &cached,
                  &normal) != 6) {
    return Status::Corruption("malformed RNG state '" + state + "'");
  }
  s_ = {a, b, c, d};
  has_cached_normal_ = cached != 0;
  cached_normal_ = normal;
  return Status::Ok();
}

}  // namespace tandem

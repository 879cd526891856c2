// Fixed-point encoding in Z / 2^k for secure aggregation; the arithmetic mirrors
// coordinator/aggregator.cc's RunningSum (nearbyint on a double, two's-complement read-back).
#include "privacy/fixed_point.h"

#include <cmath>
#include <cstdio>
#include <string>

namespace tandem::privacy {
namespace {

std::string FormatDouble(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

uint64_t ModMask(int modulus_bits) {
  return modulus_bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << modulus_bits) - 1;
}

// The programming-error checks Encode relies on so that the int64 conversion is defined; a
// format from a config has been through ValidateFixedPoint, which is stricter.
void CheckFormat(const FixedPointFormat& f) {
  TANDEM_CHECK(f.modulus_bits >= 8 && f.modulus_bits <= 64);
  TANDEM_CHECK(f.fraction_bits >= 0 && f.fraction_bits < f.modulus_bits);
  TANDEM_CHECK(f.clip > 0 && std::ldexp(f.clip, f.fraction_bits) < 9223372036854775808.0);
}

// One coordinate; `clamped` counts values moved to ±clip (and NaNs, which become 0).
inline uint64_t EncodeOne(double v, double clip, double scale, uint64_t mask, size_t& clamped) {
  if (!(v <= clip)) {  // also catches NaN
    if (std::isnan(v)) {
      ++clamped;
      return 0;
    }
    v = clip;
    ++clamped;
  } else if (v < -clip) {
    v = -clip;
    ++clamped;
  }
  return static_cast<uint64_t>(static_cast<int64_t>(std::nearbyint(v * scale))) & mask;
}

}  // namespace

Status ValidateFixedPoint(const FixedPointFormat& format, int64_t max_summands) {
  const int k = format.modulus_bits;
  const int f = format.fraction_bits;
  if (k < 8 || k > 64) {
    return Status::InvalidArgument("secure aggregation fixed point: modulus_bits " +
                                   std::to_string(k) + " outside 8..64");
  }
  if (f < 0 || f >= k) {
    return Status::InvalidArgument("secure aggregation fixed point: fraction_bits " +
                                   std::to_string(f) + " outside 0.." + std::to_string(k - 1) +
                                   " (below modulus_bits)");
  }
  if (!(format.clip > 0) || !std::isfinite(format.clip)) {
    return Status::InvalidArgument("secure aggregation fixed point: clip " +
                                   FormatDouble(format.clip) + " must be positive and finite");
  }
  if (max_summands < 1) {
    return Status::InvalidArgument("secure aggregation fixed point: max_summands " +
                                   std::to_string(max_summands) + " below 1");
  }
  // The largest magnitude one encoding can take: clip * 2^f rounded to an integer, at most its
  // ceiling (equal to clip * 2^f itself whenever that is an integer, the usual case).
  const double bound = std::ceil(std::ldexp(format.clip, f));
  const double half = std::ldexp(1.0, k - 1);
  // Largest n with n * bound < 2^(k-1), exactly, in integers (bound < 2^63 once it is below
  // half, so it converts exactly).
  int64_t largest = 0;
  if (bound < half) {
    const uint64_t b = static_cast<uint64_t>(bound);
    const uint64_t half_minus_one = (uint64_t{1} << (k - 1)) - 1;
    const uint64_t n = half_minus_one / b;
    largest = n > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(n);
  }
  if (max_summands > largest) {
    std::string fix = largest == 0
                          ? "not even one value fits"
                          : "the largest max_summands that fits is " + std::to_string(largest);
    return Status::InvalidArgument(
        "secure aggregation fixed point: max_summands (" + std::to_string(max_summands) +
        ") * clip (" + FormatDouble(format.clip) + ") * 2^fraction_bits (2^" + std::to_string(f) +
        ") is not below 2^(modulus_bits - 1) = 2^" + std::to_string(k - 1) +
        ", so the sum could wrap; " + fix +
        " (raise modulus_bits, or lower fraction_bits, clip or the cohort size)");
  }
  return Status::Ok();
}

size_t EncodeFixedPoint(std::span<const float> values, double weight, const FixedPointFormat& f,
                        std::span<uint64_t> out) {
  TANDEM_CHECK(out.size() == values.size());
  CheckFormat(f);
  const double scale = std::ldexp(1.0, f.fraction_bits);
  const uint64_t mask = ModMask(f.modulus_bits);
  size_t clamped = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    out[i] = EncodeOne(weight * static_cast<double>(values[i]), f.clip, scale, mask, clamped);
  }
  return clamped;
}

uint64_t EncodeFixedPointScalar(double x, const FixedPointFormat& f) {
  CheckFormat(f);
  size_t clamped = 0;
  return EncodeOne(x, f.clip, std::ldexp(1.0, f.fraction_bits), ModMask(f.modulus_bits), clamped);
}

double DecodeFixedPoint(uint64_t v, const FixedPointFormat& f) {
  const int k = f.modulus_bits;
  TANDEM_CHECK(k >= 1 && k <= 64);
  v &= ModMask(k);
  int64_t s;
  if (k == 64) {
    s = static_cast<int64_t>(v);
  } else if ((v >> (k - 1)) & 1) {
    s = static_cast<int64_t>(v) - (int64_t{1} << k);
  } else {
    s = static_cast<int64_t>(v);
  }
  return std::ldexp(static_cast<double>(s), -f.fraction_bits);
}

void DecodeFixedPoint(std::span<const uint64_t> in, const FixedPointFormat& f,
                      std::span<float> out) {
  TANDEM_CHECK(out.size() == in.size());
  for (size_t i = 0; i < in.size(); ++i) out[i] = static_cast<float>(DecodeFixedPoint(in[i], f));
}

void AddMod(std::span<const uint64_t> in, int modulus_bits, std::span<uint64_t> acc) {
  TANDEM_CHECK(in.size() == acc.size());
  TANDEM_CHECK(modulus_bits >= 1 && modulus_bits <= 64);
  const uint64_t mask = ModMask(modulus_bits);
  for (size_t i = 0; i < in.size(); ++i) acc[i] = (acc[i] + in[i]) & mask;
}

}  // namespace tandem::privacy

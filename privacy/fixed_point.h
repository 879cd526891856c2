// The fixed-point ring encoding of contributions for secure aggregation: a real x becomes
// round-half-even(clamp(x, ±clip) * 2^f) mod 2^k, so that integer sums in Z / 2^k (which masks
// cancel in) decode to the real sum as long as the sum cannot wrap (ValidateFixedPoint).
//
// Thread-safety: all functions are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/status.h"

namespace tandem::privacy {

struct FixedPointFormat {
  int modulus_bits = 64;   // the ring is Z / 2^modulus_bits, 8..64
  int fraction_bits = 32;  // resolution 2^-fraction_bits
  double clip = 65536.0;   // every encoded value is first clamped to [-clip, clip]
};

// InvalidArgument unless 8 <= modulus_bits <= 64, 0 <= fraction_bits < modulus_bits, clip > 0
// finite, max_summands >= 1, and max_summands * clip * 2^fraction_bits < 2^(modulus_bits - 1)
// (a sum of that many encodings cannot wrap), saying which limit failed and the largest
// max_summands that would fit.
Status ValidateFixedPoint(const FixedPointFormat& format, int64_t max_summands);

// Encodes weight * values[i] into out[i]: round-half-even(clamp(w * x, ±clip) * 2^f) mod 2^k,
// computed as std::nearbyint on a double (the same arithmetic as coordinator/aggregator.cc's
// RunningSum, so with k=64, f=32 an encoded sum equals RunningSum's bit for bit). NaN encodes
// as 0 and counts as clamped. Returns the number of clamped coordinates.
// Requires out.size() == values.size() and a format that passes ValidateFixedPoint.
size_t EncodeFixedPoint(std::span<const float> values, double weight, const FixedPointFormat& f,
                        std::span<uint64_t> out);
uint64_t EncodeFixedPointScalar(double x, const FixedPointFormat& f);

// Reads v (mod 2^k) as a two's-complement k-bit integer, times 2^-f.
double DecodeFixedPoint(uint64_t v, const FixedPointFormat& f);
// Requires out.size() == in.size().
void DecodeFixedPoint(std::span<const uint64_t> in, const FixedPointFormat& f,
                      std::span<float> out);

// acc[i] = (acc[i] + in[i]) mod 2^modulus_bits. Requires in.size() == acc.size() and
// 1 <= modulus_bits <= 64.
void AddMod(std::span<const uint64_t> in, int modulus_bits, std::span<uint64_t> acc);

}  // namespace tandem::privacy

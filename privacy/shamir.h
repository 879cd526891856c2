// Shamir secret sharing (Shamir 1979, "How to share a secret") over GF(p), p = 2^61 - 1 (a
// Mersenne prime, so reduction is a shift and an add). A secret of any byte length is split into
// 7-byte chunks, one field element each (so every chunk is < 2^56 < p), shared with one random
// polynomial per chunk. Coefficients are drawn without bias (rejection sampling on RandomBytes).
//
// Thread-safety: all functions are stateless. Shares are secrets: never log them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/status.h"
#include "privacy/crypto.h"

namespace tandem::privacy {

inline constexpr uint64_t kShamirPrime = (uint64_t{1} << 61) - 1;
// Bytes of secret per field element.
inline constexpr size_t kShamirChunkBytes = 7;

struct ShamirShare {
  uint32_t x = 0;           // evaluation point, 1..2^32-1, distinct per holder
  std::vector<uint64_t> y;  // one field element per 7-byte chunk, each < p
};

// One share per x in `xs` (distinct, non-zero), in the order of `xs`. 1 <= threshold <= xs.size().
// Any `threshold` shares reconstruct the secret; fewer reveal nothing about it. An empty secret
// gives shares with empty y. InvalidArgument for a bad threshold or bad xs.
StatusOr<std::vector<ShamirShare>> ShamirSplit(std::span<const uint8_t> secret, int threshold,
                                               std::span<const uint32_t> xs);

// Lagrange interpolation at 0 from exactly the first `threshold` of `shares` (more are ignored).
// InvalidArgument: fewer than threshold shares, duplicate x, x = 0, y not < p, inconsistent y
// lengths, or secret_bytes that does not match the chunk count. A chunk that interpolates to a
// value >= 2^56 (shares from different secrets, or corrupted ones) is kCorruption. Shares that
// are valid field elements but wrong give a wrong secret, not an error: Shamir has no integrity.
StatusOr<Bytes> ShamirCombine(std::span<const ShamirShare> shares, int threshold,
                              size_t secret_bytes);

// Wire form: x (u32 LE) || count (u32 LE) || count * y (u64 LE).
Bytes SerializeShare(const ShamirShare& share);
// Strict inverse of SerializeShare: InvalidArgument for a wrong length, x = 0, or any y >= p.
StatusOr<ShamirShare> ParseShare(std::span<const uint8_t> bytes);

// Number of field elements a secret of `secret_bytes` bytes takes.
inline size_t ShamirChunkCount(size_t secret_bytes) {
  return (secret_bytes + kShamirChunkBytes - 1) / kShamirChunkBytes;
}

namespace detail {
// The rejection sampler: the low 61 bits of a uniform 64-bit draw, or nullopt when they equal p
// (the only value of [0, 2^61) outside the field; probability 2^-61). Exposed for tests.
std::optional<uint64_t> ReduceDrawToField(uint64_t raw);
// Uniform elements of [0, p) from RandomBytes through ReduceDrawToField, redrawing rejects.
Status FillRandomField(std::span<uint64_t> out);
StatusOr<uint64_t> RandomFieldElement();
// Field arithmetic mod kShamirPrime; inputs must be < p.
uint64_t FieldAdd(uint64_t a, uint64_t b);
uint64_t FieldSub(uint64_t a, uint64_t b);
uint64_t FieldMul(uint64_t a, uint64_t b);
// a^-1 mod p; requires a != 0.
uint64_t FieldInverse(uint64_t a);
}  // namespace detail

}  // namespace tandem::privacy

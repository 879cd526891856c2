// Shamir secret sharing over GF(2^61 - 1): field arithmetic, splitting (one random polynomial per
// 7-byte chunk), Lagrange interpolation at zero, and the share wire form.
#include "privacy/shamir.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

namespace tandem::privacy {
namespace detail {

uint64_t FieldAdd(uint64_t a, uint64_t b) {
  uint64_t s = a + b;  // < 2^62, no overflow
  return s >= kShamirPrime ? s - kShamirPrime : s;
}

uint64_t FieldSub(uint64_t a, uint64_t b) { return a >= b ? a - b : a + kShamirPrime - b; }

uint64_t FieldMul(uint64_t a, uint64_t b) {
  // 2^61 ≡ 1 (mod p): fold the high bits of the 122-bit product onto the low 61.
  const unsigned __int128 r = static_cast<unsigned __int128>(a) * b;
  uint64_t s = (static_cast<uint64_t>(r) & kShamirPrime) + static_cast<uint64_t>(r >> 61);
  s = (s & kShamirPrime) + (s >> 61);
  return s >= kShamirPrime ? s - kShamirPrime : s;
}

uint64_t FieldInverse(uint64_t a) {
  TANDEM_CHECK(a != 0 && a < kShamirPrime);
  // Fermat: a^(p-2).
  uint64_t result = 1;
  uint64_t base = a;
  for (uint64_t e = kShamirPrime - 2; e != 0; e >>= 1) {
    if (e & 1) result = FieldMul(result, base);
    base = FieldMul(base, base);
  }
  return result;
}

std::optional<uint64_t> ReduceDrawToField(uint64_t raw) {
  // Keep 61 uniform bits; they are uniform on [0, 2^61) = [0, p], so rejecting p alone leaves
  // a uniform element of [0, p).
  const uint64_t v = raw & kShamirPrime;
  if (v == kShamirPrime) return std::nullopt;
  return v;
}

Status FillRandomField(std::span<uint64_t> out) {
  if (out.empty()) return Status::Ok();
  TANDEM_RETURN_IF_ERROR(
      RandomBytes(std::span(reinterpret_cast<uint8_t*>(out.data()), out.size_bytes())));
  for (uint64_t& v : out) {
    std::optional<uint64_t> e = ReduceDrawToField(v);
    while (!e) {
      uint64_t raw = 0;
      TANDEM_RETURN_IF_ERROR(RandomBytes(std::span(reinterpret_cast<uint8_t*>(&raw), 8)));
      e = ReduceDrawToField(raw);
    }
    v = *e;
  }
  return Status::Ok();
}

StatusOr<uint64_t> RandomFieldElement() {
  uint64_t v = 0;
  TANDEM_RETURN_IF_ERROR(FillRandomField(std::span(&v, 1)));
  return v;
}

}  // namespace detail

namespace {

using detail::FieldAdd;
using detail::FieldMul;
using detail::FieldSub;

// Chunk c of the secret, little-endian, the last one zero-padded.
uint64_t LoadChunk(std::span<const uint8_t> secret, size_t c) {
  uint64_t v = 0;
  const size_t begin = c * kShamirChunkBytes;
  const size_t end = std::min(secret.size(), begin + kShamirChunkBytes);
  for (size_t i = end; i > begin; --i) v = (v << 8) | secret[i - 1];
  return v;
}

void PutLe32(uint32_t v, uint8_t* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutLe64(uint64_t v, uint8_t* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t GetLe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t GetLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// InvalidArgument unless xs are non-zero and distinct.
Status CheckPoints(std::span<const uint32_t> xs, const char* who) {
  std::vector<uint32_t> sorted(xs.begin(), xs.end());
  std::sort(sorted.begin(), sorted.end());
  if (!sorted.empty() && sorted.front() == 0) {
    return Status::InvalidArgument(std::string(who) +
                                   ": evaluation point x = 0 (it is the secret)");
  }
  auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end()) {
    return Status::InvalidArgument(std::string(who) +
                                   ": duplicate evaluation point x = " + std::to_string(*dup));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::vector<ShamirShare>> ShamirSplit(std::span<const uint8_t> secret, int threshold,
                                               std::span<const uint32_t> xs) {
  if (threshold < 1 || static_cast<size_t>(threshold) > xs.size()) {
    return Status::InvalidArgument("ShamirSplit: threshold " + std::to_string(threshold) +
                                   " outside 1.." + std::to_string(xs.size()) + " (the shares)");
  }
  TANDEM_RETURN_IF_ERROR(CheckPoints(xs, "ShamirSplit"));
  const size_t chunks = ShamirChunkCount(secret.size());
  const size_t degree = static_cast<size_t>(threshold) - 1;
  // coeffs[c * (degree + 1) + j] is the coefficient of x^j for chunk c; j = 0 is the secret.
  std::vector<uint64_t> coeffs(chunks * (degree + 1));
  std::vector<uint64_t> random(chunks * degree);
  TANDEM_RETURN_IF_ERROR(detail::FillRandomField(random));
  for (size_t c = 0; c < chunks; ++c) {
    coeffs[c * (degree + 1)] = LoadChunk(secret, c);
    std::copy_n(random.begin() + c * degree, degree, coeffs.begin() + c * (degree + 1) + 1);
  }
  OPENSSL_cleanse(random.data(), random.size() * sizeof(uint64_t));

  std::vector<ShamirShare> shares(xs.size());
  for (size_t h = 0; h < xs.size(); ++h) {
    shares[h].x = xs[h];
    shares[h].y.resize(chunks);
    const uint64_t x = xs[h];  // < 2^32 < p
    for (size_t c = 0; c < chunks; ++c) {
      const uint64_t* a = &coeffs[c * (degree + 1)];
      uint64_t y = a[degree];  // Horner
      for (size_t j = degree; j > 0; --j) y = FieldAdd(FieldMul(y, x), a[j - 1]);
      shares[h].y[c] = y;
    }
  }
  OPENSSL_cleanse(coeffs.data(), coeffs.size() * sizeof(uint64_t));
  return shares;
}

StatusOr<Bytes> ShamirCombine(std::span<const ShamirShare> shares, int threshold,
                              size_t secret_bytes) {
  if (threshold < 1) {
    return Status::InvalidArgument("ShamirCombine: threshold " + std::to_string(threshold) +
                                   " below 1");
  }
  if (shares.size() < static_cast<size_t>(threshold)) {
    return Status::InvalidArgument("ShamirCombine: " + std::to_string(shares.size()) +
                                   " shares, fewer than the threshold " +
                                   std::to_string(threshold));
  }
  const auto used = shares.first(static_cast<size_t>(threshold));
  const size_t chunks = ShamirChunkCount(secret_bytes);
  std::vector<uint32_t> xs;
  xs.reserve(used.size());
  for (const ShamirShare& s : used) {
    xs.push_back(s.x);
    if (s.y.size() != chunks) {
      return Status::InvalidArgument("ShamirCombine: share x = " + std::to_string(s.x) + " has " +
                                     std::to_string(s.y.size()) + " field elements, a " +
                                     std::to_string(secret_bytes) + "-byte secret needs " +
                                     std::to_string(chunks));
    }
    for (uint64_t y : s.y) {
      if (y >= kShamirPrime) {
        return Status::InvalidArgument("ShamirCombine: share x = " + std::to_string(s.x) +
                                       " holds a value not below the field prime");
      }
    }
  }
  TANDEM_RETURN_IF_ERROR(CheckPoints(xs, "ShamirCombine"));

  // Lagrange basis at 0: l_j = Π_{m≠j} x_m / (x_m - x_j).
  std::vector<uint64_t> lagrange(used.size());
  for (size_t j = 0; j < used.size(); ++j) {
    uint64_t num = 1;
    uint64_t den = 1;
    for (size_t m = 0; m < used.size(); ++m) {
      if (m == j) continue;
      num = FieldMul(num, xs[m]);
      den = FieldMul(den, FieldSub(xs[m], xs[j]));
    }
    lagrange[j] = FieldMul(num, detail::FieldInverse(den));  // den != 0: the xs are distinct
  }

  Bytes secret(secret_bytes);
  for (size_t c = 0; c < chunks; ++c) {
    uint64_t v = 0;
    for (size_t j = 0; j < used.size(); ++j) v = FieldAdd(v, FieldMul(lagrange[j], used[j].y[c]));
    const size_t begin = c * kShamirChunkBytes;
    const size_t len = std::min(kShamirChunkBytes, secret_bytes - begin);
    if (v >> (8 * len) != 0) {
      OPENSSL_cleanse(secret.data(), secret.size());
      return Status::Corruption(
          "ShamirCombine: the shares do not interpolate to a secret of this length (shares of "
          "different secrets, or corrupted)");
    }
    for (size_t i = 0; i < len; ++i) secret[begin + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  return secret;
}

Bytes SerializeShare(const ShamirShare& share) {
  TANDEM_CHECK(share.y.size() <= UINT32_MAX);
  Bytes out(8 + 8 * share.y.size());
  PutLe32(share.x, out.data());
  PutLe32(static_cast<uint32_t>(share.y.size()), out.data() + 4);
  for (size_t i = 0; i < share.y.size(); ++i) PutLe64(share.y[i], out.data() + 8 + 8 * i);
  return out;
}

StatusOr<ShamirShare> ParseShare(std::span<const uint8_t> bytes) {
  if (bytes.size() < 8) {
    return Status::InvalidArgument("Shamir share: " + std::to_string(bytes.size()) +
                                   " bytes, shorter than its 8-byte header");
  }
  ShamirShare share;
  share.x = GetLe32(bytes.data());
  const uint64_t count = GetLe32(bytes.data() + 4);
  if (bytes.size() != 8 + 8 * count) {
    return Status::InvalidArgument("Shamir share: " + std::to_string(bytes.size()) +
                                   " bytes, but its header promises " + std::to_string(count) +
                                   " field elements (" + std::to_string(8 + 8 * count) + " bytes)");
  }
  if (share.x == 0) return Status::InvalidArgument("Shamir share: evaluation point x = 0");
  share.y.resize(count);
  for (size_t i = 0; i < count; ++i) {
    share.y[i] = GetLe64(bytes.data() + 8 + 8 * i);
    if (share.y[i] >= kShamirPrime) {
      return Status::InvalidArgument("Shamir share: field element " + std::to_string(i) +
                                     " is not below the prime 2^61 - 1");
    }
  }
  return share;
}

}  // namespace tandem::privacy

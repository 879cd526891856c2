// SecureRng: the generator behind every DP noise draw. A cryptographically strong stream (the
// AES-256-CTR keystream under a 256-bit key, OpenSSL EVP), keyed from the OS entropy pool through
// OpenSSL's RAND_bytes, or from an explicit key when a test needs the stream to be reproducible.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "core/status.h"

namespace tandem::privacy {

// Owns its OpenSSL cipher context. Not thread-safe (one per thread); not copyable (two copies
// would emit the same stream); movable.
//
// Floating-point caveat: Normal() is Box–Muller on 53-bit uniforms, whose low-order bits are not
// perfectly Gaussian (Mironov 2012 shows how such artefacts can leak through the Laplace
// mechanism). Noise here is added to float32 values, which round far coarser, and the stream
// itself is unpredictable; a discrete Gaussian would be the stricter choice.
class SecureRng {
 public:
  using Key = std::array<uint8_t, 32>;

  // Keyed from RAND_bytes. Aborts with a message if the OS entropy source fails: noise drawn from
  // a predictable stream would silently void the privacy guarantee. Create() reports it instead.
  SecureRng();
  // Deterministic stream under `key` (tests, reproducible experiments). Never use a fixed key for
  // a real run's noise.
  explicit SecureRng(const Key& key);
  // Keyed from RAND_bytes; Internal if OpenSSL cannot provide entropy or the cipher.
  static StatusOr<SecureRng> Create();

  SecureRng(SecureRng&&) noexcept;
  SecureRng& operator=(SecureRng&&) noexcept;
  SecureRng(const SecureRng&) = delete;
  SecureRng& operator=(const SecureRng&) = delete;
  ~SecureRng();

  // Every draw requires a generator that was not moved from (checked, aborts).
  // The next 8 keystream bytes as a little-endian integer.
  uint64_t NextU64();
  // Uniform on (0, 1): (k + 1/2)·2^-53 for a 53-bit k, so never 0 or 1.
  double Uniform();
  // Standard normal (Box–Muller; each pair of uniforms gives two values, the second cached).
  double Normal();
  // Fills `out` with keystream bytes.
  void Fill(std::span<uint8_t> out);

 private:
  struct CipherCtx;  // the EVP_CIPHER_CTX, kept out of this header
  explicit SecureRng(std::unique_ptr<CipherCtx> ctx);
  static StatusOr<std::unique_ptr<CipherCtx>> MakeCipher(const Key& key);
  void Refill();

  static constexpr size_t kBufferWords = 512;  // 4 KiB of keystream per EVP call
  std::unique_ptr<CipherCtx> ctx_;
  std::array<uint64_t, kBufferWords> buffer_{};
  size_t next_ = kBufferWords;  // index of the next unread word; kBufferWords: empty
  bool has_cached_normal_ = false;
  double cached_normal_ = 0.0;
};

}  // namespace tandem::privacy

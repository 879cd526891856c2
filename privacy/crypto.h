// The cryptographic primitives of secure aggregation: X25519 key agreement (RFC 7748), HKDF-SHA256
// (RFC 5869), the AES-256-CTR mask generator, and AES-256-GCM authenticated encryption. Thin,
// checked wrappers over OpenSSL 3's EVP interface: every OpenSSL failure becomes a Status
// (kInternal) naming the operation; nothing throws.
//
// Thread-safety: every function is stateless and may be called from any thread at once.
// Key material held in temporaries inside these functions is wiped (OPENSSL_cleanse); the keys a
// caller holds are the caller's to wipe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tandem::privacy {

using Key32 = std::array<uint8_t, 32>;
using Bytes = std::vector<uint8_t>;

// Sizes of the AES-256-GCM framing SealAesGcm produces.
inline constexpr size_t kGcmNonceBytes = 12;
inline constexpr size_t kGcmTagBytes = 16;

// Cryptographically strong random bytes (RAND_bytes).
Status RandomBytes(std::span<uint8_t> out);
StatusOr<Key32> RandomKey();

struct X25519KeyPair {
  Key32 private_key;
  Key32 public_key;
};
StatusOr<X25519KeyPair> GenerateX25519();
StatusOr<Key32> X25519PublicFromPrivate(const Key32& private_key);
// Raw X25519 shared secret. InvalidArgument if the peer key gives the all-zero secret (a
// low-order point: the "secret" would be known to anyone). Feed the result through HkdfSha256
// before using it as a key.
StatusOr<Key32> X25519Agree(const Key32& private_key, const Key32& peer_public);

// SHA-256 (FIPS 180-4) of `data`: a digest to compare or bind values by, never a key by itself.
StatusOr<Key32> Sha256(std::span<const uint8_t> data);

// HKDF-SHA256 (RFC 5869, extract then expand) with a 32-byte output. An empty salt means the
// RFC's default (HashLen zero bytes).
StatusOr<Key32> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                           std::string_view info);
// The same with any output length, 1 <= out_bytes <= 255 * 32 (the RFC's limit).
StatusOr<Bytes> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                           std::string_view info, size_t out_bytes);

// The mask generator (PRG) of secure aggregation: the AES-256-CTR keystream under `seed` (IV
// zero; so a seed must be used for one stream only), read as consecutive little-endian uint64
// words; word i is reduced mod 2^modulus_bits (1 <= modulus_bits <= 64: keeping the low bits of a
// uniform word is unbiased) and added to (or, with subtract, subtracted from) acc[i] mod
// 2^modulus_bits. The result is always < 2^modulus_bits, whatever acc held before. Streams the
// keystream in fixed-size blocks, never allocating O(acc.size()).
// InvalidArgument for modulus_bits outside [1, 64].
Status AddMask(const Key32& seed, int modulus_bits, bool subtract, std::span<uint64_t> acc);

// AES-256-GCM with a fresh random 96-bit nonce: output = nonce (12) || ciphertext || tag (16).
// `aad` is authenticated, not encrypted, and must be given again to open.
StatusOr<Bytes> SealAesGcm(const Key32& key, std::span<const uint8_t> plaintext,
                           std::span<const uint8_t> aad);
// Inverse of SealAesGcm. InvalidArgument if `sealed` is shorter than nonce + tag; an
// authentication failure (any tampering, a wrong key or a wrong aad) returns kCorruption with
// the message "authentication failed" (core/status.h has no kPermissionDenied; see
// IsAuthenticationFailure).
StatusOr<Bytes> OpenAesGcm(const Key32& key, std::span<const uint8_t> sealed,
                           std::span<const uint8_t> aad);
// True for the Status OpenAesGcm returns when the tag does not verify.
bool IsAuthenticationFailure(const Status& status);

}  // namespace tandem::privacy

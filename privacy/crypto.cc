// OpenSSL 3 (EVP) adapters for X25519, HKDF-SHA256, the AES-256-CTR mask generator and
// AES-256-GCM. Every OpenSSL object is owned by a unique_ptr with its free function; every failure
// becomes a Status naming the operation and OpenSSL's own reason.
#include "privacy/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <memory>
#include <string>

#include "core/sanitizers.h"

namespace tandem::privacy {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;
using KdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, KdfCtxFree>;

// Wipes a local copy of key material when it goes out of scope, whichever return is taken.
class Cleanser {
 public:
  explicit Cleanser(std::span<uint8_t> bytes) : bytes_(bytes) {}
  ~Cleanser() { OPENSSL_cleanse(bytes_.data(), bytes_.size()); }
  Cleanser(const Cleanser&) = delete;
  Cleanser& operator=(const Cleanser&) = delete;

 private:
  std::span<uint8_t> bytes_;
};

// "operation failed: <OpenSSL's first queued reason>", clearing the thread's error queue so a
// stale error is never reported against a later call.
Status OpenSslError(const char* operation) {
  unsigned long code = ERR_get_error();
  std::string reason = "unknown error";
  if (code != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    reason = buf;
  }
  ERR_clear_error();
  return Status::Internal(std::string("OpenSSL ") + operation + " failed: " + reason);
}

// Algorithm implementations fetched once: an implicit fetch (EVP_aes_256_ctr() handed to an
// init call) takes the provider store's lock on every call. Deliberately never freed: the process
// keeps them to exit, and freeing from a static destructor could race OpenSSL's own atexit cleanup.
const EVP_CIPHER* Aes256Ctr() {
  static const EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-CTR", nullptr);
  return cipher;
}
const EVP_CIPHER* Aes256Gcm() {
  static const EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}
EVP_KDF* Hkdf() {
  static EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  return kdf;
}

// OpenSSL's update calls take int lengths; larger inputs go in pieces of this size.
constexpr size_t kMaxUpdateBytes = size_t{1} << 30;

// AddMask's keystream block. Small (L1-resident) so that the add pass reads the keystream from
// L1 and the next block of acc can be prefetched during one block's AES. Measured on a shared
// 2-core AMD EPYC (bench/secagg_crypto_bench.cc, m = 10^6 words): 64 KiB blocks without the
// prefetch took 1.4-1.6x the raw keystream's time, 4 KiB with it 1.1-1.3x (8 and 16 KiB: ~1.45x).
constexpr size_t kMaskBlockBytes = 4 * 1024;
constexpr size_t kMaskBlockWords = kMaskBlockBytes / sizeof(uint64_t);
// CTR keystream = AES(counter) XOR plaintext, so encrypting zeros yields the keystream itself.
alignas(64) const uint8_t kZeros[kMaskBlockBytes] = {};

inline uint64_t LoadLe64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

// acc[i] = (acc[i] ± word i of stream) mod 2^k, mask = 2^k - 1. Cloned for AVX2 where the
// compiler supports it (picked at load time): the pass then runs at memory speed. Not under
// ThreadSanitizer: the ifunc resolver would be instrumented and run before TSan's runtime exists,
// crashing every program that links tandem_privacy while it loads.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(TANDEM_THREAD_SANITIZER)
__attribute__((target_clones("avx2", "default")))
#endif
void AddStreamWords(uint64_t* __restrict acc, const uint8_t* __restrict stream, size_t words,
                    uint64_t mask, bool subtract) {
  if (subtract) {
    for (size_t i = 0; i < words; ++i) acc[i] = (acc[i] - LoadLe64(stream + 8 * i)) & mask;
  } else {
    for (size_t i = 0; i < words; ++i) acc[i] = (acc[i] + LoadLe64(stream + 8 * i)) & mask;
  }
}

}  // namespace

Status RandomBytes(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    size_t n = std::min(out.size() - done, kMaxUpdateBytes);
    if (RAND_bytes(out.data() + done, static_cast<int>(n)) != 1) return OpenSslError("RAND_bytes");
    done += n;
  }
  return Status::Ok();
}

StatusOr<Key32> RandomKey() {
  Key32 key;
  TANDEM_RETURN_IF_ERROR(RandomBytes(key));
  return key;
}

StatusOr<X25519KeyPair> GenerateX25519() {
  X25519KeyPair pair;
  // X25519 clamps the scalar itself (RFC 7748 §5), so any 32 random bytes are a private key.
  TANDEM_RETURN_IF_ERROR(RandomBytes(pair.private_key));
  auto pub = X25519PublicFromPrivate(pair.private_key);
  if (!pub.ok()) {
    OPENSSL_cleanse(pair.private_key.data(), pair.private_key.size());
    return pub.status();
  }
  pair.public_key = *pub;
  return pair;
}

StatusOr<Key32> X25519PublicFromPrivate(const Key32& private_key) {
  PkeyPtr pkey(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(),
                                            private_key.size()));
  if (!pkey) return OpenSslError("EVP_PKEY_new_raw_private_key(X25519)");
  Key32 pub;
  size_t len = pub.size();
  if (EVP_PKEY_get_raw_public_key(pkey.get(), pub.data(), &len) != 1 || len != pub.size()) {
    return OpenSslError("EVP_PKEY_get_raw_public_key(X25519)");
  }
  return pub;
}

StatusOr<Key32> X25519Agree(const Key32& private_key, const Key32& peer_public) {
  PkeyPtr self(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(),
                                            private_key.size()));
  if (!self) return OpenSslError("EVP_PKEY_new_raw_private_key(X25519)");
  PkeyPtr peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public.data(),
                                           peer_public.size()));
  if (!peer) return OpenSslError("EVP_PKEY_new_raw_public_key(X25519)");
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(self.get(), nullptr));
  if (!ctx) return OpenSslError("EVP_PKEY_CTX_new(X25519)");
  if (EVP_PKEY_derive_init(ctx.get()) != 1) return OpenSslError("EVP_PKEY_derive_init(X25519)");
  if (EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1) {
    return OpenSslError("EVP_PKEY_derive_set_peer(X25519)");
  }
  Key32 secret;
  size_t len = secret.size();
  // OpenSSL's X25519 derive fails exactly when the shared secret is all zero (RFC 7748 §6.1's
  // check); with both keys already accepted above, that is the only way this call can fail.
  if (EVP_PKEY_derive(ctx.get(), secret.data(), &len) != 1) {
    ERR_clear_error();
    return Status::InvalidArgument(
        "X25519: the peer public key is a low-order point (all-zero shared secret)");
  }
  const Key32 zero{};
  if (len != secret.size() || CRYPTO_memcmp(secret.data(), zero.data(), zero.size()) == 0) {
    OPENSSL_cleanse(secret.data(), secret.size());
    return Status::InvalidArgument(
        "X25519: the peer public key is a low-order point (all-zero shared secret)");
  }
  return secret;
}

StatusOr<Key32> Sha256(std::span<const uint8_t> data) {
  Key32 digest;
  unsigned int len = 0;
  uint8_t empty = 0;
  if (EVP_Digest(data.empty() ? &empty : data.data(), data.size(), digest.data(), &len,
                 EVP_sha256(), nullptr) != 1 ||
      len != digest.size()) {
    return OpenSslError("EVP_Digest(SHA-256)");
  }
  return digest;
}

StatusOr<Bytes> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                           std::string_view info, size_t out_bytes) {
  if (out_bytes == 0 || out_bytes > 255 * 32) {
    return Status::InvalidArgument("HKDF-SHA256: output length " + std::to_string(out_bytes) +
                                   " outside 1..8160");
  }
  if (Hkdf() == nullptr) return OpenSslError("EVP_KDF_fetch(HKDF)");
  KdfCtxPtr ctx(EVP_KDF_CTX_new(Hkdf()));
  if (!ctx) return OpenSslError("EVP_KDF_CTX_new(HKDF)");
  // OpenSSL's params take non-const pointers but only read them. A zero-length octet string
  // still needs a non-null pointer.
  uint8_t empty = 0;
  auto octets = [&empty](std::span<const uint8_t> s) {
    return s.empty() ? &empty : const_cast<uint8_t*>(s.data());
  };
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  int n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, octets(ikm), ikm.size());
  // An absent salt is the RFC's default, HashLen zero bytes (HMAC pads its key with zeros).
  if (!salt.empty()) {
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, octets(salt), salt.size());
  }
  if (!info.empty()) {
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO,
                                                    const_cast<char*>(info.data()), info.size());
  }
  params[n] = OSSL_PARAM_construct_end();
  Bytes out(out_bytes);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    return OpenSslError("EVP_KDF_derive(HKDF-SHA256)");
  }
  return out;
}

StatusOr<Key32> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt,
                           std::string_view info) {
  TANDEM_ASSIGN_OR_RETURN(Bytes out, HkdfSha256(ikm, salt, info, 32));
  Cleanser wipe(out);
  Key32 key;
  std::memcpy(key.data(), out.data(), key.size());
  return key;
}

Status AddMask(const Key32& seed, int modulus_bits, bool subtract, std::span<uint64_t> acc) {
  if (modulus_bits < 1 || modulus_bits > 64) {
    return Status::InvalidArgument("AddMask: modulus_bits " + std::to_string(modulus_bits) +
                                   " outside 1..64");
  }
  if (Aes256Ctr() == nullptr) return OpenSslError("EVP_CIPHER_fetch(AES-256-CTR)");
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  const uint8_t iv[16] = {};
  if (EVP_EncryptInit_ex2(ctx.get(), Aes256Ctr(), seed.data(), iv, nullptr) != 1) {
    return OpenSslError("EVP_EncryptInit_ex2(AES-256-CTR)");
  }
  const uint64_t mask = modulus_bits == 64 ? ~uint64_t{0} : (uint64_t{1} << modulus_bits) - 1;
  // The keystream is a secret (it masks a contribution): wipe the part of the buffer used.
  alignas(64) std::array<uint8_t, kMaskBlockBytes> stream;
  Cleanser wipe(std::span(stream.data(), std::min(kMaskBlockBytes, acc.size_bytes())));
  uint64_t* a = acc.data();
  for (size_t start = 0; start < acc.size(); start += kMaskBlockWords) {
    const size_t words = std::min(kMaskBlockWords, acc.size() - start);
    // AES is compute-bound and the add pass memory-bound: fetch the next block of acc (for
    // writing) while AES runs on this one, so the two overlap.
    const size_t next_end = std::min(acc.size(), start + 2 * kMaskBlockWords);
    for (size_t i = start + kMaskBlockWords; i < next_end; i += 64 / sizeof(uint64_t)) {
      __builtin_prefetch(a + i, 1, 3);
    }
    int len = 0;
    if (EVP_EncryptUpdate(ctx.get(), stream.data(), &len, kZeros,
                          static_cast<int>(words * sizeof(uint64_t))) != 1 ||
        len != static_cast<int>(words * sizeof(uint64_t))) {
      return OpenSslError("EVP_EncryptUpdate(AES-256-CTR)");
    }
    AddStreamWords(a + start, stream.data(), words, mask, subtract);
  }
  return Status::Ok();
}

StatusOr<Bytes> SealAesGcm(const Key32& key, std::span<const uint8_t> plaintext,
                           std::span<const uint8_t> aad) {
  if (Aes256Gcm() == nullptr) return OpenSslError("EVP_CIPHER_fetch(AES-256-GCM)");
  Bytes out(kGcmNonceBytes + plaintext.size() + kGcmTagBytes);
  // A random 96-bit nonce: a key may seal about 2^32 messages before a repeat becomes likely
  // enough to matter (NIST SP 800-38D §8.3); secure aggregation seals a handful per key.
  TANDEM_RETURN_IF_ERROR(RandomBytes(std::span(out.data(), kGcmNonceBytes)));
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_EncryptInit_ex2(ctx.get(), Aes256Gcm(), key.data(), out.data(), nullptr) != 1) {
    return OpenSslError("EVP_EncryptInit_ex2(AES-256-GCM)");
  }
  int len = 0;
  for (size_t done = 0; done < aad.size(); done += kMaxUpdateBytes) {
    const size_t n = std::min(kMaxUpdateBytes, aad.size() - done);
    if (EVP_EncryptUpdate(ctx.get(), nullptr, &len, aad.data() + done, static_cast<int>(n)) != 1) {
      return OpenSslError("EVP_EncryptUpdate(AES-256-GCM aad)");
    }
  }
  uint8_t* ct = out.data() + kGcmNonceBytes;
  size_t written = 0;
  for (size_t done = 0; done < plaintext.size(); done += kMaxUpdateBytes) {
    const size_t n = std::min(kMaxUpdateBytes, plaintext.size() - done);
    if (EVP_EncryptUpdate(ctx.get(), ct + written, &len, plaintext.data() + done,
                          static_cast<int>(n)) != 1) {
      return OpenSslError("EVP_EncryptUpdate(AES-256-GCM)");
    }
    written += static_cast<size_t>(len);
  }
  uint8_t final_block[16];
  if (EVP_EncryptFinal_ex(ctx.get(), final_block, &len) != 1 || len != 0 ||
      written != plaintext.size()) {
    return OpenSslError("EVP_EncryptFinal_ex(AES-256-GCM)");
  }
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kGcmTagBytes),
                          ct + plaintext.size()) != 1) {
    return OpenSslError("EVP_CTRL_GCM_GET_TAG");
  }
  return out;
}

StatusOr<Bytes> OpenAesGcm(const Key32& key, std::span<const uint8_t> sealed,
                           std::span<const uint8_t> aad) {
  if (sealed.size() < kGcmNonceBytes + kGcmTagBytes) {
    return Status::InvalidArgument("AES-GCM: sealed message of " + std::to_string(sealed.size()) +
                                   " bytes is shorter than nonce + tag (28)");
  }
  if (Aes256Gcm() == nullptr) return OpenSslError("EVP_CIPHER_fetch(AES-256-GCM)");
  const size_t ct_size = sealed.size() - kGcmNonceBytes - kGcmTagBytes;
  const uint8_t* ct = sealed.data() + kGcmNonceBytes;
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_DecryptInit_ex2(ctx.get(), Aes256Gcm(), key.data(), sealed.data(), nullptr) != 1) {
    return OpenSslError("EVP_DecryptInit_ex2(AES-256-GCM)");
  }
  int len = 0;
  for (size_t done = 0; done < aad.size(); done += kMaxUpdateBytes) {
    const size_t n = std::min(kMaxUpdateBytes, aad.size() - done);
    if (EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad.data() + done, static_cast<int>(n)) != 1) {
      return OpenSslError("EVP_DecryptUpdate(AES-256-GCM aad)");
    }
  }
  Bytes plain(ct_size);
  size_t written = 0;
  for (size_t done = 0; done < ct_size; done += kMaxUpdateBytes) {
    const size_t n = std::min(kMaxUpdateBytes, ct_size - done);
    if (EVP_DecryptUpdate(ctx.get(), plain.data() + written, &len, ct + done,
                          static_cast<int>(n)) != 1) {
      return OpenSslError("EVP_DecryptUpdate(AES-256-GCM)");
    }
    written += static_cast<size_t>(len);
  }
  uint8_t tag[kGcmTagBytes];
  std::memcpy(tag, ct + ct_size, kGcmTagBytes);
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kGcmTagBytes), tag) !=
      1) {
    return OpenSslError("EVP_CTRL_GCM_SET_TAG");
  }
  uint8_t final_block[16];
  if (EVP_DecryptFinal_ex(ctx.get(), final_block, &len) != 1 || written != ct_size) {
    ERR_clear_error();
    // Never hand out plaintext that did not authenticate.
    OPENSSL_cleanse(plain.data(), plain.size());
    return Status::Corruption("AES-GCM: authentication failed");
  }
  return plain;
}

bool IsAuthenticationFailure(const Status& status) {
  return status.code() == StatusCode::kCorruption &&
         status.message().find("authentication failed") != std::string::npos;
}

}  // namespace tandem::privacy

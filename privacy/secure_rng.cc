// SecureRng: AES-256-CTR keystream (IV zero; the key is used for this one stream only), read 4 KiB
// at a time through OpenSSL EVP. The 128-bit counter never wraps in any realistic run.
#include "privacy/secure_rng.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numbers>

namespace tandem::privacy {

struct SecureRng::CipherCtx {
  EVP_CIPHER_CTX* ctx = nullptr;
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

StatusOr<std::unique_ptr<SecureRng::CipherCtx>> SecureRng::MakeCipher(const Key& key) {
  auto c = std::make_unique<SecureRng::CipherCtx>();
  c->ctx = EVP_CIPHER_CTX_new();
  if (c->ctx == nullptr) return Status::Internal("SecureRng: EVP_CIPHER_CTX_new failed");
  const uint8_t iv[16] = {};
  if (EVP_EncryptInit_ex(c->ctx, EVP_aes_256_ctr(), nullptr, key.data(), iv) != 1) {
    return Status::Internal("SecureRng: EVP_EncryptInit_ex(aes-256-ctr) failed");
  }
  return c;
}

namespace {

[[noreturn]] void Die(const Status& status) {
  std::fprintf(stderr, "%s\n", status.ToString().c_str());
  std::abort();
}

}  // namespace

SecureRng::SecureRng(std::unique_ptr<CipherCtx> ctx) : ctx_(std::move(ctx)) {}

SecureRng::SecureRng(const Key& key) {
  auto ctx = MakeCipher(key);
  if (!ctx.ok()) Die(ctx.status());
  ctx_ = std::move(ctx).value();
}

StatusOr<SecureRng> SecureRng::Create() {
  Key key;
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    return Status::Internal("SecureRng: RAND_bytes could not provide a key (no entropy source?)");
  }
  auto ctx = MakeCipher(key);
  OPENSSL_cleanse(key.data(), key.size());
  if (!ctx.ok()) return ctx.status();
  return SecureRng(std::move(ctx).value());
}

SecureRng::SecureRng() {
  auto rng = Create();
  if (!rng.ok()) Die(rng.status());
  *this = std::move(rng).value();
}

// A moved-from generator must not replay the buffered words its successor will emit.
SecureRng::SecureRng(SecureRng&& other) noexcept { *this = std::move(other); }

SecureRng& SecureRng::operator=(SecureRng&& other) noexcept {
  if (this == &other) return *this;
  ctx_ = std::move(other.ctx_);
  buffer_ = other.buffer_;
  next_ = other.next_;
  has_cached_normal_ = other.has_cached_normal_;
  cached_normal_ = other.cached_normal_;
  OPENSSL_cleanse(other.buffer_.data(), sizeof(other.buffer_));
  other.next_ = kBufferWords;
  other.has_cached_normal_ = false;
  return *this;
}

SecureRng::~SecureRng() { OPENSSL_cleanse(buffer_.data(), sizeof(buffer_)); }

void SecureRng::Refill() {
  TANDEM_CHECK(ctx_ != nullptr);  // a moved-from generator
  // CTR mode: the ciphertext of zeros is the keystream. EVP allows in-place operation.
  auto* bytes = reinterpret_cast<uint8_t*>(buffer_.data());
  const int n = static_cast<int>(sizeof(buffer_));
  std::memset(bytes, 0, sizeof(buffer_));
  int out_len = 0;
  if (EVP_EncryptUpdate(ctx_->ctx, bytes, &out_len, bytes, n) != 1 || out_len != n) {
    Die(Status::Internal("SecureRng: EVP_EncryptUpdate failed"));
  }
  if constexpr (std::endian::native == std::endian::big) {
    for (auto& w : buffer_) w = __builtin_bswap64(w);
  }
  next_ = 0;
}

uint64_t SecureRng::NextU64() {
  if (next_ == kBufferWords) Refill();
  return buffer_[next_++];
}

void SecureRng::Fill(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    if (next_ == kBufferWords) Refill();
    const size_t avail = (kBufferWords - next_) * sizeof(uint64_t);
    const size_t n = std::min(avail, out.size() - done);
    // Whole words are consumed, so a partial word's remaining bytes are never reused.
    std::memcpy(out.data() + done, buffer_.data() + next_, n);
    next_ += (n + sizeof(uint64_t) - 1) / sizeof(uint64_t);
    done += n;
  }
}

double SecureRng::Uniform() {
  return (static_cast<double>(NextU64() >> 11) + 0.5) * 0x1.0p-53;
}

double SecureRng::Normal() {
  if (has_cached_normal_) {
    has_cached_normal_ = false;
    return cached_normal_;
  }
  const double r = std::sqrt(-2.0 * std::log(Uniform()));
  const double theta = 2.0 * std::numbers::pi * Uniform();
  cached_normal_ = r * std::sin(theta);
  has_cached_normal_ = true;
  return r * std::cos(theta);
}

}  // namespace tandem::privacy

// Noise streams bound to (key, run, round, task or sum); see noise_stream.h. The HKDF info of a
// stream is a label and fixed-width fields (little-endian), with the one variable-length field
// last and length-prefixed, so no two contexts encode alike.
#include "privacy/noise_stream.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace tandem::privacy {
namespace {

constexpr std::string_view kSalt = "tandem.dp.noise/v1";

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

void PutBytes(std::string* out, std::span<const uint8_t> bytes) {
  out->append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::string Hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * bytes.size());
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 0xF]);
  }
  return s;
}

Status FromHex(std::string_view hex, std::span<uint8_t> out, const char* what) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (hex.size() != 2 * out.size()) {
    return Status::InvalidArgument(std::string(what) + " must be " +
                                   std::to_string(2 * out.size()) + " hex digits, got " +
                                   std::to_string(hex.size()) + " characters");
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument(std::string(what) + " is not hex");
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return Status::Ok();
}

StatusOr<SecureRng> StreamFor(const SecureRng::Key& key, const std::string& info) {
  const auto salt = std::span(reinterpret_cast<const uint8_t*>(kSalt.data()), kSalt.size());
  TANDEM_ASSIGN_OR_RETURN(Key32 stream_key, HkdfSha256(key, salt, info));
  SecureRng rng(stream_key);
  OPENSSL_cleanse(stream_key.data(), stream_key.size());
  return rng;
}

}  // namespace

StatusOr<NoiseRunId> NoiseRunId::Random() {
  NoiseRunId id;
  TANDEM_RETURN_IF_ERROR(RandomBytes(id.bytes));
  return id;
}

std::string NoiseRunId::ToHex() const { return Hex(bytes); }

StatusOr<NoiseRunId> NoiseRunId::FromHex(std::string_view hex) {
  NoiseRunId id;
  TANDEM_RETURN_IF_ERROR(privacy::FromHex(hex, id.bytes, "a noise run id"));
  return id;
}

std::string KeyToHex(const SecureRng::Key& key) { return Hex(key); }

StatusOr<SecureRng::Key> KeyFromHex(std::string_view hex) {
  SecureRng::Key key;
  TANDEM_RETURN_IF_ERROR(FromHex(hex, key, "a noise key"));
  return key;
}

StatusOr<SecureRng::Key> DeriveKey(const SecureRng::Key& master, std::string_view purpose) {
  return HkdfSha256(master, {}, std::string("tandem.dp.key/v1\0", 17) + std::string(purpose));
}

StatusOr<SecureRng> ClientNoiseStream(const SecureRng::Key& client_key, const NoiseRunId& run,
                                      uint64_t round, std::string_view task) {
  std::string info("client\0", 7);
  PutBytes(&info, run.bytes);
  PutU64(&info, round);
  PutU64(&info, task.size());
  info.append(task);
  return StreamFor(client_key, info);
}

StatusOr<SecureRng> CentralNoiseStream(const SecureRng::Key& key, const NoiseRunId& run,
                                       uint64_t round, const Key32& release_digest) {
  std::string info("central\0", 8);
  PutBytes(&info, run.bytes);
  PutU64(&info, round);
  PutBytes(&info, release_digest);
  return StreamFor(key, info);
}

StatusOr<Key32> SumDigest(std::vector<std::string> contributors, std::span<const double> sum) {
  std::sort(contributors.begin(), contributors.end());
  std::string bytes;
  PutU64(&bytes, contributors.size());
  for (const std::string& c : contributors) {
    PutU64(&bytes, c.size());
    bytes += c;
  }
  PutU64(&bytes, sum.size());
  for (double v : sum) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    PutU64(&bytes, bits);
  }
  return Sha256(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
}

StatusOr<std::optional<SecureRng::Key>> ExperimentNoiseKey() {
  const char* value = std::getenv(kExperimentNoiseKeyVariable);
  if (value == nullptr || *value == '\0') return std::optional<SecureRng::Key>();
  StatusOr<SecureRng::Key> key = KeyFromHex(value);
  if (!key.ok()) {
    return Status::InvalidArgument(std::string(kExperimentNoiseKeyVariable) + ": " +
                                   key.status().message());
  }
  return std::optional<SecureRng::Key>(*key);
}

}  // namespace tandem::privacy

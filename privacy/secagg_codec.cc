// Secure-aggregation byte formats (see privacy/secagg_codec.h): a binary writer and a strict
// reader (exact lengths, capped counts, no trailing bytes), the six messages, the sealed share
// pair and the HKDF info and AES-GCM AAD contexts (Bonawitz et al. 2017, section 4).
#include "privacy/secagg_codec.h"

#include <openssl/crypto.h>

#include <cstring>
#include <utility>

namespace tandem::privacy {
namespace {

using detail::Cleanse;
using detail::kShareWireBytes;

enum MessageType : uint8_t {
  kTypeAdvertiseKeys = 1,
  kTypeKeyList = 2,
  kTypeShareKeys = 3,
  kTypeMaskedInputRequest = 4,
  kTypeUnmaskRequest = 5,
  kTypeUnmaskResponse = 6,
  kTypeSharePlaintext = 7,  // inside the AES-GCM envelope, never on the wire in the clear
};

// ---- Binary writer and strict reader. ----

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Key(const Key32& k) { out_.insert(out_.end(), k.begin(), k.end()); }
  void Str(std::string_view s) {
    TANDEM_CHECK(s.size() <= 0xffff);
    U16(static_cast<uint16_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  void Blob(std::span<const uint8_t> b) {
    TANDEM_CHECK(b.size() <= 0xffffffffu);
    U32(static_cast<uint32_t>(b.size()));
    out_.insert(out_.end(), b.begin(), b.end());
  }
  void Count(size_t n) {
    TANDEM_CHECK(n <= 0xffffffffu);
    U32(static_cast<uint32_t>(n));
  }
  void Header(uint8_t type, uint64_t run_id, uint64_t round) {
    U8(kSecAggVersion);
    U8(type);
    U64(run_id);
    U64(round);
  }
  Bytes Take() { return std::move(out_); }

 private:
  void Le(uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  Bytes out_;
};

class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, const char* what) : bytes_(bytes), what_(what) {}

  Status Header(uint8_t type, uint64_t* run_id, uint64_t* round) {
    uint8_t version = 0, got_type = 0;
    TANDEM_RETURN_IF_ERROR(U8(&version));
    if (version != kSecAggVersion) {
      return Error("version " + std::to_string(version) + ", expected " +
                   std::to_string(kSecAggVersion));
    }
    TANDEM_RETURN_IF_ERROR(U8(&got_type));
    if (got_type != type) return Error("message type " + std::to_string(got_type));
    TANDEM_RETURN_IF_ERROR(U64(run_id));
    return U64(round);
  }
  Status U8(uint8_t* v) {
    uint64_t x = 0;
    TANDEM_RETURN_IF_ERROR(Le(&x, 1));
    *v = static_cast<uint8_t>(x);
    return Status::Ok();
  }
  Status U32(uint32_t* v) {
    uint64_t x = 0;
    TANDEM_RETURN_IF_ERROR(Le(&x, 4));
    *v = static_cast<uint32_t>(x);
    return Status::Ok();
  }
  Status U64(uint64_t* v) { return Le(v, 8); }
  Status Key(Key32* k) {
    TANDEM_RETURN_IF_ERROR(Need(k->size()));
    std::memcpy(k->data(), bytes_.data() + pos_, k->size());
    pos_ += k->size();
    return Status::Ok();
  }
  // A client id: 1..kSecAggMaxClientIdBytes bytes.
  Status Id(std::string* s) {
    uint64_t n = 0;
    TANDEM_RETURN_IF_ERROR(Le(&n, 2));
    if (n == 0 || n > kSecAggMaxClientIdBytes) {
      return Error("client id of " + std::to_string(n) + " bytes");
    }
    TANDEM_RETURN_IF_ERROR(Need(n));
    s->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return Status::Ok();
  }
  Status Blob(Bytes* b, size_t min_bytes, size_t max_bytes) {
    uint32_t n = 0;
    TANDEM_RETURN_IF_ERROR(U32(&n));
    if (n < min_bytes || n > max_bytes) {
      return Error("byte string of " + std::to_string(n) + " bytes (allowed " +
                   std::to_string(min_bytes) + ".." + std::to_string(max_bytes) + ")");
    }
    TANDEM_RETURN_IF_ERROR(Need(n));
    b->assign(bytes_.begin() + pos_, bytes_.begin() + pos_ + n);
    pos_ += n;
    return Status::Ok();
  }
  // A list count, capped, and small enough that each item's least size fits what is left (so a
  // forged count never makes us reserve memory the message does not back).
  Status Count(size_t* n, size_t max, size_t min_item_bytes) {
    uint32_t c = 0;
    TANDEM_RETURN_IF_ERROR(U32(&c));
    if (c > max) return Error("count " + std::to_string(c) + " above " + std::to_string(max));
    if (static_cast<uint64_t>(c) * min_item_bytes > bytes_.size() - pos_) {
      return Error("count " + std::to_string(c) + " exceeds the message");
    }
    *n = c;
    return Status::Ok();
  }
  Status End() const {
    if (pos_ != bytes_.size()) {
      return Error(std::to_string(bytes_.size() - pos_) + " trailing bytes");
    }
    return Status::Ok();
  }

 private:
  Status Need(size_t n) const {
    if (n > bytes_.size() - pos_) return Error("truncated");
    return Status::Ok();
  }
  Status Le(uint64_t* v, int n) {
    TANDEM_RETURN_IF_ERROR(Need(n));
    uint64_t x = 0;
    for (int i = 0; i < n; ++i) x |= static_cast<uint64_t>(bytes_[pos_ + i]) << (8 * i);
    pos_ += n;
    *v = x;
    return Status::Ok();
  }
  Status Error(const std::string& m) const {
    return Status::InvalidArgument(std::string("secagg ") + what_ + ": " + m);
  }

  std::span<const uint8_t> bytes_;
  size_t pos_ = 0;
  const char* what_;
};

constexpr size_t kMinIdBytes = 2 + 1;
constexpr size_t kMinShareBytes = 2 + 1 + 4 + 8;  // id, blob length, x + count

void WriteShares(Writer& w, const std::vector<EncryptedShares>& shares) {
  w.Count(shares.size());
  for (const auto& s : shares) {
    w.Str(s.peer);
    w.Blob(s.ciphertext);
  }
}

Status ReadShares(Reader& r, std::vector<EncryptedShares>* shares) {
  size_t n = 0;
  TANDEM_RETURN_IF_ERROR(r.Count(&n, kSecAggMaxClients, kMinIdBytes + 4 + kGcmNonceBytes + kGcmTagBytes));
  shares->resize(n);
  for (auto& s : *shares) {
    TANDEM_RETURN_IF_ERROR(r.Id(&s.peer));
    TANDEM_RETURN_IF_ERROR(
        r.Blob(&s.ciphertext, kGcmNonceBytes + kGcmTagBytes + 1, kSecAggMaxCiphertextBytes));
  }
  return Status::Ok();
}

void WriteIds(Writer& w, const std::vector<std::string>& ids) {
  w.Count(ids.size());
  for (const auto& id : ids) w.Str(id);
}

Status ReadIds(Reader& r, std::vector<std::string>* ids) {
  size_t n = 0;
  TANDEM_RETURN_IF_ERROR(r.Count(&n, kSecAggMaxClients, kMinIdBytes));
  ids->resize(n);
  for (auto& id : *ids) TANDEM_RETURN_IF_ERROR(r.Id(&id));
  return Status::Ok();
}

void WriteRevealed(Writer& w, const std::vector<RevealedShare>& shares) {
  w.Count(shares.size());
  for (const auto& s : shares) {
    w.Str(s.owner);
    w.Blob(SerializeShare(s.share));
  }
}

Status ReadRevealed(Reader& r, std::vector<RevealedShare>* shares) {
  size_t n = 0;
  TANDEM_RETURN_IF_ERROR(r.Count(&n, kSecAggMaxClients, kMinShareBytes));
  shares->resize(n);
  for (auto& s : *shares) {
    TANDEM_RETURN_IF_ERROR(r.Id(&s.owner));
    Bytes blob;
    TANDEM_RETURN_IF_ERROR(r.Blob(&blob, 8, kShareWireBytes));
    TANDEM_ASSIGN_OR_RETURN(s.share, ParseShare(blob));
  }
  return Status::Ok();
}

// Domain-separated, length-prefixed context: label | run | round | first | second.
std::string Context(std::string_view label, const SecAggParams& p, std::string_view first,
                    std::string_view second) {
  Writer w;
  w.Str(label);
  w.U64(p.run_id);
  w.U64(p.round);
  w.Str(first);
  w.Str(second);
  Bytes b = w.Take();
  return std::string(b.begin(), b.end());
}

constexpr std::string_view kShareAadLabel = "tandem secagg v1 shares";

}  // namespace

// ---- Message formats. ----

Bytes AdvertiseKeys::Serialize() const {
  Writer w;
  w.Header(kTypeAdvertiseKeys, run_id, round);
  w.Key(c_public);
  w.Key(s_public);
  return w.Take();
}

StatusOr<AdvertiseKeys> AdvertiseKeys::Parse(std::span<const uint8_t> bytes) {
  Reader r(bytes, "AdvertiseKeys");
  AdvertiseKeys m;
  TANDEM_RETURN_IF_ERROR(r.Header(kTypeAdvertiseKeys, &m.run_id, &m.round));
  TANDEM_RETURN_IF_ERROR(r.Key(&m.c_public));
  TANDEM_RETURN_IF_ERROR(r.Key(&m.s_public));
  TANDEM_RETURN_IF_ERROR(r.End());
  return m;
}

Bytes KeyList::Serialize() const {
  Writer w;
  w.Header(kTypeKeyList, run_id, round);
  WriteIds(w, advertised);
  w.Count(neighbours.size());
  for (const auto& p : neighbours) {
    w.Str(p.id);
    w.Key(p.c_public);
    w.Key(p.s_public);
  }
  return w.Take();
}

StatusOr<KeyList> KeyList::Parse(std::span<const uint8_t> bytes) {
  Reader r(bytes, "KeyList");
  KeyList m;
  TANDEM_RETURN_IF_ERROR(r.Header(kTypeKeyList, &m.run_id, &m.round));
  TANDEM_RETURN_IF_ERROR(ReadIds(r, &m.advertised));
  size_t n = 0;
  TANDEM_RETURN_IF_ERROR(r.Count(&n, kSecAggMaxClients, kMinIdBytes + 64));
  m.neighbours.resize(n);
  for (auto& p : m.neighbours) {
    TANDEM_RETURN_IF_ERROR(r.Id(&p.id));
    TANDEM_RETURN_IF_ERROR(r.Key(&p.c_public));
    TANDEM_RETURN_IF_ERROR(r.Key(&p.s_public));
  }
  TANDEM_RETURN_IF_ERROR(r.End());
  return m;
}

Bytes ShareKeysMessage::Serialize() const {
  Writer w;
  w.Header(kTypeShareKeys, run_id, round);
  WriteShares(w, shares);
  return w.Take();
}

StatusOr<ShareKeysMessage> ShareKeysMessage::Parse(std::span<const uint8_t> bytes) {
  Reader r(bytes, "ShareKeysMessage");
  ShareKeysMessage m;
  TANDEM_RETURN_IF_ERROR(r.Header(kTypeShareKeys, &m.run_id, &m.round));
  TANDEM_RETURN_IF_ERROR(ReadShares(r, &m.shares));
  TANDEM_RETURN_IF_ERROR(r.End());
  return m;
}

Bytes MaskedInputRequest::Serialize() const {
  Writer w;
  w.Header(kTypeMaskedInputRequest, run_id, round);
  WriteShares(w, shares);
  return w.Take();
}

StatusOr<MaskedInputRequest> MaskedInputRequest::Parse(std::span<const uint8_t> bytes) {
  Reader r(bytes, "MaskedInputRequest");
  MaskedInputRequest m;
  TANDEM_RETURN_IF_ERROR(r.Header(kTypeMaskedInputRequest, &m.run_id, &m.round));
  TANDEM_RETURN_IF_ERROR(ReadShares(r, &m.shares));
  TANDEM_RETURN_IF_ERROR(r.End());
  return m;
}

Bytes UnmaskRequest::Serialize() const {
  Writer w;
  w.Header(kTypeUnmaskRequest, run_id, round);
  WriteIds(w, survivors);
  WriteIds(w, dropped);
  return w.Take();
}

StatusOr<UnmaskRequest> UnmaskRequest::Parse(std::span<const uint8_t> bytes) {
  Reader r(bytes, "UnmaskRequest");
  UnmaskRequest m;
  TANDEM_RETURN_IF_ERROR(r.Header(kTypeUnmaskRequest, &m.run_id, &m.round));
  TANDEM_RETURN_IF_ERROR(ReadIds(r, &m.survivors));
  TANDEM_RETURN_IF_ERROR(ReadIds(r, &m.dropped));
  TANDEM_RETURN_IF_ERROR(r.End());
  return m;
}

Bytes UnmaskResponse::Serialize() const {
  Writer w;
  w.Header(kTypeUnmaskResponse, run_id, round);
  WriteRevealed(w, self_mask_shares);
  WriteRevealed(w, key_shares);
  return w.Take();
}

StatusOr<UnmaskResponse> UnmaskResponse::Parse(std::span<const uint8_t> bytes) {
  Reader r(bytes, "UnmaskResponse");
  UnmaskResponse m;
  TANDEM_RETURN_IF_ERROR(r.Header(kTypeUnmaskResponse, &m.run_id, &m.round));
  TANDEM_RETURN_IF_ERROR(ReadRevealed(r, &m.self_mask_shares));
  TANDEM_RETURN_IF_ERROR(ReadRevealed(r, &m.key_shares));
  TANDEM_RETURN_IF_ERROR(r.End());
  return m;
}

namespace detail {

void Cleanse(void* p, size_t n) { OPENSSL_cleanse(p, n); }
void WipeKey(Key32& k) { Cleanse(k.data(), k.size()); }
void WipeShare(ShamirShare& s) {
  if (!s.y.empty()) Cleanse(s.y.data(), s.y.size() * sizeof(uint64_t));
  s.y.clear();
}

StatusOr<Key32> PairKey(std::string_view label, const SecAggParams& p, const Key32& private_key,
                        const Key32& peer_public, const std::string& a, const std::string& b) {
  TANDEM_ASSIGN_OR_RETURN(Key32 shared, X25519Agree(private_key, peer_public));
  const std::string info = a < b ? Context(label, p, a, b) : Context(label, p, b, a);
  StatusOr<Key32> key = HkdfSha256(shared, {}, info);
  WipeKey(shared);
  return key;
}

Bytes ShareAad(const SecAggParams& p, const std::string& sender, const std::string& recipient) {
  const std::string c = Context(kShareAadLabel, p, sender, recipient);
  return Bytes(c.begin(), c.end());
}

Bytes SerializeSharePair(const ShamirShare& b, const ShamirShare& s) {
  Writer w;
  w.U8(kSecAggVersion);
  w.U8(kTypeSharePlaintext);
  Bytes bb = SerializeShare(b), sb = SerializeShare(s);
  w.Blob(bb);
  w.Blob(sb);
  Cleanse(bb.data(), bb.size());
  Cleanse(sb.data(), sb.size());
  return w.Take();
}

Status ParseSharePair(std::span<const uint8_t> bytes, ShamirShare* b, ShamirShare* s) {
  Reader r(bytes, "share plaintext");
  uint8_t version = 0, type = 0;
  TANDEM_RETURN_IF_ERROR(r.U8(&version));
  TANDEM_RETURN_IF_ERROR(r.U8(&type));
  if (version != kSecAggVersion || type != kTypeSharePlaintext) {
    return Status::InvalidArgument("secagg share plaintext: wrong version or type");
  }
  Bytes blob;
  TANDEM_RETURN_IF_ERROR(r.Blob(&blob, kShareWireBytes, kShareWireBytes));
  TANDEM_ASSIGN_OR_RETURN(*b, ParseShare(blob));
  Cleanse(blob.data(), blob.size());
  TANDEM_RETURN_IF_ERROR(r.Blob(&blob, kShareWireBytes, kShareWireBytes));
  TANDEM_ASSIGN_OR_RETURN(*s, ParseShare(blob));
  Cleanse(blob.data(), blob.size());
  return r.End();
}

Status CheckShare(const ShamirShare& share, uint32_t x, const std::string& what) {
  if (share.x != x) {
    return Status::InvalidArgument("secagg " + what + ": share has x = " +
                                   std::to_string(share.x) + ", expected " + std::to_string(x));
  }
  if (share.y.size() != kSecretChunks) {
    return Status::InvalidArgument("secagg " + what + ": share has " +
                                   std::to_string(share.y.size()) + " field elements, expected " +
                                   std::to_string(kSecretChunks));
  }
  for (uint64_t y : share.y) {
    if (y >= kShamirPrime) {
      return Status::InvalidArgument("secagg " + what + ": share value not below the prime");
    }
  }
  return Status::Ok();
}

}  // namespace detail
}  // namespace tandem::privacy

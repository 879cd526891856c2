// Secure aggregation state machines (Bonawitz et al. 2017; SecAgg+ of Bell et al. 2020): message
// formats, SecAggServer and SecAggClient. See secagg.h for the protocol and the wire format.
#include "privacy/secagg.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

#include "core/logging.h"
#include "privacy/fixed_point.h"

namespace tandem::privacy {
namespace {

// Bytes of the secrets that are Shamir-shared: b_u and s_u^SK are both 32 bytes.
constexpr size_t kSecretBytes = 32;
const size_t kSecretChunks = ShamirChunkCount(kSecretBytes);
// SerializeShare of a share of a 32-byte secret: x, count, count * y.
const size_t kShareWireBytes = 4 + 4 + 8 * ShamirChunkCount(kSecretBytes);

enum MessageType : uint8_t {
  kTypeAdvertiseKeys = 1,
  kTypeKeyList = 2,
  kTypeShareKeys = 3,
  kTypeMaskedInputRequest = 4,
  kTypeUnmaskRequest = 5,
  kTypeUnmaskResponse = 6,
  kTypeSharePlaintext = 7,  // inside the AES-GCM envelope, never on the wire in the clear
};

void Cleanse(void* p, size_t n) { OPENSSL_cleanse(p, n); }
void WipeKey(Key32& k) { Cleanse(k.data(), k.size()); }
void WipeShare(ShamirShare& s) {
  if (!s.y.empty()) Cleanse(s.y.data(), s.y.size() * sizeof(uint64_t));
  s.y.clear();
}

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

// ---- Key derivation and binding. ----

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

// HKDF(X25519(private, peer_public)) with info binding run, round, the purpose and the unordered
// pair (so both ends derive the same key).
StatusOr<Key32> PairKey(std::string_view label, const SecAggParams& p, const Key32& private_key,
                        const Key32& peer_public, const std::string& a, const std::string& b) {
  TANDEM_ASSIGN_OR_RETURN(Key32 shared, X25519Agree(private_key, peer_public));
  const std::string info = a < b ? Context(label, p, a, b) : Context(label, p, b, a);
  StatusOr<Key32> key = HkdfSha256(shared, {}, info);
  WipeKey(shared);
  return key;
}

constexpr std::string_view kShareKeyLabel = "tandem secagg v1 share key";
constexpr std::string_view kMaskSeedLabel = "tandem secagg v1 mask seed";
constexpr std::string_view kShareAadLabel = "tandem secagg v1 shares";

// AAD of a sealed share pair: binds run, round, sender and recipient (in that order).
Bytes ShareAad(const SecAggParams& p, const std::string& sender, const std::string& recipient) {
  const std::string c = Context(kShareAadLabel, p, sender, recipient);
  return Bytes(c.begin(), c.end());
}

// The seed of the permutation the SecAgg+ graph is laid over: graph_seed mixed with run and round
// (splitmix64 finaliser), so a fixed graph_seed still gives a new graph every round.
uint64_t GraphSeed(const SecAggParams& p) {
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(p.graph_seed) ^ p.run_id) ^ p.round);
}

uint64_t ModulusMask(int bits) {
  return bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
}

Status CheckVector(std::span<const uint64_t> v, const SecAggParams& p, const char* what) {
  if (v.size() != p.length) {
    return Status::InvalidArgument(std::string("secagg ") + what + ": " +
                                   std::to_string(v.size()) + " words, expected " +
                                   std::to_string(p.length));
  }
  if (p.modulus_bits < 64) {
    const uint64_t high = ~ModulusMask(p.modulus_bits);
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] & high) {
        return Status::InvalidArgument(std::string("secagg ") + what + ": word " +
                                       std::to_string(i) + " is not below 2^" +
                                       std::to_string(p.modulus_bits));
      }
    }
  }
  return Status::Ok();
}

Status CheckParamsAlone(const SecAggParams& p) {
  if (p.threshold < 2) {
    return Status::InvalidArgument("secagg threshold " + std::to_string(p.threshold) +
                                   " must be at least 2 (one share alone would reveal a secret)");
  }
  if (p.modulus_bits < 8 || p.modulus_bits > 64) {
    return Status::InvalidArgument("secagg modulus_bits " + std::to_string(p.modulus_bits) +
                                   " must be in 8..64");
  }
  if (p.length < 1 || p.length > kSecAggMaxLength) {
    return Status::InvalidArgument("secagg length " + std::to_string(p.length) +
                                   " must be in 1.." + std::to_string(kSecAggMaxLength));
  }
  if (p.neighbours < 0) {
    return Status::InvalidArgument("secagg neighbours " + std::to_string(p.neighbours) +
                                   " must be >= 0 (0: complete graph)");
  }
  if (p.neighbours > 0 && p.threshold > p.neighbours + 1) {
    return Status::InvalidArgument(
        "secagg threshold " + std::to_string(p.threshold) + " exceeds neighbours + 1 = " +
        std::to_string(p.neighbours + 1) + " (SecAgg+ applies t within each neighbourhood)");
  }
  return Status::Ok();
}

std::shared_ptr<spdlog::logger> Log() { return GetLogger("privacy"); }

}  // namespace

// ---- Parameters. ----

Status ValidateSecAggParams(const SecAggParams& params, size_t cohort) {
  TANDEM_RETURN_IF_ERROR(CheckParamsAlone(params));
  if (cohort < 2 || cohort > kSecAggMaxClients) {
    return Status::InvalidArgument("secagg cohort of " + std::to_string(cohort) +
                                   " clients: must be in 2.." + std::to_string(kSecAggMaxClients));
  }
  if (static_cast<size_t>(params.threshold) > cohort) {
    return Status::InvalidArgument("secagg threshold " + std::to_string(params.threshold) +
                                   " exceeds the cohort of " + std::to_string(cohort));
  }
  const bool complete =
      params.neighbours == 0 || static_cast<size_t>(params.neighbours) >= cohort - 1;
  if (complete && cohort > kSecAggMaxCompleteGraph) {
    return Status::InvalidArgument("secagg complete graph over " + std::to_string(cohort) +
                                   " clients: at most " +
                                   std::to_string(kSecAggMaxCompleteGraph) +
                                   "; set neighbours > 0 (SecAgg+) for larger cohorts");
  }
  return Status::Ok();
}

Status ValidateSecAggClientId(const std::string& id) {
  if (id.empty() || id.size() > kSecAggMaxClientIdBytes) {
    return Status::InvalidArgument("secagg client id of " + std::to_string(id.size()) +
                                   " bytes: must be 1.." +
                                   std::to_string(kSecAggMaxClientIdBytes));
  }
  return Status::Ok();
}

const char* SecAggStepName(SecAggStep step) {
  switch (step) {
    case SecAggStep::kAdvertise: return "advertise";
    case SecAggStep::kShareKeys: return "share-keys";
    case SecAggStep::kMaskedInput: return "masked-input";
    case SecAggStep::kUnmask: return "unmask";
    case SecAggStep::kDone: return "done";
    case SecAggStep::kAborted: return "aborted";
  }
  return "?";
}

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

namespace {

// The plaintext sealed for one peer: its share of b_u and its share of s_u^SK.
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

// A revealed or received share of a 32-byte secret held by the client at x.
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

}  // namespace

// ---- Server. ----

struct SecAggServer::Client {
  std::string id;
  bool advertised = false;
  Key32 c_public{};
  Key32 s_public{};
  uint32_t u1_pos = 0;           // valid once in U1
  bool in_u1 = false;
  bool sent_shares = false;      // U2
  std::vector<Bytes> outgoing;   // ciphertext to each graph neighbour, in Neighbours() order
  bool masked = false;           // U3
  bool answered = false;         // U4
  // Shares of this client's secrets revealed by its neighbours in step 3.
  std::vector<ShamirShare> b_shares;
  std::vector<ShamirShare> s_shares;
};

SecAggServer::SecAggServer(SecAggServer&&) noexcept = default;
SecAggServer& SecAggServer::operator=(SecAggServer&&) noexcept = default;
SecAggServer::~SecAggServer() {
  for (auto& c : clients_) {
    for (auto& s : c.b_shares) WipeShare(s);
    for (auto& s : c.s_shares) WipeShare(s);
  }
}

StatusOr<SecAggServer> SecAggServer::Create(const SecAggParams& params,
                                            std::vector<std::string> cohort) {
  TANDEM_RETURN_IF_ERROR(ValidateSecAggParams(params, cohort.size()));
  std::sort(cohort.begin(), cohort.end());
  for (size_t i = 0; i < cohort.size(); ++i) {
    TANDEM_RETURN_IF_ERROR(ValidateSecAggClientId(cohort[i]));
    if (i > 0 && cohort[i] == cohort[i - 1]) {
      return Status::InvalidArgument("secagg cohort lists " + cohort[i] + " twice");
    }
  }
  SecAggServer server;
  server.params_ = params;
  server.clients_.resize(cohort.size());
  for (size_t i = 0; i < cohort.size(); ++i) server.clients_[i].id = std::move(cohort[i]);
  return server;
}

std::optional<uint32_t> SecAggServer::Find(const std::string& id) const {
  auto it = std::lower_bound(clients_.begin(), clients_.end(), id,
                             [](const Client& c, const std::string& v) { return c.id < v; });
  if (it == clients_.end() || it->id != id) return std::nullopt;
  return static_cast<uint32_t>(it - clients_.begin());
}

Status SecAggServer::CheckMessage(const char* what, SecAggStep want, uint64_t run_id,
                                  uint64_t round) const {
  if (step_ != want) {
    return Status::FailedPrecondition(std::string("secagg server: ") + what + " in step " +
                                      SecAggStepName(step_) + " (expected in " +
                                      SecAggStepName(want) + ")");
  }
  if (run_id != params_.run_id || round != params_.round) {
    return Status::InvalidArgument(std::string("secagg server: ") + what + " for run " +
                                   std::to_string(run_id) + " round " + std::to_string(round) +
                                   ", this is run " + std::to_string(params_.run_id) +
                                   " round " + std::to_string(params_.round));
  }
  return Status::Ok();
}

Status SecAggServer::Abort(Status why) {
  step_ = SecAggStep::kAborted;
  std::vector<uint64_t>().swap(sum_);
  for (auto& c : clients_) {
    for (auto& s : c.b_shares) WipeShare(s);
    for (auto& s : c.s_shares) WipeShare(s);
  }
  Log()->warn("secagg run {} round {}: aborted: {}", params_.run_id, params_.round,
              why.message());
  return why;
}

Status SecAggServer::OnAdvertise(const std::string& id, const AdvertiseKeys& message) {
  TANDEM_RETURN_IF_ERROR(
      CheckMessage("AdvertiseKeys", SecAggStep::kAdvertise, message.run_id, message.round));
  auto i = Find(id);
  if (!i) return Status::InvalidArgument("secagg server: AdvertiseKeys from " + id + ", not in the cohort");
  Client& c = clients_[*i];
  if (c.advertised) {
    return Status::FailedPrecondition("secagg server: second AdvertiseKeys from " + id);
  }
  if (message.c_public == message.s_public) {
    return Status::InvalidArgument("secagg server: " + id + " advertised one key for both uses");
  }
  c.advertised = true;
  c.c_public = message.c_public;
  c.s_public = message.s_public;
  return Status::Ok();
}

Status SecAggServer::CloseAdvertise() {
  if (step_ != SecAggStep::kAdvertise) {
    return Status::FailedPrecondition(std::string("secagg server: CloseAdvertise in step ") +
                                      SecAggStepName(step_));
  }
  for (uint32_t i = 0; i < clients_.size(); ++i) {
    if (clients_[i].advertised) u1_.push_back(i);
  }
  if (u1_.size() < static_cast<size_t>(params_.threshold)) {
    return Abort(Status::FailedPrecondition(
        "secagg: " + std::to_string(u1_.size()) + " clients advertised keys, threshold " +
        std::to_string(params_.threshold)));
  }
  for (uint32_t p = 0; p < u1_.size(); ++p) {
    Client& c = clients_[u1_[p]];
    c.in_u1 = true;
    c.u1_pos = p;
    u1_ids_.push_back(c.id);
  }
  graph_ = std::make_unique<SecAggGraph>(static_cast<uint32_t>(u1_.size()), params_.neighbours,
                                         GraphSeed(params_));
  step_ = SecAggStep::kShareKeys;
  Log()->info("secagg run {} round {}: {} of {} clients advertised keys", params_.run_id,
              params_.round, u1_.size(), clients_.size());
  return Status::Ok();
}

StatusOr<KeyList> SecAggServer::KeyListFor(const std::string& id) const {
  if (step_ != SecAggStep::kShareKeys) {
    return Status::FailedPrecondition(std::string("secagg server: KeyListFor in step ") +
                                      SecAggStepName(step_));
  }
  auto i = Find(id);
  if (!i || !clients_[*i].in_u1) {
    return Status::InvalidArgument("secagg server: KeyListFor " + id + ", who did not advertise");
  }
  const uint32_t pos = clients_[*i].u1_pos;
  KeyList list;
  list.run_id = params_.run_id;
  list.round = params_.round;
  list.advertised = u1_ids_;
  auto neighbours = graph_->Neighbours(pos);
  list.neighbours.reserve(neighbours.size() + 1);
  auto add = [&](uint32_t p) {
    const Client& c = clients_[u1_[p]];
    list.neighbours.push_back({c.id, c.c_public, c.s_public});
  };
  bool self_added = false;
  for (uint32_t p : neighbours) {
    if (!self_added && p > pos) {
      add(pos);
      self_added = true;
    }
    add(p);
  }
  if (!self_added) add(pos);
  return list;
}

Status SecAggServer::OnShareKeys(const std::string& id, const ShareKeysMessage& message) {
  TANDEM_RETURN_IF_ERROR(
      CheckMessage("ShareKeysMessage", SecAggStep::kShareKeys, message.run_id, message.round));
  auto i = Find(id);
  if (!i || !clients_[*i].in_u1) {
    return Status::InvalidArgument("secagg server: ShareKeysMessage from " + id +
                                   ", who did not advertise");
  }
  Client& c = clients_[*i];
  if (c.sent_shares) {
    return Status::FailedPrecondition("secagg server: second ShareKeysMessage from " + id);
  }
  auto neighbours = graph_->Neighbours(c.u1_pos);
  if (message.shares.size() != neighbours.size()) {
    return Status::InvalidArgument("secagg server: " + id + " sent " +
                                   std::to_string(message.shares.size()) +
                                   " sealed shares, it has " +
                                   std::to_string(neighbours.size()) + " neighbours");
  }
  std::vector<int> slot_of(message.shares.size(), -1);
  std::vector<bool> filled(neighbours.size(), false);
  for (size_t k = 0; k < message.shares.size(); ++k) {
    const EncryptedShares& s = message.shares[k];
    auto r = Find(s.peer);
    if (!r || !clients_[*r].in_u1) {
      return Status::InvalidArgument("secagg server: " + id + " sealed shares for " + s.peer +
                                     ", who is not in U1");
    }
    const uint32_t rp = clients_[*r].u1_pos;
    auto it = std::lower_bound(neighbours.begin(), neighbours.end(), rp);
    if (it == neighbours.end() || *it != rp) {
      return Status::InvalidArgument("secagg server: " + id + " sealed shares for " + s.peer +
                                     ", who is not its neighbour");
    }
    const size_t slot = static_cast<size_t>(it - neighbours.begin());
    if (filled[slot]) {
      return Status::InvalidArgument("secagg server: " + id + " sealed shares for " + s.peer +
                                     " twice");
    }
    if (s.ciphertext.size() < kGcmNonceBytes + kGcmTagBytes + 1 ||
        s.ciphertext.size() > kSecAggMaxCiphertextBytes) {
      return Status::InvalidArgument("secagg server: " + id + " sealed shares of " +
                                     std::to_string(s.ciphertext.size()) + " bytes");
    }
    filled[slot] = true;
    slot_of[k] = static_cast<int>(slot);
  }
  c.outgoing.assign(neighbours.size(), Bytes());
  for (size_t k = 0; k < message.shares.size(); ++k) {
    c.outgoing[slot_of[k]] = message.shares[k].ciphertext;
  }
  c.sent_shares = true;
  return Status::Ok();
}

Status SecAggServer::CloseShareKeys() {
  if (step_ != SecAggStep::kShareKeys) {
    return Status::FailedPrecondition(std::string("secagg server: CloseShareKeys in step ") +
                                      SecAggStepName(step_));
  }
  for (uint32_t idx : u1_) {
    if (clients_[idx].sent_shares) u2_ids_.push_back(clients_[idx].id);
  }
  if (u2_ids_.size() < static_cast<size_t>(params_.threshold)) {
    return Abort(Status::FailedPrecondition(
        "secagg: " + std::to_string(u2_ids_.size()) + " clients shared keys, threshold " +
        std::to_string(params_.threshold)));
  }
  sum_.assign(params_.length, 0);
  step_ = SecAggStep::kMaskedInput;
  Log()->info("secagg run {} round {}: {} of {} clients shared keys", params_.run_id,
              params_.round, u2_ids_.size(), u1_.size());
  return Status::Ok();
}

StatusOr<MaskedInputRequest> SecAggServer::MaskedInputRequestFor(const std::string& id) const {
  if (step_ != SecAggStep::kMaskedInput) {
    return Status::FailedPrecondition(
        std::string("secagg server: MaskedInputRequestFor in step ") + SecAggStepName(step_));
  }
  auto i = Find(id);
  if (!i || !clients_[*i].sent_shares) {
    return Status::InvalidArgument("secagg server: MaskedInputRequestFor " + id +
                                   ", who did not share keys");
  }
  const uint32_t pos = clients_[*i].u1_pos;
  MaskedInputRequest request;
  request.run_id = params_.run_id;
  request.round = params_.round;
  for (uint32_t p : graph_->Neighbours(pos)) {
    const Client& sender = clients_[u1_[p]];
    if (!sender.sent_shares) continue;
    auto theirs = graph_->Neighbours(p);
    const size_t slot =
        static_cast<size_t>(std::lower_bound(theirs.begin(), theirs.end(), pos) - theirs.begin());
    request.shares.push_back({sender.id, sender.outgoing[slot]});
  }
  return request;
}

Status SecAggServer::OnMaskedInput(const std::string& id, std::span<const uint64_t> y) {
  if (step_ != SecAggStep::kMaskedInput) {
    return Status::FailedPrecondition(std::string("secagg server: masked input in step ") +
                                      SecAggStepName(step_));
  }
  auto i = Find(id);
  if (!i || !clients_[*i].sent_shares) {
    return Status::InvalidArgument("secagg server: masked input from " + id +
                                   ", who did not share keys");
  }
  Client& c = clients_[*i];
  if (c.masked) return Status::FailedPrecondition("secagg server: second masked input from " + id);
  TANDEM_RETURN_IF_ERROR(CheckVector(y, params_, "masked input"));
  AddMod(y, params_.modulus_bits, sum_);
  c.masked = true;
  return Status::Ok();
}

Status SecAggServer::CloseMaskedInput() {
  if (step_ != SecAggStep::kMaskedInput) {
    return Status::FailedPrecondition(std::string("secagg server: CloseMaskedInput in step ") +
                                      SecAggStepName(step_));
  }
  for (uint32_t idx : u1_) {
    const Client& c = clients_[idx];
    if (c.masked) {
      u3_ids_.push_back(c.id);
    } else if (c.sent_shares) {
      dropped_ids_.push_back(c.id);
    }
  }
  const size_t t = static_cast<size_t>(params_.threshold);
  if (u3_ids_.size() < t) {
    return Abort(Status::FailedPrecondition(
        "secagg: " + std::to_string(u3_ids_.size()) + " masked inputs, threshold " +
        std::to_string(t)));
  }
  // Every secret that will have to be reconstructed needs t surviving holders: a survivor's b_u
  // (held by it and its neighbours) and a dropped client's s^SK when it has surviving neighbours.
  for (uint32_t p = 0; p < u1_.size(); ++p) {
    const Client& c = clients_[u1_[p]];
    if (!c.sent_shares) continue;
    size_t holders = c.masked ? 1 : 0;
    for (uint32_t q : graph_->Neighbours(p)) holders += clients_[u1_[q]].masked ? 1 : 0;
    const bool needed = c.masked || holders > 0;
    if (needed && holders < t) {
      return Abort(Status::FailedPrecondition(
          "secagg: " + std::to_string(holders) + " survivors hold shares of " + c.id +
          "'s secrets (itself included), threshold " + std::to_string(t)));
    }
  }
  for (auto& c : clients_) std::vector<Bytes>().swap(c.outgoing);  // served their purpose
  step_ = SecAggStep::kUnmask;
  Log()->info("secagg run {} round {}: {} masked inputs, {} dropped after sharing keys",
              params_.run_id, params_.round, u3_ids_.size(), dropped_ids_.size());
  return Status::Ok();
}

StatusOr<UnmaskRequest> SecAggServer::UnmaskRequestFor(const std::string& id) const {
  if (step_ != SecAggStep::kUnmask) {
    return Status::FailedPrecondition(std::string("secagg server: UnmaskRequestFor in step ") +
                                      SecAggStepName(step_));
  }
  auto i = Find(id);
  if (!i || !clients_[*i].masked) {
    return Status::InvalidArgument("secagg server: UnmaskRequestFor " + id +
                                   ", who sent no masked input");
  }
  const uint32_t pos = clients_[*i].u1_pos;
  UnmaskRequest request;
  request.run_id = params_.run_id;
  request.round = params_.round;
  bool self_added = false;
  for (uint32_t p : graph_->Neighbours(pos)) {
    if (!self_added && p > pos) {
      request.survivors.push_back(id);
      self_added = true;
    }
    const Client& c = clients_[u1_[p]];
    if (c.masked) {
      request.survivors.push_back(c.id);
    } else if (c.sent_shares) {
      request.dropped.push_back(c.id);
    }
  }
  if (!self_added) request.survivors.push_back(id);
  return request;
}

Status SecAggServer::OnUnmask(const std::string& id, const UnmaskResponse& message) {
  TANDEM_RETURN_IF_ERROR(
      CheckMessage("UnmaskResponse", SecAggStep::kUnmask, message.run_id, message.round));
  auto i = Find(id);
  if (!i || !clients_[*i].masked) {
    return Status::InvalidArgument("secagg server: UnmaskResponse from " + id +
                                   ", who sent no masked input");
  }
  Client& c = clients_[*i];
  if (c.answered) return Status::FailedPrecondition("secagg server: second UnmaskResponse from " + id);
  // The answer must name exactly what this client was asked, in the same order.
  TANDEM_ASSIGN_OR_RETURN(UnmaskRequest asked, UnmaskRequestFor(id));
  auto check = [&](const std::vector<RevealedShare>& got, const std::vector<std::string>& want,
                   const char* kind) -> Status {
    if (got.size() != want.size()) {
      return Status::InvalidArgument("secagg server: " + id + " revealed " +
                                     std::to_string(got.size()) + " " + kind + " shares, asked " +
                                     std::to_string(want.size()));
    }
    for (size_t k = 0; k < got.size(); ++k) {
      if (got[k].owner != want[k]) {
        return Status::InvalidArgument("secagg server: " + id + " revealed a " + kind +
                                       " share of " + got[k].owner + " where " + want[k] +
                                       "'s was asked");
      }
      TANDEM_RETURN_IF_ERROR(
          CheckShare(got[k].share, c.u1_pos + 1, std::string("UnmaskResponse from ") + id));
    }
    return Status::Ok();
  };
  TANDEM_RETURN_IF_ERROR(check(message.self_mask_shares, asked.survivors, "self-mask"));
  TANDEM_RETURN_IF_ERROR(check(message.key_shares, asked.dropped, "key"));
  for (const auto& s : message.self_mask_shares) clients_[*Find(s.owner)].b_shares.push_back(s.share);
  for (const auto& s : message.key_shares) clients_[*Find(s.owner)].s_shares.push_back(s.share);
  c.answered = true;
  ++unmask_answers_;
  return Status::Ok();
}

StatusOr<std::vector<uint64_t>> SecAggServer::Finish() {
  if (step_ != SecAggStep::kUnmask) {
    return Status::FailedPrecondition(std::string("secagg server: Finish in step ") +
                                      SecAggStepName(step_));
  }
  const size_t t = static_cast<size_t>(params_.threshold);
  if (unmask_answers_ < t) {
    return Abort(Status::FailedPrecondition("secagg: " + std::to_string(unmask_answers_) +
                                            " unmask answers, threshold " + std::to_string(t)));
  }
  // All counts first: if any secret lacks t shares, nothing is reconstructed at all.
  std::vector<uint32_t> survivors, dropped;  // U1 positions
  for (uint32_t p = 0; p < u1_.size(); ++p) {
    const Client& c = clients_[u1_[p]];
    if (c.masked) {
      survivors.push_back(p);
      if (c.b_shares.size() < t) {
        return Abort(Status::FailedPrecondition(
            "secagg: " + std::to_string(c.b_shares.size()) + " shares of " + c.id +
            "'s self-mask seed, threshold " + std::to_string(t)));
      }
    } else if (c.sent_shares) {
      // Needed only if some survivor masked with it.
      for (uint32_t q : graph_->Neighbours(p)) {
        if (clients_[u1_[q]].masked) {
          dropped.push_back(p);
          break;
        }
      }
    }
  }
  for (uint32_t p : dropped) {
    const Client& c = clients_[u1_[p]];
    if (c.s_shares.size() < t) {
      return Abort(Status::FailedPrecondition(
          "secagg: " + std::to_string(c.s_shares.size()) + " shares of dropped " + c.id +
          "'s mask key, threshold " + std::to_string(t)));
    }
  }
  // A dropped client whose neighbours all dropped too needs nothing: no surviving input carries
  // a mask shared with it.

  // Reconstruct every secret before touching the sum, so a failure leaves it untouched.
  struct MaskToRemove {
    Key32 seed;
    bool subtract;
  };
  std::vector<MaskToRemove> masks;
  auto wipe_masks = [&] {
    for (auto& m : masks) WipeKey(m.seed);
  };
  for (uint32_t p : survivors) {
    Client& c = clients_[u1_[p]];
    auto b = ShamirCombine(c.b_shares, params_.threshold, kSecretBytes);
    if (!b.ok()) {
      wipe_masks();
      return Abort(b.status().WithContext("secagg: reconstructing " + c.id + "'s self-mask seed"));
    }
    MaskToRemove m{};
    std::memcpy(m.seed.data(), b->data(), kSecretBytes);
    Cleanse(b->data(), b->size());
    m.subtract = true;
    masks.push_back(m);
  }
  for (uint32_t p : dropped) {
    Client& v = clients_[u1_[p]];
    auto sk = ShamirCombine(v.s_shares, params_.threshold, kSecretBytes);
    if (!sk.ok()) {
      wipe_masks();
      return Abort(sk.status().WithContext("secagg: reconstructing dropped " + v.id + "'s mask key"));
    }
    Key32 s_private{};
    std::memcpy(s_private.data(), sk->data(), kSecretBytes);
    Cleanse(sk->data(), sk->size());
    auto pub = X25519PublicFromPrivate(s_private);
    if (!pub.ok() || *pub != v.s_public) {
      WipeKey(s_private);
      wipe_masks();
      return Abort(Status::Corruption("secagg: the mask key reconstructed for dropped " + v.id +
                                      " does not match the public key it advertised"));
    }
    for (uint32_t q : graph_->Neighbours(p)) {
      const Client& w = clients_[u1_[q]];
      if (!w.masked) continue;
      auto seed = PairKey(kMaskSeedLabel, params_, s_private, w.s_public, v.id, w.id);
      if (!seed.ok()) {
        WipeKey(s_private);
        wipe_masks();
        return Abort(seed.status().WithContext("secagg: mask of " + w.id + " with dropped " + v.id));
      }
      // w added PRG(s_wv) when v < w and subtracted it when v > w; undo that.
      masks.push_back({*seed, p < q});
    }
    WipeKey(s_private);
  }
  for (const auto& m : masks) {
    Status st = AddMask(m.seed, params_.modulus_bits, m.subtract, sum_);
    if (!st.ok()) {
      wipe_masks();
      return Abort(st.WithContext("secagg: removing masks"));
    }
  }
  wipe_masks();
  step_ = SecAggStep::kDone;
  Log()->info("secagg run {} round {}: unmasked the sum of {} inputs, recovered {} dropped clients' "
              "masks",
              params_.run_id, params_.round, survivors.size(), dropped.size());
  return std::move(sum_);
}

// ---- Client. ----

struct SecAggClient::Peer {
  std::string id;
  uint32_t x = 0;  // Shamir x: 1 + position in U1
  Key32 c_public{};
  Key32 s_public{};
  Key32 share_key{};    // HKDF(X25519(c_u^SK, c_v^PK)): seals shares both ways
  bool in_u2 = false;   // sent us its shares (named in the MaskedInputRequest)
  ShamirShare b_share;  // our share of its b_v
  ShamirShare s_share;  // our share of its s_v^SK
  enum Revealed : uint8_t { kNone, kSelfMask, kKey } revealed = kNone;
};

SecAggClient::SecAggClient(SecAggClient&&) noexcept = default;
SecAggClient& SecAggClient::operator=(SecAggClient&& other) noexcept {
  if (this != &other) {
    Wipe();
    params_ = other.params_;
    self_id_ = std::move(other.self_id_);
    step_ = other.step_;
    c_keys_ = other.c_keys_;
    s_keys_ = other.s_keys_;
    self_mask_seed_ = other.self_mask_seed_;
    self_x_ = other.self_x_;
    own_b_share_ = std::move(other.own_b_share_);
    own_s_share_ = std::move(other.own_s_share_);
    peers_ = std::move(other.peers_);
    answered_ = std::move(other.answered_);
    answer_ = std::move(other.answer_);
    other.Wipe();
  }
  return *this;
}
SecAggClient::~SecAggClient() { Wipe(); }

void SecAggClient::Wipe() {
  WipeKey(c_keys_.private_key);
  WipeKey(s_keys_.private_key);
  WipeKey(self_mask_seed_);
  WipeShare(own_b_share_);
  WipeShare(own_s_share_);
  for (auto& p : peers_) {
    WipeKey(p.share_key);
    WipeShare(p.b_share);
    WipeShare(p.s_share);
  }
  if (answer_) {
    for (auto& s : answer_->self_mask_shares) WipeShare(s.share);
    for (auto& s : answer_->key_shares) WipeShare(s.share);
  }
}

StatusOr<SecAggClient> SecAggClient::Create(const SecAggParams& params, std::string self_id) {
  TANDEM_RETURN_IF_ERROR(CheckParamsAlone(params));
  TANDEM_RETURN_IF_ERROR(ValidateSecAggClientId(self_id));
  SecAggClient client;
  client.params_ = params;
  client.self_id_ = std::move(self_id);
  return client;
}

Status SecAggClient::CheckMessage(const char* what, SecAggStep want, uint64_t run_id,
                                  uint64_t round) const {
  if (step_ != want) {
    return Status::FailedPrecondition("secagg client " + self_id_ + ": " + what + " in step " +
                                      SecAggStepName(step_));
  }
  if (run_id != params_.run_id || round != params_.round) {
    return Status::InvalidArgument("secagg client " + self_id_ + ": " + what + " for run " +
                                   std::to_string(run_id) + " round " + std::to_string(round) +
                                   ", this is run " + std::to_string(params_.run_id) +
                                   " round " + std::to_string(params_.round));
  }
  return Status::Ok();
}

std::optional<uint32_t> SecAggClient::FindPeer(const std::string& id) const {
  auto it = std::lower_bound(peers_.begin(), peers_.end(), id,
                             [](const Peer& p, const std::string& v) { return p.id < v; });
  if (it == peers_.end() || it->id != id) return std::nullopt;
  return static_cast<uint32_t>(it - peers_.begin());
}

StatusOr<AdvertiseKeys> SecAggClient::Advertise() {
  if (step_ != SecAggStep::kAdvertise) {
    return Status::FailedPrecondition("secagg client " + self_id_ + ": Advertise twice");
  }
  TANDEM_ASSIGN_OR_RETURN(X25519KeyPair c, GenerateX25519());
  TANDEM_ASSIGN_OR_RETURN(X25519KeyPair s, GenerateX25519());
  c_keys_ = c;
  s_keys_ = s;
  WipeKey(c.private_key);
  WipeKey(s.private_key);
  step_ = SecAggStep::kShareKeys;
  AdvertiseKeys m;
  m.run_id = params_.run_id;
  m.round = params_.round;
  m.c_public = c_keys_.public_key;
  m.s_public = s_keys_.public_key;
  return m;
}

StatusOr<ShareKeysMessage> SecAggClient::ShareKeys(const KeyList& keys) {
  TANDEM_RETURN_IF_ERROR(CheckMessage("KeyList", SecAggStep::kShareKeys, keys.run_id, keys.round));
  const std::string who = "secagg client " + self_id_ + ": key list ";
  const auto& u1 = keys.advertised;
  TANDEM_RETURN_IF_ERROR(
      ValidateSecAggParams(params_, u1.size()).WithContext("secagg client " + self_id_ + ": key list"));
  for (size_t i = 0; i < u1.size(); ++i) {
    TANDEM_RETURN_IF_ERROR(ValidateSecAggClientId(u1[i]));
    if (i > 0 && !(u1[i - 1] < u1[i])) {
      return Status::InvalidArgument(who + "is not sorted and unique at " + u1[i]);
    }
  }
  auto self_it = std::lower_bound(u1.begin(), u1.end(), self_id_);
  if (self_it == u1.end() || *self_it != self_id_) {
    return Status::InvalidArgument(who + "does not include this client");
  }
  const uint32_t self_pos = static_cast<uint32_t>(self_it - u1.begin());

  // The neighbourhood is not the server's to choose: recompute it from U1 and the graph seed.
  SecAggGraph graph(static_cast<uint32_t>(u1.size()), params_.neighbours, GraphSeed(params_));
  std::vector<uint32_t> expected(graph.Neighbours(self_pos).begin(),
                                 graph.Neighbours(self_pos).end());
  expected.insert(std::upper_bound(expected.begin(), expected.end(), self_pos), self_pos);
  if (keys.neighbours.size() != expected.size()) {
    return Status::InvalidArgument(who + "names " + std::to_string(keys.neighbours.size()) +
                                   " neighbours, the graph gives " +
                                   std::to_string(expected.size()));
  }
  if (expected.size() < static_cast<size_t>(params_.threshold)) {
    return Status::InvalidArgument(who + "gives a neighbourhood of " +
                                   std::to_string(expected.size()) + ", below the threshold");
  }
  std::vector<Key32> seen;
  seen.reserve(2 * expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    const PeerKeys& pk = keys.neighbours[k];
    if (pk.id != u1[expected[k]]) {
      return Status::InvalidArgument(who + "names " + pk.id + " where the graph gives " +
                                     u1[expected[k]]);
    }
    if (expected[k] == self_pos &&
        (pk.c_public != c_keys_.public_key || pk.s_public != s_keys_.public_key)) {
      return Status::InvalidArgument(who + "does not carry this client's own keys unchanged");
    }
    seen.push_back(pk.c_public);
    seen.push_back(pk.s_public);
  }
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) {
    return Status::InvalidArgument(who + "repeats a public key");
  }

  // Everything below may fail only inside OpenSSL; build it aside and commit at the end.
  std::vector<Peer> peers;
  peers.reserve(expected.size() - 1);
  std::vector<uint32_t> xs;
  xs.reserve(expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    xs.push_back(expected[k] + 1);
    if (expected[k] == self_pos) continue;
    const PeerKeys& pk = keys.neighbours[k];
    Peer p;
    p.id = pk.id;
    p.x = expected[k] + 1;
    p.c_public = pk.c_public;
    p.s_public = pk.s_public;
    peers.push_back(std::move(p));
  }
  auto wipe_peers = [&] {
    for (auto& p : peers) WipeKey(p.share_key);
  };
  for (auto& p : peers) {
    auto key = PairKey(kShareKeyLabel, params_, c_keys_.private_key, p.c_public, self_id_, p.id);
    if (!key.ok()) {
      wipe_peers();
      return key.status().WithContext(who + "key of " + p.id);
    }
    p.share_key = *key;
  }
  TANDEM_ASSIGN_OR_RETURN(Key32 b, RandomKey());
  auto b_shares = ShamirSplit(b, params_.threshold, xs);
  auto s_shares = ShamirSplit(s_keys_.private_key, params_.threshold, xs);
  auto wipe_all = [&] {
    wipe_peers();
    WipeKey(b);
    if (b_shares.ok()) for (auto& s : *b_shares) WipeShare(s);
    if (s_shares.ok()) for (auto& s : *s_shares) WipeShare(s);
  };
  if (!b_shares.ok() || !s_shares.ok()) {
    Status st = b_shares.ok() ? s_shares.status() : b_shares.status();
    wipe_all();
    return st.WithContext("secagg client " + self_id_ + ": sharing secrets");
  }
  ShareKeysMessage out;
  out.run_id = params_.run_id;
  out.round = params_.round;
  out.shares.reserve(peers.size());
  size_t peer_index = 0;
  for (size_t k = 0; k < expected.size(); ++k) {
    if (expected[k] == self_pos) continue;
    const Peer& p = peers[peer_index++];
    Bytes plain = SerializeSharePair((*b_shares)[k], (*s_shares)[k]);
    auto sealed = SealAesGcm(p.share_key, plain, ShareAad(params_, self_id_, p.id));
    Cleanse(plain.data(), plain.size());
    if (!sealed.ok()) {
      wipe_all();
      return sealed.status().WithContext("secagg client " + self_id_ + ": sealing for " + p.id);
    }
    out.shares.push_back({p.id, std::move(*sealed)});
  }
  // Commit.
  const size_t self_k = static_cast<size_t>(
      std::lower_bound(expected.begin(), expected.end(), self_pos) - expected.begin());
  own_b_share_ = std::move((*b_shares)[self_k]);
  own_s_share_ = std::move((*s_shares)[self_k]);
  for (auto& s : *b_shares) WipeShare(s);
  for (auto& s : *s_shares) WipeShare(s);
  self_mask_seed_ = b;
  WipeKey(b);
  self_x_ = self_pos + 1;
  peers_ = std::move(peers);  // already sorted: U1 is
  step_ = SecAggStep::kMaskedInput;
  return out;
}

Status SecAggClient::MaskInput(const MaskedInputRequest& request, std::span<uint64_t> x) {
  TANDEM_RETURN_IF_ERROR(
      CheckMessage("MaskedInputRequest", SecAggStep::kMaskedInput, request.run_id, request.round));
  TANDEM_RETURN_IF_ERROR(CheckVector(x, params_, "input"));
  const std::string who = "secagg client " + self_id_ + ": masked-input request ";
  if (request.shares.size() + 1 < static_cast<size_t>(params_.threshold)) {
    return Status::FailedPrecondition(who + "names " + std::to_string(request.shares.size()) +
                                      " neighbours that shared keys, below the threshold");
  }
  struct Received {
    uint32_t peer;
    ShamirShare b, s;
  };
  std::vector<Received> received;
  received.reserve(request.shares.size());
  std::vector<bool> named(peers_.size(), false);
  auto wipe_received = [&] {
    for (auto& r : received) {
      WipeShare(r.b);
      WipeShare(r.s);
    }
  };
  for (const auto& e : request.shares) {
    auto i = FindPeer(e.peer);
    if (!i) {
      wipe_received();
      return Status::InvalidArgument(who + "carries shares from " + e.peer +
                                     ", not a neighbour");
    }
    if (named[*i]) {
      wipe_received();
      return Status::InvalidArgument(who + "carries shares from " + e.peer + " twice");
    }
    named[*i] = true;
    // Opening under the key shared with e.peer and the AAD naming (e.peer -> self, this run and
    // round) proves the shares were sealed by that neighbour for this client in this round.
    auto plain = OpenAesGcm(peers_[*i].share_key, e.ciphertext, ShareAad(params_, e.peer, self_id_));
    if (!plain.ok()) {
      wipe_received();
      return plain.status().WithContext(who + "shares from " + e.peer);
    }
    Received r{*i, {}, {}};
    Status st = ParseSharePair(*plain, &r.b, &r.s);
    Cleanse(plain->data(), plain->size());
    if (st.ok()) st = CheckShare(r.b, self_x_, "shares from " + e.peer);
    if (st.ok()) st = CheckShare(r.s, self_x_, "shares from " + e.peer);
    if (!st.ok()) {
      WipeShare(r.b);
      WipeShare(r.s);
      wipe_received();
      return st.WithContext(who);
    }
    received.push_back(std::move(r));
  }
  // Pairwise mask seeds s_uv, all derived before x is touched.
  std::vector<std::pair<Key32, bool>> seeds;  // (seed, subtract)
  seeds.reserve(received.size());
  auto wipe_seeds = [&] {
    for (auto& s : seeds) WipeKey(s.first);
  };
  for (const auto& r : received) {
    const Peer& p = peers_[r.peer];
    auto seed = PairKey(kMaskSeedLabel, params_, s_keys_.private_key, p.s_public, self_id_, p.id);
    if (!seed.ok()) {
      wipe_seeds();
      wipe_received();
      return seed.status().WithContext(who + "mask with " + p.id);
    }
    // y = x + PRG(b_u) + sum_{v<u} PRG(s_uv) - sum_{v>u} PRG(s_uv)
    seeds.emplace_back(*seed, p.x > self_x_);
  }
  // Commit, then mask.
  for (auto& r : received) {
    Peer& p = peers_[r.peer];
    p.in_u2 = true;
    p.b_share = std::move(r.b);
    p.s_share = std::move(r.s);
  }
  step_ = SecAggStep::kUnmask;
  Status st = AddMask(self_mask_seed_, params_.modulus_bits, false, x);
  for (size_t k = 0; st.ok() && k < seeds.size(); ++k) {
    st = AddMask(seeds[k].first, params_.modulus_bits, seeds[k].second, x);
  }
  wipe_seeds();
  return st;
}

StatusOr<UnmaskResponse> SecAggClient::Unmask(const UnmaskRequest& request) {
  const std::string who = "secagg client " + self_id_ + ": unmask request ";
  if (step_ == SecAggStep::kDone) {
    if (answered_ && request == *answered_) return *answer_;
    return Status::FailedPrecondition(who + "differs from the one already answered");
  }
  TANDEM_RETURN_IF_ERROR(
      CheckMessage("UnmaskRequest", SecAggStep::kUnmask, request.run_id, request.round));
  // survivors and dropped must split exactly {self} and the neighbours in U2.
  std::vector<uint8_t> kind(peers_.size(), Peer::kNone);
  bool self_named = false;
  auto name = [&](const std::string& id, Peer::Revealed k) -> Status {
    if (id == self_id_) {
      if (k != Peer::kSelfMask) return Status::InvalidArgument(who + "names this client as dropped");
      if (self_named) return Status::InvalidArgument(who + "names this client twice");
      self_named = true;
      return Status::Ok();
    }
    auto i = FindPeer(id);
    if (!i || !peers_[*i].in_u2) {
      return Status::InvalidArgument(who + "names " + id + ", not a neighbour that shared keys");
    }
    if (kind[*i] != Peer::kNone) return Status::InvalidArgument(who + "names " + id + " twice");
    const auto revealed = peers_[*i].revealed;
    if (revealed != Peer::kNone && revealed != k) {
      return Status::FailedPrecondition(who + "asks for the other kind of share of " + id +
                                        " than was revealed");
    }
    kind[*i] = k;
    return Status::Ok();
  };
  for (const auto& id : request.survivors) TANDEM_RETURN_IF_ERROR(name(id, Peer::kSelfMask));
  for (const auto& id : request.dropped) TANDEM_RETURN_IF_ERROR(name(id, Peer::kKey));
  if (!self_named) return Status::InvalidArgument(who + "does not name this client a survivor");
  for (size_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i].in_u2 && kind[i] == Peer::kNone) {
      return Status::InvalidArgument(who + "leaves out " + peers_[i].id);
    }
  }
  if (request.survivors.size() < static_cast<size_t>(params_.threshold)) {
    return Status::FailedPrecondition(who + "names " + std::to_string(request.survivors.size()) +
                                      " survivors, below the threshold");
  }
  UnmaskResponse out;
  out.run_id = params_.run_id;
  out.round = params_.round;
  out.self_mask_shares.reserve(request.survivors.size());
  out.key_shares.reserve(request.dropped.size());
  for (const auto& id : request.survivors) {
    if (id == self_id_) {
      out.self_mask_shares.push_back({id, own_b_share_});
    } else {
      out.self_mask_shares.push_back({id, peers_[*FindPeer(id)].b_share});
    }
  }
  for (const auto& id : request.dropped) {
    out.key_shares.push_back({id, peers_[*FindPeer(id)].s_share});
  }
  for (size_t i = 0; i < peers_.size(); ++i) {
    if (kind[i] != Peer::kNone) peers_[i].revealed = static_cast<Peer::Revealed>(kind[i]);
  }
  answered_ = request;
  answer_ = out;
  step_ = SecAggStep::kDone;
  return out;
}

}  // namespace tandem::privacy

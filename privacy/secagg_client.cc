// The secure-aggregation client (see privacy/secagg_client.h): advertises two X25519 keys, seals
// its Shamir shares of b_u and s_u^SK for each neighbour (AES-256-GCM), masks its input with
// AES-256-CTR streams, and reveals shares for the unmasking (Bonawitz et al. 2017, Figure 4).
#include "privacy/secagg_client.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "privacy/fixed_point.h"

namespace tandem::privacy {

using namespace detail;

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

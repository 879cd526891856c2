// The secure-aggregation server (see privacy/secagg_server.h): collects keys, routes sealed shares,
// folds masked inputs into one running sum, and removes the masks from the shares its survivors
// reveal (Bonawitz et al. 2017, Figure 4, steps 0-4; SecAgg+ neighbourhoods of Bell et al. 2020).
#include "privacy/secagg_server.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/logging.h"
#include "privacy/fixed_point.h"

namespace tandem::privacy {

using namespace detail;

namespace {

std::shared_ptr<spdlog::logger> Log() { return GetLogger("privacy"); }

}  // namespace

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

}  // namespace tandem::privacy

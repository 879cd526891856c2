// The client side of one secure-aggregation round (Bonawitz et al. 2017; SecAgg+ of Bell et al.
// 2020): a state machine that owns no sockets, draws fresh keys, shares its secrets with its
// neighbours and masks its input; messages are secagg_codec.h.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "privacy/crypto.h"
#include "privacy/secagg_codec.h"
#include "privacy/secagg_params.h"
#include "privacy/shamir.h"

namespace tandem::privacy {

// The client side of one round. Private keys and secrets are wiped on destruction.
// A refused message (wrong step, wrong run or round, a key list or request that is not
// consistent with what this client knows) returns an error and leaves the state unchanged.
// Not thread-safe.
class SecAggClient {
 public:
  // Checks the parameters that do not depend on the cohort size, and the id.
  static StatusOr<SecAggClient> Create(const SecAggParams& params, std::string self_id);

  // Step 0: draws two fresh key pairs. Once.
  StatusOr<AdvertiseKeys> Advertise();
  // Step 1: checks the key list (U1 sorted and at least threshold long, this client in it with
  // its own keys unchanged, the neighbour list exactly the one the graph gives), draws b_u and
  // seals for each neighbour its shares of b_u and s_u^SK. Once.
  StatusOr<ShareKeysMessage> ShareKeys(const KeyList& keys);
  // Step 2: checks each ciphertext comes from a distinct neighbour and opens under the key shared
  // with it (so it is addressed to this client for this round), that at least threshold of its
  // neighbourhood (itself included) are in U2, then masks x in place. x: params.length words,
  // each < 2^modulus_bits. Once (masking twice against different U2 would leak x). A refusal
  // leaves x untouched; only an internal (OpenSSL) failure while masking leaves it partly masked.
  Status MaskInput(const MaskedInputRequest& request, std::span<uint64_t> x);
  // Step 3: checks survivors and dropped split exactly its neighbours in U2 (itself a survivor),
  // at least threshold survivors, and that it never revealed the other kind of share for any
  // peer named; answers with b shares for survivors and s^SK shares for the dropped. Answers one
  // request; the same request again gets the same answer, a different one is refused.
  StatusOr<UnmaskResponse> Unmask(const UnmaskRequest& request);

  SecAggStep step() const { return step_; }
  const std::string& id() const { return self_id_; }

  SecAggClient(SecAggClient&&) noexcept;
  SecAggClient& operator=(SecAggClient&&) noexcept;
  ~SecAggClient();

 private:
  struct Peer;
  SecAggClient() = default;
  Status CheckMessage(const char* what, SecAggStep want, uint64_t run_id, uint64_t round) const;
  // Index into peers_ of a neighbour id (not self), or nullopt.
  std::optional<uint32_t> FindPeer(const std::string& id) const;
  void Wipe();

  SecAggParams params_;
  std::string self_id_;
  SecAggStep step_ = SecAggStep::kAdvertise;
  X25519KeyPair c_keys_{};
  X25519KeyPair s_keys_{};
  Key32 self_mask_seed_{};  // b_u
  uint32_t self_x_ = 0;     // Shamir x: 1 + position in U1
  ShamirShare own_b_share_, own_s_share_;
  std::vector<Peer> peers_;  // neighbours (self excluded), sorted by id
  std::optional<UnmaskRequest> answered_;
  std::optional<UnmaskResponse> answer_;
};

}  // namespace tandem::privacy

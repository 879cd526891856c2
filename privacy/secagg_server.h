// The coordinator side of one secure-aggregation round (Bonawitz et al. 2017, the honest-but-
// curious server; SecAgg+ of Bell et al. 2020): a state machine that owns no sockets, consumes the
// clients' messages (secagg_codec.h) and returns the sum of the survivors' inputs mod 2^k.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "privacy/secagg_codec.h"
#include "privacy/secagg_graph.h"
#include "privacy/secagg_params.h"

namespace tandem::privacy {

// The coordinator side of one round. Memory O(length + cohort * degree): masked inputs are folded
// into one running sum as they arrive (never kept one by one).
// Every On*() validates the message and either accepts it or returns an error leaving the state
// exactly as it was: unknown or duplicate sender, wrong step (replayed or reordered messages),
// wrong run or round, wrong length, values >= 2^modulus_bits, shares addressed to a non-neighbour.
// A Close*() that finds fewer than `threshold` moves to kAborted; so does a failing Finish().
// Not thread-safe: the round engine calls it from one thread.
class SecAggServer {
 public:
  // `cohort`: the clients asked to take part (any order; duplicates are an error).
  static StatusOr<SecAggServer> Create(const SecAggParams& params,
                                       std::vector<std::string> cohort);

  Status OnAdvertise(const std::string& id, const AdvertiseKeys& message);
  // Fixes U1 (fails and aborts if |U1| < threshold) and the graph.
  Status CloseAdvertise();
  // For each client in advertised().
  StatusOr<KeyList> KeyListFor(const std::string& id) const;

  Status OnShareKeys(const std::string& id, const ShareKeysMessage& message);
  // Fixes U2 (fails and aborts if |U2| < threshold).
  Status CloseShareKeys();
  // For each client in share_senders().
  StatusOr<MaskedInputRequest> MaskedInputRequestFor(const std::string& id) const;

  // y: params.length words, each < 2^modulus_bits. Added into the running sum at once.
  Status OnMaskedInput(const std::string& id, std::span<const uint64_t> y);
  // Fixes U3. Fails and aborts if |U3| < threshold, or (SecAgg+) some survivor or dropped
  // client has fewer than threshold surviving neighbours to answer for it.
  Status CloseMaskedInput();
  // For each client in survivors().
  StatusOr<UnmaskRequest> UnmaskRequestFor(const std::string& id) const;

  Status OnUnmask(const std::string& id, const UnmaskResponse& message);
  // Checks, before reconstructing anything, that every survivor's b and every dropped client's
  // s^SK has >= threshold shares from the clients that answered; if not, aborts with nothing
  // unmasked. Then reconstructs (checking each s^SK against its advertised public key), removes
  // the masks and returns sum_{u in U3} x_u mod 2^modulus_bits (length words). Once.
  StatusOr<std::vector<uint64_t>> Finish();

  SecAggStep step() const { return step_; }
  const SecAggParams& params() const { return params_; }
  // Each sorted; filled as the steps close (empty before).
  const std::vector<std::string>& advertised() const { return u1_ids_; }     // U1
  const std::vector<std::string>& share_senders() const { return u2_ids_; }  // U2
  const std::vector<std::string>& survivors() const { return u3_ids_; }      // U3
  const std::vector<std::string>& dropped() const { return dropped_ids_; }   // U2 \ U3

  SecAggServer(SecAggServer&&) noexcept;
  SecAggServer& operator=(SecAggServer&&) noexcept;
  ~SecAggServer();

 private:
  struct Client;
  SecAggServer() = default;
  // Index into clients_ of an id in the cohort, or nullopt.
  std::optional<uint32_t> Find(const std::string& id) const;
  Status CheckMessage(const char* what, SecAggStep want, uint64_t run_id, uint64_t round) const;
  Status Abort(Status why);

  SecAggParams params_;
  SecAggStep step_ = SecAggStep::kAdvertise;
  std::vector<Client> clients_;  // the cohort, sorted by id
  // Indices into clients_ of U1 in order; a client's U1 position p gives Shamir x = p + 1 and
  // its node in graph_.
  std::vector<uint32_t> u1_;
  std::unique_ptr<SecAggGraph> graph_;
  std::vector<uint64_t> sum_;  // running sum of masked inputs, length words
  size_t unmask_answers_ = 0;
  std::vector<std::string> u1_ids_, u2_ids_, u3_ids_, dropped_ids_;
};

}  // namespace tandem::privacy

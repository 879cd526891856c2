// The client's half of the privacy pipeline (DESIGN.md "contributions", docs/privacy.md): a
// TaskHandler that wraps any other. When the coordinator marks a task as a contribution task
// (parameter `privacy.contribution` names the result tensor), the inner handler's result goes
// through
//
//   clip (L2) -> distributed noise -> fixed point -> secure-aggregation masks
//
// before it leaves: with DP, the contribution is clipped to the coordinator's clip norm and
// weighted 1, and the adaptive-clipping bit says whether it was left unclipped; with distributed
// noise, this client adds its share of the noise; with secure aggregation, the encoded
// contribution is kept here and uploaded masked in the round's secagg.mask step, and the client
// runs its half of Bonawitz et al. (secagg.advertise/share/mask/unmask). The inner handler needs
// no privacy code.
//
// Restarts (docs/privacy.md, "Restarts"): the noise of a contribution is drawn from a stream
// derived from this process's secret noise key and (the run's noise id, round, task), so a round
// the coordinator replays after a restart gets the same noise. To keep that safe, this handler
// never puts one noise on two different updates, and never helps unmask one round's contribution
// into two different sums.
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "client/session.h"
#include "privacy/noise_stream.h"
#include "privacy/secagg.h"
#include "privacy/secure_rng.h"

namespace tandem {

class PrivateTaskHandler : public TaskHandler {
 public:
  // `inner` is borrowed. `noise_key` makes the noise reproducible (tests only); without it the
  // key is drawn from the operating system when first needed (or derived from
  // TANDEM_NOISE_KEY and the client index, privacy/noise_stream.h) and kept for the life of this
  // object, so it outlives coordinator restarts but not a restart of the client.
  explicit PrivateTaskHandler(TaskHandler* inner,
                              std::optional<privacy::SecureRng::Key> noise_key = std::nullopt);
  ~PrivateTaskHandler() override;
  PrivateTaskHandler(const PrivateTaskHandler&) = delete;
  PrivateTaskHandler& operator=(const PrivateTaskHandler&) = delete;

  std::vector<std::string> Capabilities() const override;
  void OnWelcome(uint32_t client_index) override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  // Clips, noises and (with secure aggregation) encodes the inner result's contribution.
  Status Protect(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result);
  Status RunSecAgg(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result);
  StatusOr<privacy::SecureRng::Key> NoiseKey();
  // Refuses a (run, round, slot) seen before with a different digest; remembers it otherwise.
  // `what` names the slot in the error.
  struct Seen {
    privacy::NoiseRunId run;
    uint64_t round = 0;
    std::string slot;
    privacy::Key32 digest{};
  };
  static Status CheckOnce(std::deque<Seen>* seen, Seen entry, const std::string& what);

  TaskHandler* inner_;
  std::optional<privacy::SecureRng::Key> noise_key_;
  uint32_t client_index_ = 0xFFFFFFFFu;
  // What this process has released, per (noise run, round): the digest of each clipped update it
  // noised (by task), and the survivor/dropout split of each round it helped unmask. A few rounds
  // are enough: the coordinator only ever replays the round after its last checkpoint.
  static constexpr size_t kSeenRounds = 16;
  std::deque<Seen> noised_, unmasked_;
  std::optional<privacy::NoiseRunId> contribution_run_;  // of the round in progress
  // Secure aggregation of the round in progress: the encoded contribution waiting to be masked,
  // and this client's protocol state. Both are dropped when a new round begins.
  uint64_t round_ = 0;
  std::optional<std::vector<uint64_t>> pending_;
  int modulus_bits_ = 64;
  std::optional<privacy::SecAggClient> secagg_;
};

}  // namespace tandem

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
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "client/session.h"
#include "privacy/secagg.h"
#include "privacy/secure_rng.h"

namespace tandem {

class PrivateTaskHandler : public TaskHandler {
 public:
  // `inner` is borrowed. `noise_key` makes the noise reproducible (tests only).
  explicit PrivateTaskHandler(TaskHandler* inner,
                              std::optional<privacy::SecureRng::Key> noise_key = std::nullopt);

  std::vector<std::string> Capabilities() const override;
  void OnWelcome(uint32_t client_index) override { inner_->OnWelcome(client_index); }
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  // Clips, noises and (with secure aggregation) encodes the inner result's contribution.
  Status Protect(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result);
  Status RunSecAgg(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result);

  TaskHandler* inner_;
  std::optional<privacy::SecureRng> noise_rng_;
  std::optional<privacy::SecureRng::Key> noise_key_;
  // Secure aggregation of the round in progress: the encoded contribution waiting to be masked,
  // and this client's protocol state. Both are dropped when a new round begins.
  uint64_t round_ = 0;
  std::optional<std::vector<uint64_t>> pending_;
  int modulus_bits_ = 64;
  std::optional<privacy::SecAggClient> secagg_;
};

}  // namespace tandem

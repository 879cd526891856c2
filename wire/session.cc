// Per-peer replay, staleness, run and direction checks; see wire/session.h.
#include "wire/session.h"

#include <algorithm>
#include <string>

namespace tandem::wire {

SessionValidator::SessionValidator(Role receiver, uint64_t run_id)
    : receiver_(receiver), run_id_(run_id) {}

Status SessionValidator::Check(const Message& message) const {
  const MessageType type = message.type();
  const Envelope& e = message.envelope;
  const std::string what(MessageTypeName(type));
  if (!ReceivedBy(type, receiver_)) {
    return Status::Corruption(what + " is never sent to a " +
                              (receiver_ == Role::kCoordinator ? "coordinator" : "client"));
  }
  const bool unjoined_hello = type == MessageType::kHello && e.run_id == 0;
  if (run_id_ != 0 && e.run_id != run_id_ && !unjoined_hello) {
    return Status::Corruption(what + " for run " + std::to_string(e.run_id) + ", this is run " +
                              std::to_string(run_id_));
  }
  if (last_sequence_ && e.sequence <= *last_sequence_) {
    return Status::FailedPrecondition(what + " replayed or out of order: sequence " +
                                      std::to_string(e.sequence) + " after " +
                                      std::to_string(*last_sequence_));
  }
  if (e.round < current_round_) {
    return Status::FailedPrecondition(what + " for stale round " + std::to_string(e.round) +
                                      " (current round " + std::to_string(current_round_) + ")");
  }
  return Status::Ok();
}

Status SessionValidator::Accept(const Message& message) {
  TANDEM_RETURN_IF_ERROR(Check(message));
  const Envelope& e = message.envelope;
  last_sequence_ = e.sequence;
  current_round_ = std::max(current_round_, e.round);
  if (run_id_ == 0 && e.run_id != 0) run_id_ = e.run_id;
  return Status::Ok();
}

void SessionValidator::AdvanceRound(uint64_t round) {
  current_round_ = std::max(current_round_, round);
}

}  // namespace tandem::wire

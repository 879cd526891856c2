// Per-peer validation of decoded messages: the checks that need session state. A message from a
// peer is accepted only if it is meant for this side, belongs to this run, is not a replay and is
// not for a round that has closed. See docs/protocol.md "Validation".
#pragma once

#include <cstdint>
#include <optional>

#include "core/status.h"
#include "wire/message.h"
#include "wire/protocol.h"

namespace tandem::wire {

// One per peer and session (a reconnect that sends a new Hello starts a new validator, because
// the peer's sequence numbers restart). Not thread-safe; used from that peer's receive path.
class SessionValidator {
 public:
  // `receiver`: the side this validator runs on. `run_id`: the run this side belongs to, or 0 if
  // it does not know yet (a client before its Welcome); see Accept().
  SessionValidator(Role receiver, uint64_t run_id);

  // Checks `message` against the session and, only if it passes, records it: its sequence becomes
  // the last seen, its round raises the current round, and (for a validator built with run id 0)
  // the first accepted message fixes the run id. Rejects, naming the reason (all Corruption, or
  // FailedPrecondition for a stale round / replay so callers can tell them from garbage):
  //  - a type only the other side receives (a client sending TaskAssign);
  //  - a run id other than this session's (a Hello may carry 0: a client that has not joined);
  //  - a sequence number not greater than the last accepted one (replay, duplicate, reorder);
  //  - a round below the current round (stale: that round has closed).
  Status Accept(const Message& message);

  // The same checks without recording anything.
  Status Check(const Message& message) const;

  // Called by the owner when it moves to a new round; messages for earlier rounds become stale.
  // Never lowers the round.
  void AdvanceRound(uint64_t round);

  uint64_t run_id() const { return run_id_; }
  uint64_t current_round() const { return current_round_; }
  std::optional<uint64_t> last_sequence() const { return last_sequence_; }

 private:
  Role receiver_;
  uint64_t run_id_;
  uint64_t current_round_ = 0;
  std::optional<uint64_t> last_sequence_;
};

}  // namespace tandem::wire

// A client's session with the coordinator: join with Hello, answer tasks through a TaskHandler,
// and keep going through coordinator restarts and network stalls (re-join with exponential
// backoff). Heartbeats are the transport's job (its I/O thread keeps them flowing while a task
// runs here for minutes).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "wire/message.h"

namespace tandem {

namespace wire {
class Client;
}

// The client half of an algorithm: runs the task kinds it offers.
class TaskHandler {
 public:
  virtual ~TaskHandler() = default;
  // Task kinds this client can run; sent in Hello.
  virtual std::vector<std::string> Capabilities() const = 0;
  // Called once the coordinator has accepted the client, with the index it knows it by.
  virtual void OnWelcome(uint32_t client_index) {}
  // Runs one task of round `round` and fills `result` (the contribution). An error is reported
  // to the coordinator as a failed task; it never ends the session.
  virtual Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) = 0;
};

struct SessionOptions {
  std::string agent = "tandem/0.1.0";
  double hello_backoff_s = 0.25;      // first wait before reconnecting to a silent coordinator
  double hello_backoff_max_s = 8.0;   // the wait doubles up to this
  double give_up_s = 600.0;           // without a coordinator for this long, stop with an error
  const std::atomic<bool>* stop = nullptr;  // when set and true, the session ends (OK) at once
};

struct SessionSummary {
  uint64_t tasks_done = 0;
  uint64_t tasks_failed = 0;
  uint64_t joins = 0;  // 1 + the number of re-joins
};

// Runs until the coordinator says Bye (the run is over: OK) or is unreachable for give_up_s.
StatusOr<SessionSummary> RunSession(wire::Client* link, TaskHandler* handler,
                                    const SessionOptions& options);

}  // namespace tandem

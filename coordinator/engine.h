// The round engine of DESIGN.md "Round protocol": select a cohort, dispatch a task, collect results
// until `min_results` are in and the deadline has passed (or all are in), hand each result to the
// algorithm as it arrives, chain the round's tasks, then evaluate and checkpoint. It owns no
// sockets: it consumes events (joins, losses, messages, time) and sends through an Outbox, so tests
// drive it in-process and the same engine runs over inproc://, ipc:// and tcp://.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/rng.h"
#include "coordinator/algorithm.h"
#include "core/status.h"
#include "wire/message.h"

namespace tandem {

class Config;

// How the engine reaches clients. The coordinator program implements it over wire::Server; tests
// implement it with queues.
class Outbox {
 public:
  virtual ~Outbox() = default;
  // Sends `message` to `peer`; the engine fills round and task id, the transport the rest.
  // An error means the peer is gone (the engine counts it as dropped).
  virtual Status Send(const std::string& peer, wire::Message message) = 0;
  // Sends one message to many peers; the transport may encode it once for all (the global model
  // going to a cohort of 100 must not be copied 100 times). Peers that cannot be reached are
  // appended to *unreachable.
  virtual Status Broadcast(const std::vector<std::string>& peers, wire::Message message,
                           std::vector<std::string>* unreachable) {
    for (const auto& peer : peers) {
      if (!Send(peer, message).ok()) unreachable->push_back(peer);
    }
    return Status::Ok();
  }
  // Messages stamped with an earlier round are stale from now on.
  virtual void AdvanceRound(uint64_t round) {}
  // Bytes moved so far, for the metrics (0 when unknown).
  virtual uint64_t BytesSent() const { return 0; }
  virtual uint64_t BytesReceived() const { return 0; }
};

// The `[federation]` keys the engine reads.
struct EngineConfig {
  int64_t rounds = 5;
  int expected_clients = 4;      // federation.clients
  int cohort = 0;                // clients per round; 0 = use cohort_fraction
  double cohort_fraction = 1.0;  // of expected_clients, rounded up
  int min_results = 0;           // 0 = the whole cohort
  double round_deadline_s = 300;
  double wait_for_clients_s = 120;  // how long a round waits for a full cohort to be connected
  // Poisson sampling (set by the privacy pipeline, not a [federation] key): once all
  // expected_clients are connected, each joins a round's cohort independently with probability
  // cohort_size() / expected_clients, as DP accounting of a sampled mechanism assumes.
  bool poisson_sampling = false;
};

// Reads federation.rounds, clients, cohort, cohort_fraction, min_results, round_deadline_s,
// wait_for_clients_s, and checks they fit together.
StatusOr<EngineConfig> EngineConfigFromConfig(const Config& config);
// Clients per round (the expected number under Poisson sampling), and the results a task needs.
int CohortSize(const EngineConfig& config);
int MinResults(const EngineConfig& config);

// An upload announced before its chunks arrive (the contribution fields of a wire ChunkOffer,
// docs/protocol.md "Streamed contributions").
struct UploadOffer {
  uint64_t message_id = 0;  // the result's sequence number; its completed message carries it
  uint64_t round = 0;
  uint64_t task_id = 0;
  double weight = 0.0;      // the result's weight
  uint64_t values = 0;      // float32 values in its contribution tensor
};

// What the engine keeps across a restart, besides the algorithm's state.
struct EngineState {
  uint64_t next_round = 1;  // rounds are numbered from 1; round 0 is the initial evaluation
  uint64_t next_task_id = 1;
  std::string rng_state;
};

class RoundEngine {
 public:
  // `now` gives seconds on a monotonic clock (tests pass a fake one). `on_round_end` is called
  // after each completed or aborted round with its metrics line (the program writes it and
  // checkpoints); an error from it stops the engine.
  using RoundEndFn = std::function<Status(uint64_t round, const std::map<std::string, double>&)>;
  RoundEngine(EngineConfig config, ServerAlgorithm* algorithm, Outbox* outbox,
              std::function<double()> now, uint64_t seed);

  void SetRoundEndCallback(RoundEndFn fn) { on_round_end_ = std::move(fn); }
  const EngineState& state() const { return state_; }
  void RestoreState(const EngineState& state);

  // Events from the transport.
  void OnJoined(const std::string& peer, const std::vector<std::string>& capabilities);
  void OnLost(const std::string& peer);
  // The launcher saw `peer`'s process end (coordinator/coordinator.h, exited_clients): unlike a
  // lost connection, it will not come back by itself. The engine drops it at once, stops
  // counting it among the clients a round waits for (wait_for_clients_s) and shrinks later
  // cohorts to the clients left. Joining again (a restarted process) makes it expected again.
  // Under Poisson sampling each remaining client keeps the sampling rate q the accountant is
  // told (q = cohort / federation.clients), so ε stays an upper bound; the expected cohort
  // shrinks, which a warning says.
  void OnClientExited(const std::string& peer);
  void OnMessage(const std::string& peer, const wire::Message& message);

  // Streamed contributions (docs/protocol.md "Streamed contributions"). When a result's upload
  // is offered, the engine decides at once whether it would accept the result (this round's open
  // contribution task, a member that has not answered, a client that has not voided a round) and
  // asks the algorithm for a stream. True: the transport hands the contribution's values to
  // OnUploadValues as its chunks arrive, and then the result without them to OnMessage. False:
  // the upload comes whole and OnMessage judges it as any other result.
  bool OnUploadOffered(const std::string& peer, const UploadOffer& offer);
  // The next values of a streamed upload, starting at value `offset`. Values the stream refuses
  // (wrong offset, too many, not finite, too large) fail the upload as OnUploadFailed does.
  void OnUploadValues(const std::string& peer, uint64_t message_id, uint64_t offset,
                      std::span<const float> values);
  // A streamed upload will not complete (a malformed or missing chunk, a stall). Nothing folded
  // yet: the result is rejected and nothing changes. Values already folded cannot be taken out
  // of the fixed-point sum, so the round is voided: it ends at once, aborted, its update not
  // applied, its metrics line carrying voided = 1 and the log naming the client; that client's
  // later uploads are never streamed again (they come whole), so it can void at most one round.
  // A lost or restarted peer fails its open stream the same way.
  void OnUploadFailed(const std::string& peer, uint64_t message_id, const std::string& reason);
  // Clients whose streamed upload voided a round.
  const std::set<std::string>& stream_barred() const { return stream_barred_; }
  // Advances time: starts rounds, closes tasks whose deadline passed. Call it after every event
  // and at least every NextWakeSeconds().
  void Tick();
  // Seconds until the engine next needs a Tick without any event (bounded, >= 0).
  double NextWakeSeconds() const;

  bool done() const { return done_; }
  // Non-OK when the engine stopped because of an error (e.g. too few clients for too long).
  const Status& status() const { return status_; }
  // Stops after the current state; sends nothing more.
  void Stop(Status reason);
  // Why the run ended before its last round without an error (the algorithm's StopBeforeRound);
  // empty otherwise.
  const std::string& stop_reason() const { return stop_reason_; }

  size_t live_clients() const { return clients_.size(); }
  // federation.clients less those whose process has ended for good.
  int expected_clients() const;
  int cohort_size() const;
  int min_results() const;
  // The round in progress, or the last one (0 before the first): what messages are stamped with.
  uint64_t current_round() const { return round_; }

 private:
  enum class Phase { kWaiting, kTask, kDone };

  void TryStartRound();
  void Dispatch(TaskSpec spec);
  void MaybeCloseTask(bool deadline_passed);
  void CloseTask();
  // A streamed result's remainder: finishes its stream and accepts the result.
  void FinishStream(const std::string& peer, const wire::Message& message,
                    const wire::TaskResult& result);
  void FailStream(const std::string& peer, const std::string& reason);
  // Abandons every open stream (before the algorithm sees the task closed or the round end).
  void DropStreams();
  bool StreamsInProgress() const;  // values folded, neither finished nor failed
  void CountResults();  // the closing task's accepted results into the round's counts
  // Tells the open task's members that have not answered to stop; returns who they were.
  std::vector<std::string> CancelUnanswered(const std::string& reason);
  void FinishRound(bool completed, const std::string& why);
  void Fail(Status status);
  std::vector<ClientInfo> Eligible() const;  // live clients that offer the required kinds
  std::vector<ClientInfo> SelectCohort();

  EngineConfig config_;
  ServerAlgorithm* algorithm_;
  Outbox* outbox_;
  std::function<double()> now_;
  RoundEndFn on_round_end_;
  Rng rng_;
  EngineState state_;
  Status status_ = Status::Ok();
  std::string stop_reason_;
  bool done_ = false;
  Phase phase_ = Phase::kWaiting;
  double waiting_since_ = -1.0;
  double last_wait_log_ = -1.0;

  std::map<std::string, ClientInfo> clients_;  // live, by name
  std::set<std::string> exited_;               // processes that ended; not waited for

  // The open task.
  struct OpenTask {
    uint64_t id = 0;
    std::string kind;
    double started = 0.0;
    double deadline = 0.0;
    uint64_t bytes_sent_at_start = 0, bytes_received_at_start = 0;  // the outbox's, at dispatch
    std::map<std::string, ClientInfo> members;  // who got it
    std::set<std::string> answered;             // accepted, failed or lost
    TaskReport report;
    std::optional<ContributionSpec> contribution;  // the task's, when its results are ones
  };
  // A result being folded in as its upload arrives; of the open task.
  struct Stream {
    uint64_t message_id = 0;
    uint64_t task_id = 0;
    std::unique_ptr<ResultStream> sink;  // null once failed
  };
  std::map<std::string, Stream> streams_;   // by peer
  std::set<std::string> stream_barred_;     // voided a round: their uploads come whole
  OpenTask task_;
  std::set<uint64_t> closed_tasks_;  // of this run, for telling late results from unknown ones

  // The round in progress.
  uint64_t round_ = 0;
  double round_started_ = 0.0;
  std::map<std::string, double> round_metrics_;
  // round_results_: results the round's first task accepted (the clients whose work the round
  // used); each task's own count is in round_metrics_ as task_results.<kind>.
  size_t round_cohort_ = 0, round_results_ = 0, round_dropped_ = 0, round_rejected_ = 0;
  bool round_first_task_closed_ = false;
  size_t late_ = 0;  // late results since the previous metrics line
  uint64_t bytes_sent_at_start_ = 0, bytes_received_at_start_ = 0;
};

// "client-3" -> 3; -1 for any other name.
int ClientIndexFromName(const std::string& name);

}  // namespace tandem

// The cloud inference service (DESIGN.md "Routing and collaborative inference"): answers
// ServeRequests — completions and speculative-decoding verifications — from a snapshot of the
// cloud model, on a worker thread of its own, so that whoever receives the requests (the
// coordinator's round loop, or `tandem serve`) never waits for a model. It owns no socket: it takes
// decoded messages and hands its replies to a sender, so tests drive it in-process and the same
// service runs inside the coordinator and alone.
//
// Scheduling: one worker advances a batch of up to max_batch requests together, in arrival order
// (continuous batching): each pass feeds every request's next tokens through the model at once
// (BatchDecoder: one matrix product per linear layer over all their rows) — a completion's prompt
// and then one token per pass until it ends, a verification's context and whole draft in a single
// pass — and between passes, finished requests leave and queued ones join. Requests that arrive
// while the batch is full wait in the queue; the receiving thread only decodes, checks and
// enqueues. Each request keeps its own randomness (a generator seeded by its seed) and its own
// key/value cache — the cache an earlier request left that shares the longest prefix with it, so
// a device that keeps verifying the same text pays only its new tokens — and on one compute
// thread its logits are the same bits whatever shares its passes and whatever was cached
// (models/gpt_workspace.h, BatchDecoder): the replies are those of max_batch = 1, one request at
// a time. docs/benchmarks.md "The inference service" measures it.
//
// Limits, each refused with an Error carrying the request id and changing nothing but the
// refusal counts (`received`, `refused`): no call against the budget, no queue entry, no compute:
// a request that does not decode or is out of range (kBadMessage), a client past
// max_calls_per_client (kRefused), one with max_inflight_per_client requests waiting or running or
// a full queue (kOverloaded), and a request still queued when its deadline passes (kStale: late,
// never computed). The deadline bounds the wait in the queue: a request that has joined the batch
// is completed and answered even if its deadline passes meanwhile.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"
#include "models/gpt_weights.h"
#include "serve/schema.h"
#include "wire/message.h"

namespace tandem::serve {

struct ServiceOptions {
  // Calls a client may have accepted in all, late ones (never computed) not counted; 0 = no limit.
  int64_t max_calls_per_client = 0;
  int max_inflight_per_client = 4;   // its requests queued or being served at once, >= 1
  int max_queue = 256;               // requests queued at once across clients, >= 1
  uint32_t default_deadline_ms = 30000;  // for a request whose deadline_ms is 0
  int max_new_tokens = 256;  // a completion's max_tokens
  int max_gamma = 64;        // a verification's draft length
  // Requests advanced together in one pass, >= 1 (1: one after another).
  int max_batch = 8;
  // Compute threads of the worker (OpenMP, set on the worker thread itself: a new thread does not
  // inherit its creator's setting). Decoding at tandem's sizes is fastest on one thread, which
  // leaves the other cores to the rounds; on more, OpenBLAS splits a pass's rows among them and a
  // reply's last bits may depend on what shared its passes.
  int threads = 1;
  // Fault injection for tests and benchmarks: called on the worker before each request joins the
  // batch, after its deadline was checked (a slow model, a stalled worker). Null: nothing.
  std::function<void()> before_compute;
  Status Validate() const;
};

// Counts since the service started, in total or for one client.
struct ServiceStats {
  uint64_t received = 0;  // ServeRequests handed to Submit
  uint64_t accepted = 0;  // of those, queued (less `late`, they count against max_calls_per_client)
  uint64_t served = 0;    // answered with a ServeReply
  uint64_t refused = 0;   // answered at once with an Error (bad, over a limit)
  uint64_t late = 0;      // accepted, then refused as past their deadline before computing
  uint64_t completions = 0, verifications = 0;  // of the served
  double queue_seconds = 0.0;    // summed over served requests: arrival to start of compute
  double compute_seconds = 0.0;  // summed over served requests: joining the batch to the reply
  uint64_t max_queued = 0;       // the most requests ever waiting at once (totals only)
  uint64_t passes = 0;           // passes of the model over the batch (totals only)
  uint64_t max_batched = 0;      // the most requests in one pass (totals only)
  uint64_t pass_requests = 0;    // requests in each pass, summed (/ passes: the mean batch; totals)
  uint64_t reused_tokens = 0;    // tokens found cached from earlier requests (totals only)
};

// Sends one reply to a peer; must be thread-safe (wire::Server::Send is).
using ReplySender = std::function<Status(const std::string& peer, wire::Message message)>;

class InferenceService {
 public:
  // `weights`: the cloud model's snapshot, shared and never written while served. Errors:
  // invalid options.
  static StatusOr<std::unique_ptr<InferenceService>> Create(
      std::shared_ptr<const GptWeights> weights, ServiceOptions options, ReplySender send);
  // Stops the worker after the pass it is computing; drops the queue and the batch unanswered.
  ~InferenceService();
  InferenceService(const InferenceService&) = delete;
  InferenceService& operator=(const InferenceService&) = delete;

  // Thread-safe; never waits for the model. `message` must hold a ServeRequest (checked).
  // Queues it, or answers at once with an Error as the header says.
  void Submit(const std::string& peer, const wire::Message& message);

  // Thread-safe. The model served from the next request on (a new round's cloud model). It must
  // have the same vocabulary; requests already decoded against the old context are still served.
  void SetWeights(std::shared_ptr<const GptWeights> weights);

  ServiceStats stats() const;
  ServiceStats peer_stats(const std::string& peer) const;  // zeros for an unknown peer
  std::map<std::string, ServiceStats> all_peer_stats() const;  // every client that asked
  RequestLimits limits() const;

 private:
  struct Pending {
    std::string peer;
    uint64_t id = 0;
    Request request;
    double arrived = 0.0;   // seconds on the service's clock
    double deadline = 0.0;  // likewise
  };
  InferenceService(std::shared_ptr<const GptWeights> weights, ServiceOptions options,
                   ReplySender send);
  void Refuse(const std::string& peer, uint64_t id, wire::ErrorCode code, const std::string& why);
  struct Active;
  void WorkerLoop();
  // Takes queued requests into the batch while it has room; refuses the late ones. Returns
  // false when the service stops.
  bool Admit(std::vector<Active>* batch);
  // Sets a request up to join the batch (its workspace and first tokens), or says why it cannot
  // be served by the model being served.
  Status Start(Active* a);
  // One pass over the batch; answers and removes the requests that finish.
  void Step(std::vector<Active>* batch);
  // Updates the counts of a request that leaves the service.
  void Finish(const Pending& job, bool served, bool late, double queue_s, double compute_s);
  double Now() const;

  const ServiceOptions options_;
  const ReplySender send_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();

  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::shared_ptr<const GptWeights> weights_;  // guarded by mu_; the worker takes a reference
  RequestLimits limits_;
  std::deque<Pending> queue_;
  std::map<std::string, int> inflight_;                   // per peer, queued or computing
  std::map<std::string, std::set<uint64_t>> inflight_ids_;  // per peer
  ServiceStats totals_;
  std::map<std::string, ServiceStats> per_peer_;

  struct WorkerState;
  std::unique_ptr<WorkerState> worker_state_;  // used by the worker thread alone
  std::thread worker_;
};

}  // namespace tandem::serve

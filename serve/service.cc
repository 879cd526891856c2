// The cloud inference service's queue, limits and worker; see serve/service.h.
#include "serve/service.h"

#include <algorithm>
#include <vector>

#include "core/logging.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/gpt_workspace.h"
#include "models/tokenizer.h"
#include "route/sampling.h"
#include "route/speculative.h"

namespace tandem::serve {

// What the worker computes with, rebuilt when the snapshot changes.
struct InferenceService::WorkerState {
  std::shared_ptr<const GptWeights> weights;
  std::unique_ptr<GptWorkspace> workspace;  // completions
  std::unique_ptr<LocalVerifier> verifier;  // verifications; keeps the last sequence cached
  std::vector<float> probs;                 // (V)
};

Status ServiceOptions::Validate() const {
  if (max_calls_per_client < 0) return Status::InvalidArgument("serve.max_calls_per_client < 0");
  if (max_inflight_per_client < 1) {
    return Status::InvalidArgument("serve.max_inflight_per_client must be >= 1");
  }
  if (max_queue < 1) return Status::InvalidArgument("serve.max_queue must be >= 1");
  if (default_deadline_ms < 1) return Status::InvalidArgument("serve.deadline_ms must be >= 1");
  if (max_new_tokens < 1) return Status::InvalidArgument("serve.max_new_tokens must be >= 1");
  if (max_gamma < 1) return Status::InvalidArgument("serve.max_gamma must be >= 1");
  if (threads < 1) return Status::InvalidArgument("serve.threads must be >= 1");
  return Status::Ok();
}

StatusOr<std::unique_ptr<InferenceService>> InferenceService::Create(
    std::shared_ptr<const GptWeights> weights, ServiceOptions options, ReplySender send) {
  TANDEM_RETURN_IF_ERROR(options.Validate());
  if (!weights) return Status::InvalidArgument("the inference service needs a model");
  return std::unique_ptr<InferenceService>(
      new InferenceService(std::move(weights), std::move(options), std::move(send)));
}

InferenceService::InferenceService(std::shared_ptr<const GptWeights> weights,
                                   ServiceOptions options, ReplySender send)
    : options_(std::move(options)), send_(std::move(send)),
      worker_state_(std::make_unique<WorkerState>()) {
  limits_.vocab = weights->config().vocab;
  limits_.context = weights->config().context;
  limits_.max_new_tokens = options_.max_new_tokens;
  limits_.max_gamma = options_.max_gamma;
  weights_ = std::move(weights);
  worker_ = std::thread([this] { WorkerLoop(); });
}

InferenceService::~InferenceService() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  worker_.join();
}

double InferenceService::Now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

RequestLimits InferenceService::limits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return limits_;
}

void InferenceService::SetWeights(std::shared_ptr<const GptWeights> weights) {
  TANDEM_CHECK(weights != nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  TANDEM_CHECK(weights->config().vocab == limits_.vocab);
  limits_.context = std::min(limits_.context, weights->config().context);
  weights_ = std::move(weights);
}

ServiceStats InferenceService::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return totals_;
}

ServiceStats InferenceService::peer_stats(const std::string& peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = per_peer_.find(peer);
  return it == per_peer_.end() ? ServiceStats{} : it->second;
}

std::map<std::string, ServiceStats> InferenceService::all_peer_stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return per_peer_;
}

void InferenceService::Refuse(const std::string& peer, uint64_t id, wire::ErrorCode code,
                              const std::string& why) {
  GetLogger("serve")->info("request {} of '{}' refused: {}", id, peer, why);
  wire::Message m;
  m.envelope.task_id = id;
  m.body = wire::Error{code, why.substr(0, wire::kMaxStringBytes)};
  (void)send_(peer, std::move(m));  // a peer that left cannot be answered
}

void InferenceService::Submit(const std::string& peer, const wire::Message& message) {
  const auto& body = std::get<wire::ServeRequest>(message.body);
  const uint64_t id = message.envelope.task_id;
  const double now = Now();
  std::unique_lock<std::mutex> lock(mu_);
  ++totals_.received;
  ServiceStats& mine = per_peer_[peer];
  ++mine.received;
  auto refuse = [&](wire::ErrorCode code, const std::string& why) {
    ++totals_.refused;
    ++mine.refused;
    lock.unlock();
    Refuse(peer, id, code, why);
  };
  StatusOr<Request> request = DecodeRequest(body, limits_);
  if (!request.ok()) return refuse(wire::ErrorCode::kBadMessage, request.status().message());
  if (std::holds_alternative<InfoRequest>(*request)) {
    const RequestLimits l = limits_;
    lock.unlock();
    wire::Message m;
    m.envelope.task_id = id;
    m.body = EncodeReply(InfoReply{l.vocab, l.context, l.max_new_tokens, l.max_gamma});
    (void)send_(peer, std::move(m));
    return;
  }
  // A late request gave its call back: it was never computed.
  if (options_.max_calls_per_client > 0 &&
      mine.accepted - mine.late >= static_cast<uint64_t>(options_.max_calls_per_client)) {
    return refuse(wire::ErrorCode::kRefused,
                  "the client has used its " + std::to_string(options_.max_calls_per_client) +
                      " calls (serve.max_calls_per_client)");
  }
  if (inflight_[peer] >= options_.max_inflight_per_client) {
    return refuse(wire::ErrorCode::kOverloaded,
                  "the client has " + std::to_string(inflight_[peer]) +
                      " requests in flight (serve.max_inflight_per_client)");
  }
  if (queue_.size() >= static_cast<size_t>(options_.max_queue)) {
    return refuse(wire::ErrorCode::kOverloaded, "the service's queue is full (serve.max_queue)");
  }
  if (!inflight_ids_[peer].insert(id).second) {
    return refuse(wire::ErrorCode::kBadMessage,
                  "request id " + std::to_string(id) + " is already in flight");
  }
  const uint32_t deadline_ms = body.deadline_ms > 0 ? body.deadline_ms : options_.default_deadline_ms;
  ++inflight_[peer];
  ++totals_.accepted;
  ++mine.accepted;
  queue_.push_back(Pending{peer, id, std::move(*request), now, now + deadline_ms / 1000.0});
  totals_.max_queued = std::max<uint64_t>(totals_.max_queued, queue_.size());
  lock.unlock();
  wake_.notify_one();
}

StatusOr<wire::ServeReply> InferenceService::Compute(const Request& request) {
  WorkerState& w = *worker_state_;
  const int V = w.weights->config().vocab;
  if (const auto* c = std::get_if<CompleteRequest>(&request)) {
    // The service's limits were checked against the context when the request was decoded; a
    // snapshot with a shorter context (SetWeights) is checked again here.
    if (c->prompt.size() + c->max_tokens > static_cast<size_t>(w.weights->config().context)) {
      return Status::InvalidArgument("the request no longer fits the served model's context");
    }
    GptWorkspace& ws = *w.workspace;
    ws.Truncate(0);
    Rng rng(c->seed);
    w.probs.resize(V);
    const float* logits = ws.Decode(c->prompt.data(), static_cast<int>(c->prompt.size()));
    logits += (c->prompt.size() - 1) * static_cast<size_t>(V);
    CompleteReply reply;
    for (int i = 0; i < c->max_tokens; ++i) {
      SamplingProbs(logits, V, c->sampling, w.probs.data());
      const int32_t t = SampleFromProbs(w.probs, rng);
      reply.tokens.push_back(t);
      if (t == ByteTokenizer::kEndOfText || t == c->stop || i + 1 == c->max_tokens) break;
      logits = ws.Decode(&t, 1);
    }
    return EncodeReply(reply);
  }
  const auto& v = std::get<VerifyRequest>(request);
  w.verifier->Reseed(v.sampling, v.seed);
  TANDEM_ASSIGN_OR_RETURN(const Verdict verdict, w.verifier->Verify(v.context, v.draft, v.q));
  return EncodeReply(VerifyReply{verdict.accepted, verdict.next});
}

void InferenceService::WorkerLoop() {
  auto log = GetLogger("serve");
  SetComputeThreads(options_.threads);
  for (;;) {
    Pending job;
    std::shared_ptr<const GptWeights> weights;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      weights = weights_;
    }
    auto finish = [&](bool served, bool late, bool complete, double queue_s, double compute_s) {
      std::lock_guard<std::mutex> lock(mu_);
      --inflight_[job.peer];
      inflight_ids_[job.peer].erase(job.id);
      ServiceStats& mine = per_peer_[job.peer];
      for (ServiceStats* s : {&totals_, &mine}) {
        if (late) ++s->late;
        if (!served) continue;
        ++s->served;
        ++(complete ? s->completions : s->verifications);
        s->queue_seconds += queue_s;
        s->compute_seconds += compute_s;
      }
    };
    const double started = Now();
    if (started > job.deadline) {
      finish(false, true, false, 0, 0);
      Refuse(job.peer, job.id, wire::ErrorCode::kStale,
             "past its deadline: waited " + std::to_string(static_cast<int>(
                                                (started - job.arrived) * 1000)) + " ms");
      continue;
    }
    if (worker_state_->weights != weights) {
      worker_state_->weights = weights;
      worker_state_->workspace = std::make_unique<GptWorkspace>(weights);
      worker_state_->verifier = std::make_unique<LocalVerifier>(weights, SamplingOptions{}, 0);
    }
    if (options_.before_compute) options_.before_compute();
    const double begun = Now();
    StatusOr<wire::ServeReply> reply = Compute(job.request);
    const double done = Now();
    const bool complete = std::holds_alternative<CompleteRequest>(job.request);
    if (!reply.ok()) {
      finish(false, false, complete, 0, 0);
      log->warn("request {} of '{}' failed: {}", job.id, job.peer, reply.status().message());
      Refuse(job.peer, job.id, wire::ErrorCode::kBadMessage, reply.status().message());
      continue;
    }
    reply->params["queue_ms"] = (begun - job.arrived) * 1000.0;
    reply->params["compute_ms"] = (done - begun) * 1000.0;
    finish(true, false, complete, begun - job.arrived, done - begun);
    wire::Message m;
    m.envelope.task_id = job.id;
    m.body = std::move(*reply);
    if (Status s = send_(job.peer, std::move(m)); !s.ok()) {
      log->info("reply {} to '{}' not sent: {}", job.id, job.peer, s.message());
    }
  }
}

}  // namespace tandem::serve

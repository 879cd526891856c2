// The cloud inference service's queue, limits and worker; see serve/service.h.
#include "serve/service.h"

#include <algorithm>
#include <optional>
#include <span>
#include <vector>

#include "core/logging.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/gpt_workspace.h"
#include "models/tokenizer.h"
#include "route/sampling.h"
#include "route/speculative.h"

namespace tandem::serve {

namespace {

// A key/value cache and the tokens it holds (position() of them).
struct CachedSequence {
  std::unique_ptr<GptWorkspace> workspace;
  std::vector<int32_t> tokens;
};

}  // namespace

// What the worker computes with, rebuilt when the snapshot changes.
struct InferenceService::WorkerState {
  std::shared_ptr<const GptWeights> weights;  // what the batch is computed with
  std::unique_ptr<BatchDecoder> decoder;
  // Caches of requests that left, kept with their tokens: a request that shares a prefix with
  // one feeds only the rest (a device verifying its text again and again). BatchDecoder computes
  // the same bits either way, so which cache a request gets never changes its reply.
  std::vector<CachedSequence> spare;
  std::vector<BatchDecoder::Step> steps;  // (batch) of the current pass
  std::vector<float> probs;               // (γ+1,V) or (V)
};

// A request in the batch: its own cache, its own randomness, what it feeds next.
struct InferenceService::Active {
  Pending job;
  double begun = 0.0;  // when it joined the batch, on the service's clock
  CachedSequence cache;
  std::vector<int32_t> feed;  // (k) the tokens of its next pass, not yet in cache.tokens
  Rng rng;                    // a completion's sampling, seeded by its seed
  CompleteReply completion;   // the tokens so far
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
  if (max_batch < 1) return Status::InvalidArgument("serve.max_batch must be >= 1");
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

void InferenceService::Finish(const Pending& job, bool served, bool late, double queue_s,
                              double compute_s) {
  const bool complete = std::holds_alternative<CompleteRequest>(job.request);
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
}

Status InferenceService::Start(Active* a) {
  WorkerState& w = *worker_state_;
  const ModelConfig& c = w.weights->config();
  if (const auto* r = std::get_if<CompleteRequest>(&a->job.request)) {
    // The service's limits were checked against the context when the request was decoded; a
    // snapshot with a shorter context (SetWeights) is checked again here.
    if (r->prompt.size() + r->max_tokens > static_cast<size_t>(c.context)) {
      return Status::InvalidArgument("the request no longer fits the served model's context");
    }
    a->feed = r->prompt;
    a->rng = Rng(r->seed);
  } else {
    const auto& v = std::get<VerifyRequest>(a->job.request);
    TANDEM_RETURN_IF_ERROR(ValidateDraft(v.context, v.draft, v.q, c.vocab, c.context));
    a->feed = v.context;
    a->feed.insert(a->feed.end(), v.draft.begin(), v.draft.end());
  }
  // The spare cache sharing the longest prefix with what the request feeds, less its last
  // context token at least (the row that predicts what follows it is needed).
  const size_t limit = std::holds_alternative<CompleteRequest>(a->job.request)
                           ? a->feed.size() - 1
                           : std::get<VerifyRequest>(a->job.request).context.size() - 1;
  size_t best = 0, keep = 0;
  for (size_t i = 0; i < w.spare.size(); ++i) {
    const std::vector<int32_t>& t = w.spare[i].tokens;
    size_t n = 0;
    while (n < limit && n < t.size() && t[n] == a->feed[n]) ++n;
    if (i == 0 || n > keep) best = i, keep = n;
  }
  if (w.spare.empty()) {
    a->cache.workspace = std::make_unique<GptWorkspace>(w.weights);
  } else {
    a->cache = std::move(w.spare[best]);
    w.spare.erase(w.spare.begin() + static_cast<std::ptrdiff_t>(best));
  }
  a->cache.workspace->Truncate(static_cast<int>(keep));
  a->cache.tokens.resize(keep);
  if (keep > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    totals_.reused_tokens += keep;
  }
  a->feed.erase(a->feed.begin(), a->feed.begin() + static_cast<std::ptrdiff_t>(keep));
  return Status::Ok();
}

bool InferenceService::Admit(std::vector<Active>* batch) {
  WorkerState& w = *worker_state_;
  while (batch->size() < static_cast<size_t>(options_.max_batch)) {
    Pending job;
    std::shared_ptr<const GptWeights> weights;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (batch->empty()) wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return false;
      if (queue_.empty()) return true;
      // A new snapshot is taken up between batches: a request finishes on the one it began on.
      if (weights_ != w.weights && !batch->empty()) return true;
      job = std::move(queue_.front());
      queue_.pop_front();
      weights = weights_;
    }
    const double now = Now();
    if (now > job.deadline) {
      Finish(job, false, true, 0, 0);
      Refuse(job.peer, job.id, wire::ErrorCode::kStale,
             "past its deadline: waited " +
                 std::to_string(static_cast<int>((now - job.arrived) * 1000)) + " ms");
      continue;
    }
    if (w.weights != weights) {
      w.weights = weights;
      w.decoder = std::make_unique<BatchDecoder>(weights);
      w.spare.clear();
    }
    if (options_.before_compute) options_.before_compute();
    Active a;
    a.job = std::move(job);
    a.begun = Now();
    if (Status s = Start(&a); !s.ok()) {
      Finish(a.job, false, false, 0, 0);
      GetLogger("serve")->warn("request {} of '{}' failed: {}", a.job.id, a.job.peer,
                               s.message());
      Refuse(a.job.peer, a.job.id, wire::ErrorCode::kBadMessage, s.message());
      continue;
    }
    batch->push_back(std::move(a));
  }
  return true;
}

void InferenceService::Step(std::vector<Active>* batch) {
  WorkerState& w = *worker_state_;
  const int V = w.weights->config().vocab;
  w.steps.clear();
  for (Active& a : *batch) {
    w.steps.push_back(
        {a.cache.workspace.get(), a.feed.data(), static_cast<int>(a.feed.size())});
  }
  const std::span<const float* const> logits = w.decoder->Decode(w.steps);  // (k_i,V) each
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++totals_.passes;
    totals_.pass_requests += batch->size();
    totals_.max_batched = std::max<uint64_t>(totals_.max_batched, batch->size());
  }
  size_t kept = 0;
  for (size_t i = 0; i < batch->size(); ++i) {
    Active& a = (*batch)[i];
    const size_t from = a.cache.tokens.size();  // the position this pass's first row fed
    a.cache.tokens.insert(a.cache.tokens.end(), a.feed.begin(), a.feed.end());
    std::optional<wire::ServeReply> reply;
    if (const auto* r = std::get_if<CompleteRequest>(&a.job.request)) {
      // The last row predicts the token after the fed ones.
      w.probs.resize(V);
      SamplingProbs(logits[i] + (a.feed.size() - 1) * static_cast<size_t>(V), V, r->sampling,
                    w.probs.data());
      const int32_t t = SampleFromProbs(w.probs, a.rng);
      a.completion.tokens.push_back(t);
      if (t == ByteTokenizer::kEndOfText || t == r->stop ||
          a.completion.tokens.size() == static_cast<size_t>(r->max_tokens)) {
        reply = EncodeReply(a.completion);
      } else {
        a.feed.assign(1, t);
      }
    } else {
      // p (γ+1,V): row i is the cloud's distribution for draft[i], from the row of the token
      // before it; the last row follows the whole draft.
      const auto& v = std::get<VerifyRequest>(a.job.request);
      const size_t len = v.context.size(), gamma = v.draft.size();
      w.probs.resize((gamma + 1) * V);
      const float* first = logits[i] + (len - 1 - from) * static_cast<size_t>(V);
      for (size_t r = 0; r <= gamma; ++r) {
        SamplingProbs(first + r * V, V, v.sampling, w.probs.data() + r * V);
      }
      Rng rng(v.seed);
      const Verdict verdict = SpeculativeAccept(v.draft, v.q, w.probs, V, rng);
      reply = EncodeReply(VerifyReply{verdict.accepted, verdict.next});
      // Keep the accepted prefix: the device's next context continues it.
      a.cache.workspace->Truncate(static_cast<int>(len) + verdict.accepted);
      a.cache.tokens.resize(len + verdict.accepted);
    }
    if (!reply) {
      if (kept != i) (*batch)[kept] = std::move(a);
      ++kept;
      continue;
    }
    const double done = Now();
    reply->params["queue_ms"] = (a.begun - a.job.arrived) * 1000.0;
    reply->params["compute_ms"] = (done - a.begun) * 1000.0;
    Finish(a.job, true, false, a.begun - a.job.arrived, done - a.begun);
    w.spare.push_back(std::move(a.cache));
    wire::Message m;
    m.envelope.task_id = a.job.id;
    m.body = std::move(*reply);
    if (Status s = send_(a.job.peer, std::move(m)); !s.ok()) {
      GetLogger("serve")->info("reply {} to '{}' not sent: {}", a.job.id, a.job.peer,
                               s.message());
    }
  }
  batch->resize(kept);
}

void InferenceService::WorkerLoop() {
  SetComputeThreads(options_.threads);
  std::vector<Active> batch;
  while (Admit(&batch)) {
    if (!batch.empty()) Step(&batch);
  }
}

}  // namespace tandem::serve

// The round engine's state machine; see coordinator/engine.h.
#include "coordinator/engine.h"

#include <algorithm>
#include <cmath>

#include "core/config.h"
#include "core/logging.h"

namespace tandem {
namespace {

constexpr double kMaxTickInterval = 0.5;  // seconds between ticks when nothing happens
constexpr double kWaitLogInterval = 10.0;

std::string Join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

int ClientIndexFromName(const std::string& name) {
  constexpr std::string_view kPrefix = "client-";
  if (name.size() <= kPrefix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0) return -1;
  int64_t k = 0;
  for (size_t i = kPrefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || k > 1'000'000) return -1;
    k = k * 10 + (name[i] - '0');
  }
  if (name.size() > kPrefix.size() + 1 && name[kPrefix.size()] == '0') return -1;  // "client-01"
  return static_cast<int>(k);
}

StatusOr<EngineConfig> EngineConfigFromConfig(const Config& config) {
  EngineConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.rounds, config.GetInt("federation.rounds", c.rounds, 1, 1'000'000));
  TANDEM_ASSIGN_OR_RETURN(int64_t clients,
                          config.GetInt("federation.clients", c.expected_clients, 1, 100'000));
  c.expected_clients = static_cast<int>(clients);
  TANDEM_ASSIGN_OR_RETURN(int64_t cohort, config.GetInt("federation.cohort", 0, 0, clients));
  c.cohort = static_cast<int>(cohort);
  TANDEM_ASSIGN_OR_RETURN(c.cohort_fraction,
                          config.GetDouble("federation.cohort_fraction", 1.0, 1e-9, 1.0));
  if (cohort > 0 && config.Has("federation.cohort_fraction")) {
    return Status::InvalidArgument(config.source() +
                                   ": set federation.cohort or federation.cohort_fraction, "
                                   "not both");
  }
  TANDEM_ASSIGN_OR_RETURN(int64_t min_results,
                          config.GetInt("federation.min_results", 0, 0, clients));
  c.min_results = static_cast<int>(min_results);
  TANDEM_ASSIGN_OR_RETURN(c.round_deadline_s,
                          config.GetDouble("federation.round_deadline_s", c.round_deadline_s,
                                           0.001, 1e7));
  TANDEM_ASSIGN_OR_RETURN(c.wait_for_clients_s,
                          config.GetDouble("federation.wait_for_clients_s", c.wait_for_clients_s,
                                           0.0, 1e7));
  const int cohort_size =
      c.cohort > 0 ? c.cohort
                   : std::max(1, static_cast<int>(std::ceil(c.cohort_fraction * clients - 1e-9)));
  if (c.min_results > cohort_size) {
    return Status::InvalidArgument(config.source() + ": federation.min_results is " +
                                   std::to_string(c.min_results) + " but a cohort has only " +
                                   std::to_string(cohort_size) + " clients");
  }
  return c;
}

RoundEngine::RoundEngine(EngineConfig config, ServerAlgorithm* algorithm, Outbox* outbox,
                         std::function<double()> now, uint64_t seed)
    : config_(config), algorithm_(algorithm), outbox_(outbox), now_(std::move(now)),
      rng_(seed * 0x9E3779B97F4A7C15ULL + 0x5851F42D) {
  state_.rng_state = rng_.SaveState();
  if (state_.next_round > static_cast<uint64_t>(config_.rounds)) done_ = true;
}

void RoundEngine::RestoreState(const EngineState& state) {
  state_ = state;
  if (!state.rng_state.empty()) {
    Status s = rng_.LoadState(state.rng_state);
    TANDEM_CHECK(s.ok());
  }
  done_ = state_.next_round > static_cast<uint64_t>(config_.rounds);
}

int CohortSize(const EngineConfig& config) {
  if (config.cohort > 0) return config.cohort;
  return std::max(1, static_cast<int>(std::ceil(config.cohort_fraction *
                                                config.expected_clients - 1e-9)));
}

int MinResults(const EngineConfig& config) {
  return config.min_results > 0 ? config.min_results : CohortSize(config);
}

int RoundEngine::cohort_size() const { return CohortSize(config_); }

int RoundEngine::min_results() const { return MinResults(config_); }

void RoundEngine::OnJoined(const std::string& peer, const std::vector<std::string>& capabilities) {
  auto log = GetLogger("coordinator");
  ClientInfo info{peer, ClientIndexFromName(peer), capabilities};
  const bool rejoin = clients_.count(peer) > 0;
  clients_[peer] = info;
  exited_.erase(peer);  // restarted: expected again
  log->info("round {}: client {} {} ({} connected)", round_, peer,
            rejoin ? "rejoined" : "joined", clients_.size());
  if (streams_.count(peer)) FailStream(peer, "the client restarted during its upload");
  // A member that joins again mid-task has lost the task with its old session.
  if (phase_ == Phase::kTask && task_.members.count(peer) && !task_.answered.count(peer)) {
    task_.answered.insert(peer);
    ++task_.report.failed;
    log->warn("round {}: client {} restarted during task {}; counted as dropped", round_, peer,
              task_.id);
    MaybeCloseTask(false);
  }
}

void RoundEngine::OnLost(const std::string& peer) {
  auto log = GetLogger("coordinator");
  if (clients_.erase(peer) == 0) return;
  log->warn("round {}: client {} lost ({} connected)", round_, peer, clients_.size());
  if (streams_.count(peer)) FailStream(peer, "the client was lost during its upload");
  if (phase_ == Phase::kTask && task_.members.count(peer) && !task_.answered.count(peer)) {
    task_.answered.insert(peer);
    ++task_.report.failed;
    MaybeCloseTask(false);
  }
}

int RoundEngine::expected_clients() const {
  return std::max(0, config_.expected_clients - static_cast<int>(exited_.size()));
}

void RoundEngine::OnClientExited(const std::string& peer) {
  auto log = GetLogger("coordinator");
  if (!exited_.insert(peer).second) return;
  log->warn("round {}: client {}'s process ended; rounds no longer wait for it ({} of {} clients "
            "left)", round_, peer, expected_clients(), config_.expected_clients);
  if (config_.poisson_sampling) {
    // q stays what the accountant was told: no remaining client is sampled more often, so the
    // ε reported stays an upper bound. Distributed noise is sized so that min_results
    // contributions carry it all, so smaller cohorts still add the full noise.
    const double q = std::min(1.0, static_cast<double>(cohort_size()) / config_.expected_clients);
    log->warn("Poisson sampling goes on over the {} clients left, each with q = {:.4g} as "
              "accounted; the expected cohort falls from {:.4g} to {:.4g} clients, and rounds "
              "sampling fewer than {} (federation.min_results) are skipped",
              expected_clients(), q, q * config_.expected_clients, q * expected_clients(),
              min_results());
  }
  OnLost(peer);
}

void RoundEngine::OnMessage(const std::string& peer, const wire::Message& message) {
  auto log = GetLogger("coordinator");
  const uint64_t task_id = message.envelope.task_id;
  const bool open = phase_ == Phase::kTask && task_id == task_.id;
  if (const auto* result = std::get_if<wire::TaskResult>(&message.body)) {
    // The remainder of a streamed upload (its offer matched the open task; FinishStream checks
    // that the result says so too).
    if (auto stream = streams_.find(peer);
        stream != streams_.end() && stream->second.message_id == message.envelope.sequence) {
      FinishStream(peer, message, *result);
      return;
    }
    if (!open) {
      if (closed_tasks_.count(task_id)) {
        ++late_;
        log->info("round {}: late result from {} for closed task {} dropped", round_, peer,
                  task_id);
      } else {
        ++round_rejected_;
        log->warn("round {}: result from {} for unknown task {} rejected", round_, peer, task_id);
      }
      return;
    }
    auto member = task_.members.find(peer);
    if (member == task_.members.end()) {
      ++task_.report.rejected;
      log->warn("round {}: result from {} rejected: not in task {}'s cohort", round_, peer,
                task_id);
      return;
    }
    if (task_.answered.count(peer) || streams_.count(peer)) {  // a streamed one came first
      ++task_.report.rejected;
      log->warn("round {}: second result from {} for task {} rejected", round_, peer, task_id);
      return;
    }
    task_.answered.insert(peer);
    if (Status s = algorithm_->OnResult(member->second, *result); !s.ok()) {
      ++task_.report.rejected;
      log->warn("round {}: result from {} for task {} rejected: {}", round_, peer, task_id,
                s.message());
    } else {
      task_.report.responded.push_back(peer);
      log->debug("round {}: result from {} for task {} ({}/{})", round_, peer, task_id,
                 task_.report.responded.size(), task_.members.size());
    }
    MaybeCloseTask(false);
    return;
  }
  if (const auto* error = std::get_if<wire::Error>(&message.body)) {
    if (open && task_.members.count(peer) && !task_.answered.count(peer)) {
      task_.answered.insert(peer);
      ++task_.report.failed;
      log->warn("round {}: client {} could not do task {}: {}", round_, peer, task_id,
                error->message);
      MaybeCloseTask(false);
    } else {
      log->warn("round {}: error from {}: {}", round_, peer, error->message);
    }
  }
}

void RoundEngine::Tick() {
  if (done_) return;
  if (phase_ == Phase::kTask && now_() >= task_.deadline) MaybeCloseTask(true);
  // A round that just ended is followed by the next one at once when its cohort is here.
  if (phase_ == Phase::kWaiting && !done_) TryStartRound();
}

double RoundEngine::NextWakeSeconds() const {
  if (phase_ == Phase::kTask) {
    // Past the deadline and waiting for a streamed upload: its events will come, or its failure.
    if (task_.deadline <= now_() && StreamsInProgress()) return kMaxTickInterval;
    return std::clamp(task_.deadline - now_(), 0.0, kMaxTickInterval);
  }
  return kMaxTickInterval;
}

void RoundEngine::Stop(Status reason) {
  status_ = std::move(reason);
  done_ = true;
  phase_ = Phase::kDone;
}

void RoundEngine::Fail(Status status) {
  GetLogger("coordinator")->error("round {}: {}", round_, status.message());
  Stop(std::move(status));
}

std::vector<ClientInfo> RoundEngine::Eligible() const {
  const auto required = algorithm_->RequiredCapabilities();
  std::vector<ClientInfo> eligible;  // in name order: the sampling depends only on who is here
  for (const auto& [name, info] : clients_) {
    bool ok = true;
    for (const auto& cap : required) {
      ok = ok && std::find(info.capabilities.begin(), info.capabilities.end(), cap) !=
                     info.capabilities.end();
    }
    if (ok) eligible.push_back(info);
  }
  return eligible;
}

std::vector<ClientInfo> RoundEngine::SelectCohort() {
  std::vector<ClientInfo> eligible = Eligible();
  const size_t want = static_cast<size_t>(cohort_size());
  if (config_.poisson_sampling) {
    // Each client is in with probability q whoever else is present, so no client's chance of
    // being sampled exceeds the q the accountant is told.
    const double q = std::min(1.0, static_cast<double>(want) / config_.expected_clients);
    std::vector<ClientInfo> cohort;
    for (auto& info : eligible) {
      if (rng_.Uniform() < q) cohort.push_back(std::move(info));
    }
    return cohort;
  }
  if (eligible.size() > want) {
    // Partial Fisher-Yates with the engine's checkpointed generator.
    for (size_t i = 0; i < want; ++i) {
      std::swap(eligible[i], eligible[i + rng_.Below(eligible.size() - i)]);
    }
    eligible.resize(want);
    std::sort(eligible.begin(), eligible.end(),
              [](const ClientInfo& a, const ClientInfo& b) { return a.name < b.name; });
  }
  return eligible;
}

void RoundEngine::TryStartRound() {
  auto log = GetLogger("coordinator");
  if (state_.next_round > static_cast<uint64_t>(config_.rounds)) {
    done_ = true;
    phase_ = Phase::kDone;
    return;
  }
  if (std::optional<std::string> why = algorithm_->StopBeforeRound(state_.next_round)) {
    log->warn("stopping before round {}: {}", state_.next_round, *why);
    stop_reason_ = *why;
    done_ = true;
    phase_ = Phase::kDone;
    return;
  }
  const double now = now_();
  if (waiting_since_ < 0) waiting_since_ = now;
  // Poisson sampling waits for the whole population; a fixed-size cohort for its size. Clients
  // whose process ended are not waited for.
  const int expected = expected_clients();
  if (expected < min_results()) {
    Fail(Status::Unavailable(
        std::to_string(config_.expected_clients - expected) + " of " +
        std::to_string(config_.expected_clients) + " client processes ended, " +
        std::to_string(expected) + " left; a round needs " + std::to_string(min_results()) +
        " (federation.min_results)"));
    return;
  }
  const int wanted = config_.poisson_sampling ? expected : std::min(cohort_size(), expected);
  const int eligible = static_cast<int>(Eligible().size());
  const bool full = eligible >= wanted;
  const bool waited = now - waiting_since_ >= config_.wait_for_clients_s;
  if (!full) {
    if (!waited) {
      if (last_wait_log_ < 0 || now - last_wait_log_ >= kWaitLogInterval) {
        log->info("waiting for clients: {} of {} connected", eligible, wanted);
        last_wait_log_ = now;
      }
      return;
    }
    if (eligible < min_results()) {
      Fail(Status::Unavailable(
          "only " + std::to_string(eligible) + " eligible clients connected after " +
          std::to_string(static_cast<int>(config_.wait_for_clients_s)) +
          " s (federation.wait_for_clients_s); a round needs " + std::to_string(min_results()) +
          " (federation.min_results)"));
      return;
    }
    log->warn("starting round {} with {} of {} clients after waiting {:.0f} s",
              state_.next_round, eligible, wanted, now - waiting_since_);
  }
  std::vector<ClientInfo> cohort = SelectCohort();
  round_ = state_.next_round;
  waiting_since_ = -1.0;
  last_wait_log_ = -1.0;
  round_started_ = now;
  round_metrics_.clear();
  round_cohort_ = cohort.size();
  round_results_ = round_dropped_ = round_rejected_ = 0;
  round_first_task_closed_ = false;
  bytes_sent_at_start_ = outbox_->BytesSent();
  bytes_received_at_start_ = outbox_->BytesReceived();
  outbox_->AdvanceRound(round_);
  std::vector<std::string> names;
  for (const auto& c : cohort) names.push_back(c.name);
  log->info("round {}: cohort of {}: {}", round_, cohort.size(), Join(names));
  if (config_.poisson_sampling && static_cast<int>(cohort.size()) < min_results()) {
    // Nothing is sent, so nothing is learnt; the round still counts as sampled.
    FinishRound(false, "the Poisson-sampled cohort of " + std::to_string(cohort.size()) +
                           " is below federation.min_results " + std::to_string(min_results()));
    return;
  }
  StatusOr<TaskSpec> spec = algorithm_->BeginRound(round_, cohort);
  if (!spec.ok()) {
    Fail(spec.status());
    return;
  }
  task_.members.clear();
  for (auto& c : cohort) task_.members[c.name] = c;
  Dispatch(std::move(spec).value());
}

void RoundEngine::Dispatch(TaskSpec spec) {
  auto log = GetLogger("coordinator");
  const double now = now_();
  DropStreams();  // the previous task's are finished or failed by now
  std::map<std::string, ClientInfo> members = std::move(task_.members);
  if (spec.members) {
    std::map<std::string, ClientInfo> chosen;
    for (const auto& name : *spec.members) {
      if (auto it = members.find(name); it != members.end()) chosen.insert(*it);
    }
    members = std::move(chosen);
  }
  task_ = OpenTask{};
  task_.id = state_.next_task_id++;
  task_.kind = spec.kind;
  task_.started = now;
  task_.deadline = now + config_.round_deadline_s;
  task_.bytes_sent_at_start = outbox_->BytesSent();
  task_.bytes_received_at_start = outbox_->BytesReceived();
  task_.report.task_id = task_.id;
  task_.report.kind = spec.kind;
  task_.contribution = spec.contribution;
  phase_ = Phase::kTask;
  const auto deadline_ms = static_cast<uint32_t>(
      std::min(config_.round_deadline_s * 1000.0, 4e9));
  std::vector<std::string> reachable;
  for (auto& [name, info] : members) {
    task_.members[name] = info;
    task_.report.assigned.push_back(name);
    // A member lost between the cohort's selection and now (e.g. while the previous task closed).
    if (!clients_.count(name)) {
      task_.answered.insert(name);
      ++task_.report.failed;
    } else {
      reachable.push_back(name);
    }
  }
  std::vector<std::string> unreachable;
  auto message_for = [&](const ClientInfo* info) {
    wire::Message m;
    m.envelope.round = round_;
    m.envelope.task_id = task_.id;
    wire::TaskAssign assign{spec.kind, spec.params, {}, deadline_ms};
    if (info != nullptr) {
      assign.tensors = spec.tensors;
      algorithm_->Customize(*info, &assign);
    } else {
      assign.tensors = std::move(spec.tensors);
    }
    m.body = std::move(assign);
    return m;
  };
  if (algorithm_->CustomizesTasks()) {
    for (const auto& name : reachable) {
      if (Status s = outbox_->Send(name, message_for(&task_.members[name])); !s.ok()) {
        log->warn("round {}: task {} to {}: {}", round_, task_.id, name, s.message());
        unreachable.push_back(name);
      }
    }
  } else if (Status s = outbox_->Broadcast(reachable, message_for(nullptr), &unreachable);
             !s.ok()) {
    Fail(Status::Internal("task " + std::to_string(task_.id) + " cannot be sent: " + s.message()));
    return;
  }
  for (const auto& name : unreachable) {
    task_.answered.insert(name);
    ++task_.report.failed;
    log->warn("round {}: task {} could not be sent to {}", round_, task_.id, name);
  }
  round_metrics_["dispatch_s"] += now_() - now;
  log->info("round {}: task {} ({}) sent to {} clients, deadline {:.0f} s", round_, task_.id,
            spec.kind, task_.members.size() - task_.report.failed, config_.round_deadline_s);
  MaybeCloseTask(false);
}

void RoundEngine::MaybeCloseTask(bool deadline_passed) {
  if (phase_ != Phase::kTask) return;
  const size_t accepted = task_.report.responded.size();
  const bool all_in = task_.answered.size() == task_.members.size();
  deadline_passed = deadline_passed || now_() >= task_.deadline;
  if (!all_in && !deadline_passed) return;
  // A streamed upload part-way in cannot be left out of the sum: the task waits for it to finish
  // or fail (the transport fails an upload that stalls).
  if (!all_in && StreamsInProgress()) return;
  if (static_cast<int>(accepted) >= min_results()) {
    CloseTask();
    return;
  }
  FinishRound(false, "task " + std::to_string(task_.id) + " (" + task_.kind + ") got " +
                         std::to_string(accepted) + " of the " + std::to_string(min_results()) +
                         " results it needs" +
                         (all_in ? std::string(" (every member answered or dropped)")
                                 : " by its deadline"));
}

std::vector<std::string> RoundEngine::CancelUnanswered(const std::string& reason) {
  std::vector<std::string> cancelled;
  for (const auto& [name, info] : task_.members) {
    if (task_.answered.count(name)) continue;
    wire::Message cancel;
    cancel.envelope.round = round_;
    cancel.envelope.task_id = task_.id;
    cancel.body = wire::TaskCancel{reason};
    (void)outbox_->Send(name, std::move(cancel));
    cancelled.push_back(name);
  }
  return cancelled;
}

void RoundEngine::CountResults() {
  // "results" is how many clients the round's work came from: what its first task accepted
  // (secure aggregation's later steps, or an evaluation after training, go to the same clients
  // again and are not more results). Each task kind's count is kept under task_results.<kind>.
  round_metrics_["task_results." + task_.kind] +=
      static_cast<double>(task_.report.responded.size());
  if (!round_first_task_closed_) {
    round_results_ = task_.report.responded.size();
    round_first_task_closed_ = true;
  }
}

void RoundEngine::CloseTask() {
  auto log = GetLogger("coordinator");
  closed_tasks_.insert(task_.id);
  DropStreams();
  // Stragglers may stop: their results would be dropped as late.
  for (const std::string& name : CancelUnanswered("the task closed at its deadline")) {
    ++task_.report.failed;
    log->info("round {}: client {} missed task {}'s deadline", round_, name, task_.id);
  }
  const double now = now_();
  task_.report.seconds = now - task_.started;
  round_metrics_["collect_s"] += task_.report.seconds;
  // Each kind's share of the round's traffic: the model going down for training against an
  // evaluation's copy, or secure aggregation's steps against the upload they protect.
  round_metrics_["bytes_down." + task_.kind] +=
      static_cast<double>(outbox_->BytesSent() - task_.bytes_sent_at_start);
  round_metrics_["bytes_up." + task_.kind] +=
      static_cast<double>(outbox_->BytesReceived() - task_.bytes_received_at_start);
  CountResults();
  round_dropped_ += task_.report.failed;
  round_rejected_ += task_.report.rejected;
  StatusOr<std::optional<TaskSpec>> next = algorithm_->OnTaskClosed(task_.report);
  round_metrics_["aggregate_s"] += now_() - now;
  if (!next.ok()) {
    FinishRound(false, next.status().message());
    return;
  }
  if (next->has_value()) {
    // The next task goes to the members still connected.
    task_.members = [&] {
      std::map<std::string, ClientInfo> m;
      for (const auto& name : task_.report.responded) m[name] = task_.members[name];
      return m;
    }();
    Dispatch(std::move(**next));
    return;
  }
  FinishRound(true, "");
}

void RoundEngine::FinishRound(bool completed, const std::string& why) {
  auto log = GetLogger("coordinator");
  DropStreams();
  if (phase_ == Phase::kTask && !closed_tasks_.count(task_.id)) {
    closed_tasks_.insert(task_.id);
    round_dropped_ += task_.members.size() - task_.report.responded.size();
    round_rejected_ += task_.report.rejected;
    CountResults();
    CancelUnanswered("the round was aborted");
  }
  std::map<std::string, double> metrics = round_metrics_;
  if (completed) {
    const double t = now_();
    if (Status s = algorithm_->EndRound(round_, &metrics); !s.ok()) {
      Fail(s);
      return;
    }
    metrics["eval_s"] = now_() - t;
  } else {
    algorithm_->AbortRound();
    metrics["aborted"] = 1;
    log->warn("round {} aborted, model unchanged: {}", round_, why);
  }
  algorithm_->AddRoundMetrics(&metrics);
  metrics["round_s"] = now_() - round_started_;
  metrics["cohort"] = static_cast<double>(round_cohort_);
  metrics["results"] = static_cast<double>(round_results_);
  metrics["dropped"] = static_cast<double>(round_dropped_);
  metrics["rejected"] = static_cast<double>(round_rejected_);
  metrics["late"] = static_cast<double>(late_);
  metrics["bytes_up"] = static_cast<double>(outbox_->BytesReceived() - bytes_received_at_start_);
  metrics["bytes_down"] = static_cast<double>(outbox_->BytesSent() - bytes_sent_at_start_);
  late_ = 0;
  state_.next_round = round_ + 1;
  state_.rng_state = rng_.SaveState();
  phase_ = Phase::kWaiting;
  if (state_.next_round > static_cast<uint64_t>(config_.rounds)) {
    done_ = true;
    phase_ = Phase::kDone;
  }
  if (on_round_end_) {
    if (Status s = on_round_end_(round_, metrics); !s.ok()) Fail(s);
  }
}

bool RoundEngine::OnUploadOffered(const std::string& peer, const UploadOffer& offer) {
  auto log = GetLogger("coordinator");
  // Only a result the engine would accept is streamed; anything else comes whole and is judged
  // (and counted: late, foreign, second) by OnMessage as before.
  if (phase_ != Phase::kTask || !task_.contribution || offer.round != round_ ||
      offer.task_id != task_.id || offer.values != task_.contribution->length) {
    return false;
  }
  auto member = task_.members.find(peer);
  if (member == task_.members.end() || task_.answered.count(peer) || streams_.count(peer) ||
      stream_barred_.count(peer)) {
    return false;
  }
  StatusOr<std::unique_ptr<ResultStream>> sink =
      algorithm_->StreamResult(member->second, offer.weight, offer.values);
  if (!sink.ok()) {
    log->info("round {}: upload from {} for task {} not streamed: {}", round_, peer, task_.id,
              sink.status().message());
    return false;
  }
  if (!*sink) return false;
  streams_[peer] = Stream{offer.message_id, task_.id, std::move(*sink)};
  return true;
}

void RoundEngine::OnUploadValues(const std::string& peer, uint64_t message_id, uint64_t offset,
                                 std::span<const float> values) {
  auto it = streams_.find(peer);
  if (it == streams_.end() || it->second.message_id != message_id || !it->second.sink) return;
  if (Status s = it->second.sink->Add(offset, values); !s.ok()) {
    FailStream(peer, "values [" + std::to_string(offset) + ", " +
                         std::to_string(offset + values.size()) + ") refused: " + s.message());
  }
}

void RoundEngine::OnUploadFailed(const std::string& peer, uint64_t message_id,
                                 const std::string& reason) {
  auto it = streams_.find(peer);
  if (it == streams_.end() || it->second.message_id != message_id) return;
  FailStream(peer, reason);
}

void RoundEngine::FinishStream(const std::string& peer, const wire::Message& message,
                               const wire::TaskResult& result) {
  auto log = GetLogger("coordinator");
  Stream& stream = streams_.at(peer);
  if (!stream.sink) {
    // Counted as rejected when it failed.
    log->warn("round {}: result from {} for task {} dropped: its upload failed", round_, peer,
              stream.task_id);
    streams_.erase(peer);
    return;
  }
  if (message.envelope.task_id != stream.task_id || message.envelope.round != round_) {
    FailStream(peer, "the result says task " + std::to_string(message.envelope.task_id) +
                         " of round " + std::to_string(message.envelope.round) +
                         ", its offer said task " + std::to_string(stream.task_id));
    return;
  }
  if (Status s = stream.sink->Finish(result); !s.ok()) {
    FailStream(peer, s.message());
    return;
  }
  streams_.erase(peer);
  task_.answered.insert(peer);
  task_.report.responded.push_back(peer);
  log->debug("round {}: streamed result from {} for task {} ({}/{})", round_, peer, task_.id,
             task_.report.responded.size(), task_.members.size());
  MaybeCloseTask(false);
}

void RoundEngine::FailStream(const std::string& peer, const std::string& reason) {
  auto log = GetLogger("coordinator");
  auto it = streams_.find(peer);
  if (it == streams_.end() || !it->second.sink) return;
  std::unique_ptr<ResultStream> sink = std::move(it->second.sink);  // marks the stream failed
  const size_t folded = sink->folded();
  sink->Abandon();
  sink.reset();
  if (folded == 0) {
    // Nothing reached the sum: the result is rejected like a malformed one.
    task_.answered.insert(peer);
    ++task_.report.rejected;
    log->warn("round {}: result from {} for task {} rejected: {}", round_, peer, it->second.task_id,
              reason);
    MaybeCloseTask(false);
    return;
  }
  stream_barred_.insert(peer);
  round_metrics_["voided"] = 1;
  log->warn("round {}: voided by client {}: its streamed upload for task {} failed after {} "
            "values were folded into the round's sum ({}); the round's update is not applied, "
            "and {}'s later uploads come whole", round_, peer, it->second.task_id, folded, reason,
            peer);
  FinishRound(false, "voided by client " + peer + ", whose streamed upload failed part-way: " +
                         reason);
}

void RoundEngine::DropStreams() {
  for (auto& [peer, stream] : streams_) {
    if (stream.sink) stream.sink->Abandon();
  }
  streams_.clear();
}

bool RoundEngine::StreamsInProgress() const {
  for (const auto& [peer, stream] : streams_) {
    if (stream.sink && stream.sink->folded() > 0) return true;
  }
  return false;
}

}  // namespace tandem

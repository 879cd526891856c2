// The coordinator's half of route-gapg; see algorithms/route_gapg/server.h.
#include "algorithms/route_gapg/server.h"

#include <cmath>
#include <cstring>

#include "algorithms/common/task_parts.h"
#include "algorithms/route_gapg/local_gapg.h"
#include "algorithms/route_gapg/score.h"
#include "core/config.h"
#include "route/gapg.h"
#include "train/evaluate.h"

namespace tandem {

StatusOr<RouteGapgServerConfig> RouteGapgServerConfigFromConfig(const Config& config) {
  RouteGapgServerConfig c;
  RouteGapgTrainTask& t = c.task;
  auto key = [](const char* name) { return std::string("route-gapg.") + name; };
  TANDEM_ASSIGN_OR_RETURN(c.device_checkpoint, config.RequireString(key("device_checkpoint")));
  TANDEM_ASSIGN_OR_RETURN(c.cloud_checkpoint, config.RequireString(key("cloud_checkpoint")));
  TANDEM_ASSIGN_OR_RETURN(std::vector<int64_t> levels,
                          config.GetIntList(key("levels"), {1}, 1, kArithmeticMaxLevel));
  if (levels.empty()) return Status::InvalidArgument("route-gapg.levels must name a level");
  t.levels.assign(levels.begin(), levels.end());
  TANDEM_ASSIGN_OR_RETURN(t.split, config.GetChoice(key("split"), t.split, RouteGapgSplits()));
  TANDEM_ASSIGN_OR_RETURN(t.examples_per_level,
                          config.GetInt(key("examples_per_level"), t.examples_per_level, 1,
                                        10'000'000));
  TANDEM_ASSIGN_OR_RETURN(t.test_fraction,
                          config.GetDouble(key("test_fraction"), t.test_fraction, 0.01, 0.99));
  TANDEM_ASSIGN_OR_RETURN(int64_t task_data_seed, config.GetInt(key("task_data_seed"), 0, 0));
  t.task_data_seed = static_cast<uint64_t>(task_data_seed);
  TANDEM_ASSIGN_OR_RETURN(t.task_data_examples_per_level,
                          config.GetInt(key("task_data_examples_per_level"), 0, 0, 10'000'000));
  TANDEM_ASSIGN_OR_RETURN(c.client_budgets,
                          config.GetDoubleList(key("client_budgets"), c.client_budgets, 0.0, 1.0));
  if (c.client_budgets.empty()) {
    return Status::InvalidArgument("route-gapg.client_budgets must give at least one budget");
  }
  for (double b : c.client_budgets) {
    if (!(b > 0.0)) {
      return Status::InvalidArgument("route-gapg.client_budgets: a budget of " +
                                     std::to_string(b) +
                                     " lets the client hand nothing off; each must be in (0, 1]");
    }
  }
  TANDEM_ASSIGN_OR_RETURN(t.trainable,
                          config.GetChoice(key("trainable"), t.trainable, {"marker", "all"}));
  TANDEM_ASSIGN_OR_RETURN(t.mode, config.GetChoice(key("mode"), t.mode, {"gapg", "grpo"}));
  TANDEM_ASSIGN_OR_RETURN(c.local_steps,
                          config.GetInt(key("local_steps"), c.local_steps, 1, 1'000'000));
  t.local_steps = c.local_steps;
  TANDEM_ASSIGN_OR_RETURN(t.lr, config.GetDouble(key("lr"), t.lr, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t g, config.GetInt(key("group_size"), t.group_size, 2, 1024));
  t.group_size = static_cast<int>(g);
  TANDEM_ASSIGN_OR_RETURN(int64_t pps,
                          config.GetInt(key("prompts_per_step"), t.prompts_per_step, 1, 4096));
  t.prompts_per_step = static_cast<int>(pps);
  TANDEM_ASSIGN_OR_RETURN(t.temperature,
                          config.GetDouble(key("temperature"), t.temperature, 0.01, 100.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t mt, config.GetInt(key("max_tokens"), t.max_tokens, 1, 64));
  t.max_tokens = static_cast<int>(mt);
  TANDEM_ASSIGN_OR_RETURN(t.answer_correct,
                          config.GetDouble(key("answer_correct"), t.answer_correct));
  TANDEM_ASSIGN_OR_RETURN(t.handoff_correct,
                          config.GetDouble(key("handoff_correct"), t.handoff_correct));
  if (Status s = GapgRewards{t.answer_correct, t.handoff_correct}.Validate(); !s.ok()) {
    return Status::InvalidArgument("route-gapg.answer_correct and route-gapg.handoff_correct: " +
                                   s.message());
  }
  TANDEM_ASSIGN_OR_RETURN(c.filter, config.GetBool(key("filter"), c.filter));
  TANDEM_ASSIGN_OR_RETURN(t.rho, config.GetDouble(key("rho"), t.rho, 0.0, 1e6));
  if (!c.filter) t.rho = -1.0;
  TANDEM_ASSIGN_OR_RETURN(c.warm_start_steps,
                          config.GetInt(key("warm_start_steps"), c.warm_start_steps, 0,
                                        1'000'000));
  TANDEM_ASSIGN_OR_RETURN(t.warm_start_handoff_fraction,
                          config.GetDouble(key("warm_start_handoff_fraction"),
                                           t.warm_start_handoff_fraction, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(t.warm_start_lr,
                          config.GetDouble(key("warm_start_lr"), t.warm_start_lr, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t wb,
                          config.GetInt(key("warm_start_batch"), t.warm_start_batch, 1, 4096));
  t.warm_start_batch = static_cast<int>(wb);
  TANDEM_ASSIGN_OR_RETURN(c.strategy, StrategyConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, config.GetInt("seed", 1, 0));
  t.seed = static_cast<uint64_t>(seed);
  TANDEM_ASSIGN_OR_RETURN(int64_t clients, config.GetInt("federation.clients", 4, 1, 100'000));
  c.clients = static_cast<int>(clients);
  TANDEM_ASSIGN_OR_RETURN(int64_t operand_parts,
                          config.GetInt(key("operand_parts"), 0, 0, 100'000));
  TANDEM_ASSIGN_OR_RETURN(t.parts,
                          RouteGapgPartCount(t.split, t.levels, operand_parts, c.clients));
  TANDEM_ASSIGN_OR_RETURN(std::vector<int64_t> parts,
                          config.GetIntList(key("client_parts"), {}, 0, 100'000));
  for (int64_t p : parts) {
    if (p >= t.parts) {
      return Status::InvalidArgument("route-gapg.client_parts: part " + std::to_string(p) +
                                     " of a split into " + std::to_string(t.parts) + " parts");
    }
  }
  c.client_parts.assign(parts.begin(), parts.end());
  TANDEM_ASSIGN_OR_RETURN(c.eval_budget,
                          config.GetDouble(key("eval_budget"), c.eval_budget, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(c.eval_cap,
                          config.GetChoice(key("eval_cap"), c.eval_cap, {"online", "ranked"}));
  TANDEM_ASSIGN_OR_RETURN(c.rounds, config.GetInt("federation.rounds", 10, 1, 1'000'000));
  TANDEM_ASSIGN_OR_RETURN(c.eval_tokens, config.GetInt("eval.tokens", c.eval_tokens, 0));
  TANDEM_ASSIGN_OR_RETURN(bool serve, config.GetBool("serve.enabled", false));
  if (!serve) {
    return Status::InvalidArgument("route-gapg: the clients ask the cloud through the "
                                   "coordinator's inference service; set serve.enabled = true");
  }
  // Every client's share of the prompts, checked now rather than at its first task.
  TANDEM_ASSIGN_OR_RETURN(RoutePrompts all, MakeRoutePrompts(t.PromptSettings()));
  for (int k = 0; k < c.clients; ++k) {
    auto share = ClientRoutePrompts(all, t.split, t.levels, c.PartOf(k), t.parts);
    if (!share.ok()) {
      return share.status().WithContext("route-gapg.split, route-gapg.levels (client " +
                                        std::to_string(k) + ")");
    }
  }
  return c;
}

int RouteGapgServerConfig::PartOf(int client_index) const {
  const int k = std::max(0, client_index);
  if (!client_parts.empty()) return client_parts[static_cast<size_t>(k) % client_parts.size()];
  return k % std::max(1, task.parts);
}

RouteGapgServer::RouteGapgServer(RouteGapgServerConfig config, std::unique_ptr<Gpt> device,
                                 std::unique_ptr<Gpt> cloud, std::unique_ptr<Strategy> strategy)
    : config_(std::move(config)), device_(std::move(device)), cloud_(std::move(cloud)),
      strategy_(std::move(strategy)) {}

StatusOr<std::unique_ptr<RouteGapgServer>> RouteGapgServer::Create(
    RouteGapgServerConfig config, std::unique_ptr<Gpt> device, std::unique_ptr<Gpt> cloud,
    std::unique_ptr<Strategy> strategy, std::vector<Record> validation) {
  if (cloud->params().size() < device->params().size()) {
    return Status::InvalidArgument(
        "route-gapg: the cloud (" + cloud->config().ToString() + ") is smaller than the device (" +
        device->config().ToString() + "); the inference service serves the larger model");
  }
  if (cloud->config().vocab != device->config().vocab) {
    return Status::InvalidArgument("route-gapg: the cloud and the device have different "
                                   "vocabularies");
  }
  // Every prompt and max_tokens answer tokens fit both contexts.
  TANDEM_ASSIGN_OR_RETURN(RoutePrompts all, MakeRoutePrompts(config.task.PromptSettings()));
  size_t longest = 0;
  for (const auto* set : {&all.train, &all.test}) {
    for (const auto& e : *set) longest = std::max(longest, e.prompt.size() + 1);
  }
  const int need = static_cast<int>(longest) + config.task.max_tokens;
  if (need > device->config().context || need > cloud->config().context) {
    return Status::InvalidArgument("route-gapg: prompts of up to " + std::to_string(longest) +
                                   " tokens and max_tokens " +
                                   std::to_string(config.task.max_tokens) +
                                   " do not fit the device's or the cloud's context");
  }
  std::unique_ptr<RouteGapgServer> s(new RouteGapgServer(std::move(config), std::move(device),
                                                         std::move(cloud), std::move(strategy)));
  s->validation_ = std::move(validation);
  s->range_ = RoutePolicyRange(*s->device_, s->config_.task.trainable);
  const auto p = s->device_->params();
  s->policy_.assign(p.begin() + s->range_.begin, p.begin() + s->range_.end);
  return s;
}

StatusOr<TaskSpec> RouteGapgServer::BeginRound(uint64_t round, const std::vector<ClientInfo>&) {
  round_ = round;
  aggregated_ = false;
  client_metrics_.clear();
  strategy_->BeginRound(policy_.size());
  RouteGapgTrainTask task = config_.task;
  // The warm start teaches the marker once, at the start of the run.
  task.warm_start_steps = round == 1 ? config_.warm_start_steps : 0;
  TaskSpec spec;
  spec.kind = kRouteGapgTrainTask;
  task.Encode(&spec.params);
  spec.tensors = {wire::Tensor::Float32("policy", {policy_.size()}, policy_)};
  spec.contribution = ContributionSpec{"delta", policy_.size()};
  return spec;
}

void RouteGapgServer::Customize(const ClientInfo& client, wire::TaskAssign* assign) {
  const size_t k = static_cast<size_t>(std::max(0, client.index));
  assign->params["route.client"] = static_cast<int64_t>(k);
  assign->params["route.part"] = static_cast<int64_t>(config_.PartOf(client.index));
  assign->params["route.budget"] = config_.client_budgets[k % config_.client_budgets.size()];
  if (sent_device_[client.name]) return;
  if (!device_tensor_) {
    const auto p = device_->params();
    device_tensor_ = wire::Tensor::Float32("device", {p.size()}, p);
  }
  assign->tensors.push_back(*device_tensor_);
  sent_device_[client.name] = true;
}

Status RouteGapgServer::OnResult(const ClientInfo& client, const wire::TaskResult& result) {
  if (!(result.weight > 0.0)) {
    return Status::InvalidArgument("weight " + std::to_string(result.weight) + " is not positive");
  }
  // The client's figures are for the metrics line only; when present they must make sense.
  for (const char* name : {"mean_reward", "handoff_rate", "cloud_queries", "cloud_queries_total"}) {
    auto it = result.metrics.find(name);
    if (it != result.metrics.end() && !(std::isfinite(it->second) && it->second >= 0.0)) {
      return Status::InvalidArgument(std::string("metric '") + name + "' is negative");
    }
  }
  const wire::Tensor* delta = FindTensor(result.tensors, "delta");
  if (result.tensors.size() != 1 || delta == nullptr || delta->dtype != wire::DType::kFloat32 ||
      delta->shape.size() != 1 || delta->shape[0] != policy_.size()) {
    return Status::InvalidArgument("expected one tensor 'delta' of f32[" +
                                   std::to_string(policy_.size()) + "] (the policy)");
  }
  TANDEM_RETURN_IF_ERROR(strategy_->AddDelta(delta->ToFloat32(), result.weight));
  client_metrics_[client.name] = {client.index, result.metrics};
  return Status::Ok();
}

Status RouteGapgServer::OnAggregate(const Aggregate& aggregate) {
  const std::vector<float> before = policy_;
  TANDEM_RETURN_IF_ERROR(strategy_->ApplyAggregate(aggregate.mean, policy_));
  double sq = 0.0;
  for (size_t i = 0; i < policy_.size(); ++i) sq += double(policy_[i] - before[i]) * (policy_[i] - before[i]);
  policy_change_ = std::sqrt(sq);
  aggregated_ = true;
  return Status::Ok();
}

StatusOr<std::optional<TaskSpec>> RouteGapgServer::OnTaskClosed(const TaskReport& report) {
  // A member that did not answer may not hold the device: send it again.
  for (const std::string& name : report.assigned) {
    if (std::find(report.responded.begin(), report.responded.end(), name) ==
        report.responded.end()) {
      sent_device_.erase(name);
    }
  }
  if (!aggregated_) {
    const std::vector<float> before = policy_;
    TANDEM_RETURN_IF_ERROR(strategy_->Apply(policy_));
    double sq = 0.0;
    for (size_t i = 0; i < policy_.size(); ++i) {
      sq += double(policy_[i] - before[i]) * (policy_[i] - before[i]);
    }
    policy_change_ = std::sqrt(sq);
  }
  aggregated_ = false;
  std::copy(policy_.begin(), policy_.end(), device_->params().begin() + range_.begin);
  return std::optional<TaskSpec>();
}

void RouteGapgServer::AbortRound() {
  aggregated_ = false;
  client_metrics_.clear();
  sent_device_.clear();  // who received what is unknown
}

Status RouteGapgServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  (*metrics)["policy_change"] = policy_change_;
  // The device's text loss on [data]'s held-out records. With route-gapg.trainable = "marker"
  // only the marker's logit moves, which still shifts this loss through the softmax's
  // denominator: the greedy answers stay, their probabilities do not.
  TANDEM_ASSIGN_OR_RETURN(double v, HeldOutLoss(*device_, validation_, 16, config_.eval_tokens));
  if (std::isfinite(v)) (*metrics)["val_loss"] = v;
  if (static_cast<int64_t>(round) == config_.rounds) TANDEM_RETURN_IF_ERROR(Score(metrics));
  // The clients' own figures (not under the privacy pipeline, where results arrive as a mean).
  if (client_metrics_.empty()) return Status::Ok();
  double weight = 0.0;
  std::map<std::string, double> mean;
  double queries = 0.0, queries_total = 0.0, refused = 0.0, bytes_up = 0.0, bytes_down = 0.0;
  for (const auto& [name, entry] : client_metrics_) {
    // Named, not a structured binding: clang before 16 cannot capture bindings in a lambda.
    const int index = entry.first;
    const wire::Metrics& m = entry.second;
    auto get = [&](const char* k) {
      auto it = m.find(k);
      return it == m.end() ? 0.0 : it->second;
    };
    for (const char* k : {"mean_reward", "handoff_rate", "local_correct_rate"}) {
      mean[k] += get(k);
      (*metrics)["client" + std::to_string(index) + "." + k] = get(k);
    }
    (*metrics)["client" + std::to_string(index) + ".cloud_queries_total"] =
        get("cloud_queries_total");
    queries += get("cloud_queries");
    queries_total += get("cloud_queries_total");
    refused += get("refused_handoffs");
    bytes_up += get("serve_bytes_up");
    bytes_down += get("serve_bytes_down");
    weight += 1.0;
  }
  for (const auto& [k, v] : mean) (*metrics)[k] = v / weight;
  (*metrics)["cloud_queries"] = queries;
  (*metrics)["cloud_queries_total"] = queries_total;
  (*metrics)["refused_handoffs"] = refused;
  (*metrics)["serve_bytes_up"] = bytes_up;
  (*metrics)["serve_bytes_down"] = bytes_down;
  return Status::Ok();
}

Status RouteGapgServer::Score(std::map<std::string, double>* metrics) const {
  const RouteGapgTrainTask& t = config_.task;
  TANDEM_ASSIGN_OR_RETURN(RoutePrompts all, MakeRoutePrompts(t.PromptSettings()));
  auto put = [&](const std::string& prefix, const RouteShareScore& s) {
    (*metrics)[prefix + ".accuracy"] = s.accuracy();
    (*metrics)[prefix + ".local_accuracy"] = s.local_accuracy();
    (*metrics)[prefix + ".call_ratio"] = s.call_ratio();
    (*metrics)[prefix + ".device_accuracy"] = s.device_accuracy();
    (*metrics)[prefix + ".cloud_accuracy"] = s.cloud_accuracy();
    (*metrics)[prefix + ".queries"] = static_cast<double>(s.queries);
  };
  for (int p = 0; p < t.parts; ++p) {
    TANDEM_ASSIGN_OR_RETURN(RoutePrompts share, ClientRoutePrompts(all, t.split, t.levels, p,
                                                                   t.parts));
    TANDEM_ASSIGN_OR_RETURN(RouteShareScore s,
                            ScoreRouteShare(*device_, *cloud_, share, config_.eval_budget, config_.eval_cap, t));
    put("eval.part" + std::to_string(p), s);
  }
  TANDEM_ASSIGN_OR_RETURN(RouteShareScore s,
                          ScoreRouteShare(*device_, *cloud_, all, config_.eval_budget, config_.eval_cap, t));
  put("eval.union", s);
  return Status::Ok();
}

std::vector<RunModel> RouteGapgServer::Models() const {
  return {{"cloud", cloud_.get(), false, ""}, {"model", device_.get(), true, ""}};
}

std::optional<std::string> RouteGapgServer::PrivacyConflict() const {
  if (strategy_->NeedsIndividualContributions()) {
    return "strategy " + strategy_->name() + " needs every client's delta";
  }
  return std::nullopt;
}

void RouteGapgServer::SaveState(std::map<std::string, std::vector<float>>* tensors,
                                std::map<std::string, std::string>* metadata) const {
  const auto p = device_->params();
  (*tensors)["device.params"] = std::vector<float>(p.begin(), p.end());
  SaveStrategyState(*strategy_, tensors);
  (*metadata)["model"] = device_->config().ToString();
  (*metadata)["trainable"] = config_.task.trainable;
  (*metadata)["strategy"] = strategy_->name();
}

Status RouteGapgServer::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  TANDEM_RETURN_IF_ERROR(
      ExpectSavedValue(metadata, "model", device_->config().ToString(), "device"));
  TANDEM_RETURN_IF_ERROR(ExpectSavedValue(metadata, "trainable", config_.task.trainable,
                                          "route-gapg.trainable ="));
  TANDEM_RETURN_IF_ERROR(ExpectSavedValue(metadata, "strategy", strategy_->name(), "strategy"));
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float>* params,
                          SavedTensor(tensors, "device.params", device_->params().size()));
  TANDEM_RETURN_IF_ERROR(LoadStrategyState(tensors, policy_.size(), strategy_.get()));
  std::memcpy(device_->params().data(), params->data(), params->size() * sizeof(float));
  const auto p = device_->params();
  policy_.assign(p.begin() + range_.begin, p.begin() + range_.end);
  sent_device_.clear();
  device_tensor_.reset();
  return Status::Ok();
}

}  // namespace tandem

// The coordinator's half of fedavg; see algorithms/fedavg/server.h.
#include "algorithms/fedavg/server.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <cstring>

#include "algorithms/common/task_parts.h"
#include "algorithms/fedavg/tasks.h"
#include "core/config.h"
#include "core/logging.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

constexpr const char* kTrainTask = kFedAvgTrainTask;
constexpr const char* kEvalTask = kFedAvgEvalTask;

}  // namespace

StatusOr<FedAvgServerConfig> FedAvgServerConfigFromConfig(const Config& config) {
  FedAvgServerConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.local, LocalTrainConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(c.strategy, StrategyConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(c.eval_tokens, config.GetInt("eval.tokens", c.eval_tokens, 0));
  TANDEM_ASSIGN_OR_RETURN(c.client_eval, config.GetBool("eval.clients", c.client_eval));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, config.GetInt("seed", 1, 0));
  c.seed = static_cast<uint64_t>(seed);
  return c;
}

FedAvgServer::FedAvgServer(FedAvgServerConfig config, std::unique_ptr<Gpt> model,
                           std::unique_ptr<Strategy> strategy, std::vector<Record> validation)
    : config_(std::move(config)), model_(std::move(model)), strategy_(std::move(strategy)),
      validation_(std::move(validation)) {}

std::vector<std::string> FedAvgServer::RequiredCapabilities() const {
  if (config_.client_eval) return {kTrainTask, kEvalTask};
  return {kTrainTask};
}

TaskSpec FedAvgServer::ModelTask(const std::string& kind, wire::Params params) const {
  TaskSpec spec;
  spec.kind = kind;
  spec.params = std::move(params);
  EncodeWeights(*model_, &spec.params, &spec.tensors);
  return spec;
}

std::vector<RunModel> FedAvgServer::Models() const { return {{"model", model_.get(), true, ""}}; }

std::optional<std::string> FedAvgServer::PrivacyConflict() const {
  if (config_.client_eval) {
    return "eval.clients = true reports each client's held-out loss in the clear, outside secure "
           "aggregation and the privacy accounting";
  }
  if (strategy_->NeedsIndividualContributions()) {
    return "strategy.name = \"" + config_.strategy.name + "\" needs every client's update, which "
           "differential privacy and secure aggregation do not reveal; use a mean-based strategy";
  }
  return std::nullopt;
}

StatusOr<TaskSpec> FedAvgServer::BeginRound(uint64_t round,
                                            const std::vector<ClientInfo>& cohort) {
  round_ = round;
  task_kind_ = kTrainTask;
  aggregated_ = false;
  train_loss_sum_ = train_weight_ = client_val_sum_ = client_val_weight_ = 0.0;
  compute_max_ = compute_sum_ = 0.0;
  compute_count_ = 0;
  strategy_->BeginRound(model_->params().size());
  // Local sampling depends on (seed, client, round) only, so a resumed run replays a round
  // exactly.
  wire::Params params;
  FedAvgTrainTask{LocalTrainParams{config_.local, config_.seed},
                  config_.strategy.name == "fedprox" ? config_.strategy.proximal_mu : 0.0}
      .Encode(&params);
  TaskSpec spec = ModelTask(kTrainTask, std::move(params));
  spec.contribution = ContributionSpec{"delta", model_->params().size()};
  return spec;
}

Status FedAvgServer::OnAggregate(const Aggregate& aggregate) {
  TANDEM_RETURN_IF_ERROR(strategy_->ApplyAggregate(aggregate.mean, model_->params()));
  aggregated_ = true;
  return Status::Ok();
}

StatusOr<double> FedAvgServer::CheckTrainResult(const wire::TaskResult& result) const {
  const size_t n = model_->params().size();
  if (result.tensors.size() != 1) {
    return Status::InvalidArgument("expected one tensor 'delta', got " +
                                   std::to_string(result.tensors.size()));
  }
  const wire::Tensor* delta = FindTensor(result.tensors, "delta");
  if (delta == nullptr || delta->dtype != wire::DType::kFloat32 || delta->shape.size() != 1 ||
      delta->shape[0] != n) {
    return Status::InvalidArgument("expected tensor 'delta' of f32[" + std::to_string(n) + "]");
  }
  auto it = result.metrics.find("train_loss");
  if (it == result.metrics.end()) return Status::InvalidArgument("metric 'train_loss' missing");
  if (!(it->second >= 0.0)) return Status::InvalidArgument("train_loss is negative");
  return it->second;
}

void FedAvgServer::CountTrainResult(const wire::TaskResult& result, double loss) {
  train_loss_sum_ += loss * result.weight;
  train_weight_ += result.weight;
  if (auto it = result.metrics.find("compute_s"); it != result.metrics.end() && it->second >= 0) {
    compute_max_ = std::max(compute_max_, it->second);
    compute_sum_ += it->second;
    ++compute_count_;
  }
}

Status FedAvgServer::OnResult(const ClientInfo& client, const wire::TaskResult& result) {
  const size_t n = model_->params().size();
  if (!(result.weight > 0.0)) {
    return Status::InvalidArgument("weight " + std::to_string(result.weight) + " is not positive");
  }
  if (task_kind_ == kEvalTask) {
    auto it = result.metrics.find("val_loss");
    if (it == result.metrics.end()) return Status::InvalidArgument("metric 'val_loss' missing");
    const double loss = it->second;
    if (!(loss >= 0.0)) return Status::InvalidArgument("val_loss is negative");
    client_val_sum_ += loss * result.weight;
    client_val_weight_ += result.weight;
    return Status::Ok();
  }
  TANDEM_ASSIGN_OR_RETURN(double loss, CheckTrainResult(result));
  const wire::Tensor* delta = FindTensor(result.tensors, "delta");
  // The strategy validates values and adds them atomically; only then are metrics counted.
  // Read in place when the bytes are float-aligned (they are: decoded tensors own heap strings);
  // a copy would double the coordinator's per-result memory.
  std::vector<float> copy;
  std::span<const float> values;
  if constexpr (std::endian::native == std::endian::little) {
    if (reinterpret_cast<uintptr_t>(delta->data.data()) % alignof(float) == 0) {
      values = {reinterpret_cast<const float*>(delta->data.data()), n};
    }
  }
  if (values.empty()) {
    copy.resize(n);
    delta->CopyTo(copy);
    values = copy;
  }
  TANDEM_RETURN_IF_ERROR(strategy_->AddDelta(values, result.weight));
  CountTrainResult(result, loss);
  return Status::Ok();
}

// One training result's delta, folded into the strategy's running sum piece by piece.
class FedAvgServer::DeltaStream final : public ResultStream {
 public:
  DeltaStream(FedAvgServer* server, std::unique_ptr<RunningSum::Part> part)
      : server_(server), part_(std::move(part)) {}
  ~DeltaStream() override { part_->Abandon(); }

  Status Add(size_t offset, std::span<const float> values) override {
    return part_->Add(offset, values);
  }
  size_t folded() const override { return part_->folded(); }
  Status Finish(const wire::TaskResult& rest) override {
    // The weight the values were folded with is the offer's; the result must say the same.
    if (rest.weight != part_->weight()) {
      return Status::InvalidArgument("weight " + std::to_string(rest.weight) +
                                     " differs from the " + std::to_string(part_->weight()) +
                                     " its upload was offered with");
    }
    TANDEM_ASSIGN_OR_RETURN(double loss, server_->CheckTrainResult(rest));
    if (!FindTensor(rest.tensors, "delta")->data.empty()) {
      return Status::InvalidArgument("a streamed result's tensor 'delta' carries values again");
    }
    TANDEM_RETURN_IF_ERROR(part_->Finish());
    server_->CountTrainResult(rest, loss);
    return Status::Ok();
  }
  void Abandon() override { part_->Abandon(); }

 private:
  FedAvgServer* server_;
  std::unique_ptr<RunningSum::Part> part_;
};

StatusOr<std::unique_ptr<ResultStream>> FedAvgServer::StreamResult(const ClientInfo& client,
                                                                   double weight, size_t values) {
  if (task_kind_ != kTrainTask || aggregated_) return std::unique_ptr<ResultStream>();
  if (values != model_->params().size()) {
    return Status::InvalidArgument("offered " + std::to_string(values) + " values, the model has " +
                                   std::to_string(model_->params().size()));
  }
  if (!(weight > 0.0)) {
    return Status::InvalidArgument("weight " + std::to_string(weight) + " is not positive");
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<RunningSum::Part> part, strategy_->StreamDelta(weight));
  if (!part) return std::unique_ptr<ResultStream>();
  return std::unique_ptr<ResultStream>(new DeltaStream(this, std::move(part)));
}

StatusOr<std::optional<TaskSpec>> FedAvgServer::OnTaskClosed(const TaskReport& report) {
  if (task_kind_ == kTrainTask) {
    // Under the privacy pipeline the step was taken from the aggregate already.
    if (!aggregated_) TANDEM_RETURN_IF_ERROR(strategy_->Apply(model_->params()));
    aggregated_ = false;
    if (config_.client_eval) {
      task_kind_ = kEvalTask;
      return std::optional<TaskSpec>(
          ModelTask(kEvalTask, {{"eval_tokens", config_.eval_tokens}}));
    }
  }
  return std::optional<TaskSpec>();
}

void FedAvgServer::AbortRound() {
  // Apply() was not reached (or the eval task failed after it, which leaves a valid model): the
  // running sum is simply discarded at the next BeginRound.
  train_loss_sum_ = train_weight_ = client_val_sum_ = client_val_weight_ = 0.0;
}

StatusOr<double> FedAvgServer::ValidationLoss() {
  return HeldOutLoss(*model_, validation_, 16, config_.eval_tokens);
}

Status FedAvgServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  if (train_weight_ > 0) (*metrics)["train_loss"] = train_loss_sum_ / train_weight_;
  if (client_val_weight_ > 0) (*metrics)["client_val_loss"] = client_val_sum_ / client_val_weight_;
  if (compute_count_ > 0) {
    (*metrics)["client_compute_s_max"] = compute_max_;
    (*metrics)["client_compute_s_mean"] = compute_sum_ / compute_count_;
  }
  TANDEM_ASSIGN_OR_RETURN(double v, ValidationLoss());
  if (std::isfinite(v)) {
    (*metrics)["val_loss"] = v;
    (*metrics)["val_ppl"] = std::exp(v);
  }
  return Status::Ok();
}

void FedAvgServer::SaveState(std::map<std::string, std::vector<float>>* tensors,
                             std::map<std::string, std::string>* metadata) const {
  SaveModelWithStrategy(*model_, *strategy_, tensors, metadata);
}

Status FedAvgServer::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  return LoadModelWithStrategy(tensors, metadata, model_.get(), strategy_.get());
}

}  // namespace tandem

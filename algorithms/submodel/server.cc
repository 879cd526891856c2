// The coordinator's half of submodel; see algorithms/submodel/server.h.
#include "algorithms/submodel/server.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "algorithms/common/task_parts.h"
#include "algorithms/submodel/tasks.h"
#include "core/config.h"
#include "data/batcher.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

// (count, batch, context) consecutive windows of the public text, from its start: the same
// calibration text every round, so importance windows move only when the model does.
StatusOr<CalibrationBatches> Calibration(const std::vector<Record>& records, int count,
                                         int context) {
  constexpr int kBatch = 4;
  const TokenDataset stream = TokenDataset::FromRecords(records);
  const auto& tokens = stream.tokens();
  const size_t need = static_cast<size_t>(count) * kBatch * context + 1;
  if (tokens.size() < need) {
    return Status::InvalidArgument(
        "submodel.importance needs " + std::to_string(need) + " tokens of public text for " +
        std::to_string(count) + " calibration batches (submodel.calibration_batches), the public "
        "split has " + std::to_string(tokens.size()) + "; set data.public_categories or use "
        "submodel.importance = \"magnitude\"");
  }
  CalibrationBatches c;
  c.batch = kBatch;
  c.context = context;
  c.tokens.assign(tokens.begin(), tokens.begin() + (need - 1));
  c.targets.assign(tokens.begin() + 1, tokens.begin() + need);
  return c;
}

}  // namespace

StatusOr<SubmodelServerConfig> SubmodelServerConfigFromConfig(const Config& config) {
  SubmodelServerConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.local, LocalTrainConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(c.strategy, StrategyConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(c.width_divisors,
                          config.GetIntList("submodel.width_divisors", c.width_divisors, 1, 64));
  if (c.width_divisors.empty()) {
    return Status::InvalidArgument("submodel.width_divisors is empty; give each client a width "
                                   "divisor, e.g. [1, 2, 4] for widths 1, 1/2 and 1/4");
  }
  TANDEM_ASSIGN_OR_RETURN(std::string window,
                          config.GetChoice("submodel.window", "static",
                                           {"static", "rolling", "importance"}));
  TANDEM_ASSIGN_OR_RETURN(c.window, ParseWindowKind(window));
  TANDEM_ASSIGN_OR_RETURN(int64_t stride, config.GetInt("submodel.stride", 0, 0, 1 << 20));
  c.stride = static_cast<int>(stride);
  TANDEM_ASSIGN_OR_RETURN(c.shrink_channels, config.GetBool("submodel.shrink_channels", true));
  TANDEM_ASSIGN_OR_RETURN(std::string importance,
                          config.GetChoice("submodel.importance", "magnitude",
                                           {"activation", "taylor", "magnitude", "random"}));
  TANDEM_ASSIGN_OR_RETURN(c.importance, ParseImportanceMethod(importance));
  TANDEM_ASSIGN_OR_RETURN(int64_t batches,
                          config.GetInt("submodel.calibration_batches", 4, 1, 1024));
  c.calibration_batches = static_cast<int>(batches);
  TANDEM_ASSIGN_OR_RETURN(c.eval_tokens, config.GetInt("eval.tokens", c.eval_tokens, 0));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, config.GetInt("seed", 1, 0));
  c.seed = static_cast<uint64_t>(seed);
  return c;
}

SubmodelServer::SubmodelServer(SubmodelServerConfig config, std::unique_ptr<Gpt> model,
                               std::unique_ptr<Strategy> strategy, std::vector<Record> validation,
                               std::vector<Record> public_records, bool privacy)
    : config_(std::move(config)), model_(std::move(model)), strategy_(std::move(strategy)),
      validation_(std::move(validation)), public_(std::move(public_records)), privacy_(privacy),
      ever_covered_(model_->params().size(), 0) {}

std::vector<std::string> SubmodelServer::RequiredCapabilities() const {
  return {kSubmodelTrainTask};
}

int SubmodelServer::DivisorOf(int index) const {
  const auto& d = config_.width_divisors;
  return static_cast<int>(index < 0 ? d[0] : d[static_cast<size_t>(index) % d.size()]);
}

int SubmodelServer::DivisorOfName(const std::string& name) const {
  int index = -1;
  if (name.rfind("client-", 0) == 0) {
    char* end = nullptr;
    const long k = std::strtol(name.c_str() + 7, &end, 10);
    if (end != name.c_str() + 7 && *end == '\0' && k >= 0) index = static_cast<int>(k);
  }
  return DivisorOf(index);
}

const Alignment* SubmodelServer::TierAlignment(int divisor) const {
  auto it = tiers_.find(divisor);
  return it == tiers_.end() || !it->second.alignment ? nullptr : &*it->second.alignment;
}

Status SubmodelServer::MakeTiers(uint64_t round) {
  std::optional<ImportanceScores> scores;
  if (config_.window == WindowKind::kImportance) {
    CalibrationBatches calibration;
    if (config_.importance == ImportanceMethod::kActivation ||
        config_.importance == ImportanceMethod::kTaylor) {
      TANDEM_ASSIGN_OR_RETURN(calibration, Calibration(public_, config_.calibration_batches,
                                                       model_->config().context));
    }
    TANDEM_ASSIGN_OR_RETURN(scores, ComputeImportance(model_->shared_weights(),
                                                      config_.importance, calibration,
                                                      config_.seed));
  }
  tiers_.clear();
  for (int64_t d : config_.width_divisors) {
    if (tiers_.count(static_cast<int>(d))) continue;
    SubmodelSpec spec;
    spec.ratio = 1.0 / static_cast<double>(d);
    spec.kind = config_.window;
    spec.round = static_cast<int64_t>(round);
    spec.stride = config_.stride;
    spec.shrink_channels = config_.shrink_channels;
    spec.scores = scores ? &*scores : nullptr;
    TANDEM_ASSIGN_OR_RETURN(AlignmentMap map, SubmodelMap(model_->config(), spec));
    TANDEM_ASSIGN_OR_RETURN(Alignment alignment, Alignment::Create(std::move(map)));
    Tier& tier = tiers_[static_cast<int>(d)];
    tier.model_name = alignment.child_config().ToString();
    tier.alignment.emplace(std::move(alignment));
  }
  return Status::Ok();
}

StatusOr<TaskSpec> SubmodelServer::BeginRound(uint64_t round,
                                              const std::vector<ClientInfo>& cohort) {
  round_ = round;
  sum_.reset();
  aggregate_.reset();
  accepted_.clear();
  accepted_weight_.clear();
  train_loss_sum_ = train_weight_ = 0.0;
  tier_loss_sum_.clear();
  tier_weight_.clear();
  TANDEM_RETURN_IF_ERROR(MakeTiers(round));
  // Each tier's weights are cut once and shared by its clients' messages.
  for (auto& [d, tier] : tiers_) {
    std::vector<float> child(tier.alignment->child_size());
    tier.alignment->Extract(model_->params(), child);
    tier.weights = wire::Tensor::Float32("params", {child.size()}, child);
  }
  TaskSpec spec;
  spec.kind = kSubmodelTrainTask;
  LocalTrainParams{config_.local, config_.seed}.Encode(&spec.params);
  spec.contribution = ContributionSpec{"delta", model_->params().size()};
  return spec;
}

void SubmodelServer::Customize(const ClientInfo& client, wire::TaskAssign* assign) {
  const Tier& tier = tiers_.at(DivisorOf(client.index));
  SubmodelTrainTask task;
  task.local = LocalTrainParams{config_.local, config_.seed};
  task.map = tier.alignment->map();
  task.scatter = privacy_;
  assign->tensors = {*tier.weights};
  task.Encode(&assign->params, &assign->tensors);
  assign->params["model"] = tier.model_name;
}

Status SubmodelServer::OnResult(const ClientInfo& client, const wire::TaskResult& result) {
  const int d = DivisorOf(client.index);
  const Alignment* alignment = TierAlignment(d);
  if (alignment == nullptr) return Status::InvalidArgument("no sub-model for " + client.name);
  if (!(result.weight > 0.0)) {
    return Status::InvalidArgument("weight " + std::to_string(result.weight) + " is not positive");
  }
  auto loss = result.metrics.find("train_loss");
  if (loss == result.metrics.end() || !(loss->second >= 0.0)) {
    return Status::InvalidArgument("metric 'train_loss' missing or negative");
  }
  const size_t n = alignment->child_size();
  const wire::Tensor* delta = FindTensor(result.tensors, "delta");
  if (result.tensors.size() != 1 || delta == nullptr || delta->dtype != wire::DType::kFloat32 ||
      delta->shape.size() != 1 || delta->shape[0] != n) {
    return Status::InvalidArgument("expected one tensor 'delta' of f32[" + std::to_string(n) +
                                   "] (the width-1/" + std::to_string(d) + " sub-model)");
  }
  const std::vector<float> values = delta->ToFloat32();
  const size_t parent = model_->params().size();
  if (!sum_) sum_.emplace(parent);
  if (lifted_.size() != parent) lifted_.assign(parent, 0.0f);
  const auto& offsets = alignment->parent_offsets();
  for (size_t i = 0; i < n; ++i) lifted_[offsets[i]] = values[i];
  // RunningSum::Add validates (finite, in range) and adds all or nothing.
  Status added = sum_->Add(lifted_, result.weight);
  for (size_t i = 0; i < n; ++i) lifted_[offsets[i]] = 0.0f;
  TANDEM_RETURN_IF_ERROR(added);
  accepted_.push_back(client.name);
  accepted_weight_.push_back(result.weight);
  train_loss_sum_ += loss->second * result.weight;
  train_weight_ += result.weight;
  tier_loss_sum_[d] += loss->second * result.weight;
  tier_weight_[d] += result.weight;
  return Status::Ok();
}

Status SubmodelServer::OnAggregate(const Aggregate& aggregate) {
  // The contributors are known only when the task closes (under secure aggregation, the
  // survivors); the step waits for them.
  aggregate_ = aggregate;
  return Status::Ok();
}

Status SubmodelServer::ApplyCoveredMean(std::span<float> mean, double divisor,
                                        const std::vector<std::string>& contributors,
                                        const std::vector<double>& weights) {
  const size_t parent = model_->params().size();
  // Σ w of the clients covering each coordinate; weights are example counts or 1, so the double
  // sums are exact in any order.
  std::vector<double> coverage(parent, 0.0);
  for (size_t c = 0; c < contributors.size(); ++c) {
    const Alignment* a = TierAlignment(DivisorOfName(contributors[c]));
    if (a == nullptr) return Status::Internal("no sub-model for " + contributors[c]);
    const double w = weights.empty() ? 1.0 : weights[c];
    for (size_t o : a->parent_offsets()) coverage[o] += w;
  }
  size_t uncovered = 0;
  for (size_t i = 0; i < parent; ++i) {
    if (coverage[i] == 0.0) {
      mean[i] = 0.0f;
      ++uncovered;
      continue;
    }
    ever_covered_[i] = 1;
    if (coverage[i] != divisor) {
      mean[i] = static_cast<float>(static_cast<double>(mean[i]) * divisor / coverage[i]);
    }
  }
  uncovered_fraction_ = static_cast<double>(uncovered) / static_cast<double>(parent);
  return strategy_->ApplyAggregate(mean, model_->params());
}

StatusOr<std::optional<TaskSpec>> SubmodelServer::OnTaskClosed(const TaskReport& report) {
  if (aggregate_) {
    // Under the privacy pipeline: aggregate.mean = Σ lifted deltas / total_weight, every client
    // weighing 1.
    std::vector<float> mean = std::move(aggregate_->mean);
    const double divisor = aggregate_->total_weight;
    aggregate_.reset();
    TANDEM_RETURN_IF_ERROR(ApplyCoveredMean(mean, divisor, report.responded, {}));
  } else if (sum_ && sum_->count() > 0) {
    const double total = sum_->total_weight();
    TANDEM_ASSIGN_OR_RETURN(std::span<float> mean, sum_->MeanInPlace());
    TANDEM_RETURN_IF_ERROR(ApplyCoveredMean(mean, total, accepted_, accepted_weight_));
    sum_.reset();
  }
  return std::optional<TaskSpec>();
}

void SubmodelServer::AbortRound() {
  sum_.reset();
  aggregate_.reset();
  train_loss_sum_ = train_weight_ = 0.0;
}

Status SubmodelServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  if (train_weight_ > 0) (*metrics)["train_loss"] = train_loss_sum_ / train_weight_;
  (*metrics)["uncovered_fraction"] = uncovered_fraction_;
  {
    const auto never = std::count(ever_covered_.begin(), ever_covered_.end(), uint8_t{0});
    (*metrics)["never_updated_fraction"] =
        static_cast<double>(never) / static_cast<double>(ever_covered_.size());
  }
  TANDEM_ASSIGN_OR_RETURN(double v, HeldOutLoss(*model_, validation_, 16, config_.eval_tokens));
  if (std::isfinite(v)) {
    (*metrics)["val_loss"] = v;
    (*metrics)["val_ppl"] = std::exp(v);
  }
  // The sub-models of the next round's windows, cut from the new global model: what a device of
  // each tier would run.
  tier_models_.clear();
  for (auto& [d, tier] : tiers_) {
    if (d == 1) continue;
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<GptWeights> child,
                            Extract(model_->weights(), tier.alignment->map()));
    auto sub = std::make_unique<Gpt>(std::shared_ptr<GptWeights>(std::move(child)));
    TANDEM_ASSIGN_OR_RETURN(double loss,
                            HeldOutLoss(*sub, validation_, 16, config_.eval_tokens));
    if (std::isfinite(loss)) (*metrics)["val_loss_d" + std::to_string(d)] = loss;
    tier_models_[d] = std::move(sub);
  }
  return Status::Ok();
}

std::vector<RunModel> SubmodelServer::Models() const {
  std::vector<RunModel> models = {{"model", model_.get(), true, ""}};
  for (const auto& [d, sub] : tier_models_) {
    models.push_back({"submodel_d" + std::to_string(d), sub.get(), false, ""});
  }
  return models;
}

std::optional<std::string> SubmodelServer::PrivacyConflict() const { return std::nullopt; }

void SubmodelServer::SaveState(std::map<std::string, std::vector<float>>* tensors,
                               std::map<std::string, std::string>* metadata) const {
  SaveModelWithStrategy(*model_, *strategy_, tensors, metadata);
  (*tensors)["submodel.ever_covered"] = std::vector<float>(ever_covered_.begin(),
                                                           ever_covered_.end());
}

Status SubmodelServer::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float>* covered,
                          SavedTensor(tensors, "submodel.ever_covered", model_->params().size()));
  std::vector<uint8_t> ever_covered;
  ever_covered.reserve(covered->size());
  for (float v : *covered) {
    if (v != 0.0f && v != 1.0f) return Status::Corruption("submodel.ever_covered is not 0/1");
    ever_covered.push_back(v == 1.0f ? 1 : 0);
  }
  TANDEM_RETURN_IF_ERROR(LoadModelWithStrategy(tensors, metadata, model_.get(), strategy_.get()));
  ever_covered_ = std::move(ever_covered);
  return Status::Ok();
}

}  // namespace tandem

// The coordinator's half of offsite and fedbiot; see algorithms/offsite/server.h.
#include "algorithms/offsite/server.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "algorithms/common/task_parts.h"
#include "algorithms/offsite/emulator.h"
#include "algorithms/offsite/tasks.h"
#include "core/config.h"
#include "core/rng.h"
#include "data/public_windows.h"
#include "distill/kd_terms.h"
#include "prune/extract.h"
#include "prune/plan.h"
#include "train/evaluate.h"
#include "train/local_trainer.h"

namespace tandem {
namespace {

// A LoRA config as the checkpoint records it: "rank=8 alpha=16 targets=a,b layers=0,3".
std::string LoraText(const LoraConfig& lora) {
  std::string s = "rank=" + std::to_string(lora.rank) + " alpha=" + std::to_string(lora.alpha) +
                  " targets=";
  for (size_t i = 0; i < lora.targets.size(); ++i) s += (i ? "," : "") + lora.targets[i];
  s += " layers=";
  for (size_t i = 0; i < lora.layers.size(); ++i) {
    s += (i ? "," : "") + std::to_string(lora.layers[i]);
  }
  return s;
}

}  // namespace

StatusOr<OffsiteServerConfig> OffsiteServerConfigFromConfig(const Config& config,
                                                           const std::string& section) {
  OffsiteServerConfig c;
  c.section = section;
  c.realign_every_round = section == "fedbiot";
  auto key = [&](const char* name) { return section + "." + name; };
  TANDEM_ASSIGN_OR_RETURN(c.local, LocalTrainConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(c.strategy, StrategyConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(int64_t bottom, config.GetInt(key("bottom"), c.bottom, 0, 1024));
  TANDEM_ASSIGN_OR_RETURN(int64_t top, config.GetInt(key("top"), c.top, 0, 1024));
  c.bottom = static_cast<int>(bottom);
  c.top = static_cast<int>(top);
  TANDEM_ASSIGN_OR_RETURN(c.emulator_keep,
                          config.GetDouble(key("emulator_keep"), c.emulator_keep, 1e-6, 1.0));
  TANDEM_ASSIGN_OR_RETURN(c.adapters,
                          config.GetChoice(key("adapters"), c.adapters, {"full", "lora"}));
  // Read whatever the choice, so that every key is known; set with "full", they are an error.
  const std::string lora_prefix = key("lora");
  const bool lora_keys = config.Has(lora_prefix + ".rank") || config.Has(lora_prefix + ".alpha") ||
                         config.Has(lora_prefix + ".targets");
  if (c.adapters == "full" && lora_keys) {
    return Status::InvalidArgument(config.source() + ": " + lora_prefix +
                                   ".* is set and " + key("adapters") +
                                   " = \"full\"; set " + key("adapters") +
                                   " = \"lora\" to train LoRA adapters");
  }
  TANDEM_ASSIGN_OR_RETURN(c.lora, LoraConfigFromConfig(config, lora_prefix));
  c.align.server_steps = c.realign_every_round ? 8 : 0;
  c.align.alpha = 0.0;  // distillation to the LLM alone by default
  TANDEM_RETURN_IF_ERROR(ReadServerDistillConfig(config, section, &c.align));
  TANDEM_ASSIGN_OR_RETURN(c.hidden_weight,
                          config.GetDouble(key("hidden_weight"), c.hidden_weight, 0.0, 1e3));
  if (c.realign_every_round) {
    c.proximal_mu = 0.01;
    TANDEM_ASSIGN_OR_RETURN(c.proximal_mu,
                            config.GetDouble(key("proximal_mu"), c.proximal_mu, 0.0, 1e6));
  }
  TANDEM_ASSIGN_OR_RETURN(c.eval_tokens, config.GetInt("eval.tokens", c.eval_tokens, 0));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, config.GetInt("seed", 1, 0));
  c.seed = static_cast<uint64_t>(seed);
  return c;
}

OffsiteServer::OffsiteServer(OffsiteServerConfig config, std::unique_ptr<Gpt> llm,
                             std::unique_ptr<Strategy> strategy, std::vector<Record> validation,
                             std::vector<Record> public_records)
    : config_(std::move(config)), llm_(std::move(llm)), strategy_(std::move(strategy)),
      validation_(std::move(validation)),
      public_tokens_(TokenDataset::FromRecords(public_records)) {}

StatusOr<std::unique_ptr<OffsiteServer>> OffsiteServer::Create(
    OffsiteServerConfig config, std::unique_ptr<Gpt> llm, std::unique_ptr<Strategy> strategy,
    std::vector<Record> validation, std::vector<Record> public_records) {
  const std::string& section = config.section;
  auto map = EmulatorMap(llm->config(), config.bottom, config.top, config.emulator_keep);
  if (!map.ok()) {
    return map.status().WithContext(section + ".bottom, " + section + ".top, " + section +
                                    ".emulator_keep");
  }
  if (config.align.server_steps > 0 && public_records.empty()) {
    return Status::InvalidArgument(section + ".server_steps = " +
                                   std::to_string(config.align.server_steps) +
                                   " distils the emulator on public text, and the public split is "
                                   "empty; set data.public_categories");
  }
  std::unique_ptr<OffsiteServer> s(new OffsiteServer(std::move(config), std::move(llm),
                                                     std::move(strategy), std::move(validation),
                                                     std::move(public_records)));
  s->map_ = std::move(*map);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<GptWeights> cut, Extract(s->llm_->weights(), s->map_));
  s->emulator_ = std::make_unique<Gpt>(std::shared_ptr<GptWeights>(std::move(cut)));
  s->llm_ranges_ = AdapterRanges(*s->llm_, s->config_.bottom, s->config_.top);
  s->emulator_ranges_ = AdapterRanges(*s->emulator_, s->config_.bottom, s->config_.top);
  s->adapters_ = GatherRanges(s->llm_->params(), s->llm_ranges_);
  TANDEM_CHECK(RangesSize(s->emulator_ranges_) == s->adapters_.size());
  if (s->lora()) {
    // Fresh factors (B = 0: they change nothing yet) on the emulator's adapter blocks.
    const LoraConfig lora = AdapterLora(s->config_.lora, s->emulator_->config().n_layer,
                                        s->config_.bottom, s->config_.top);
    TANDEM_RETURN_IF_ERROR(
        s->emulator_->EnableLora(lora, s->config_.seed).WithContext(section + ".lora"));
    s->llm_base_ = std::move(s->adapters_);
    s->adapters_.assign(s->emulator_->lora_params().begin(), s->emulator_->lora_params().end());
  }
  // The middle blocks train; the adapters, embeddings and final LayerNorm stay the LLM's.
  std::vector<std::string> middle;
  const int blocks = s->emulator_->config().n_layer;
  for (const TensorSpec& t : s->emulator_->layout().tensors()) {
    for (int l = s->config_.bottom; l < blocks - s->config_.top; ++l) {
      if (t.name.rfind("h." + std::to_string(l) + ".", 0) == 0) middle.push_back(t.name);
    }
  }
  TANDEM_ASSIGN_OR_RETURN(Trainable trainable,
                          Trainable::Tensors(s->emulator_->layout(), middle));
  TrainerOptions options;
  options.trainable = trainable;
  s->align_optimizer_ =
      std::make_unique<ServerOptimizer>("emulator_optimizer", s->emulator_.get(), options);
  return s;
}

std::vector<std::string> OffsiteServer::RequiredCapabilities() const {
  return {kOffsiteTrainTask};
}

void OffsiteServer::PlugAdapters() {
  if (lora()) {
    std::copy(adapters_.begin(), adapters_.end(), emulator_->lora_params().begin());
    // From the original weights every time: merging onto last round's would add up the rounds.
    ScatterRanges(llm_base_, llm_ranges_, llm_->params());
    MergeEmulatorLora(*emulator_, map_, llm_.get());
    return;
  }
  ScatterRanges(adapters_, llm_ranges_, llm_->params());
  ScatterRanges(adapters_, emulator_ranges_, emulator_->params());
}

Status OffsiteServer::Align(uint64_t round) {
  align_metrics_.clear();
  if (config_.align.server_steps == 0) return Status::Ok();
  const int T = llm_->config().context;
  std::vector<uint32_t> starts =
      PublicWindows::Draw(public_tokens_.size(), T, config_.align.windows, config_.seed, round);
  TANDEM_ASSIGN_OR_RETURN(PublicWindows windows,
                          PublicWindows::Create(public_tokens_, std::move(starts), T));
  KdOptions kd;
  kd.temperature = static_cast<float>(config_.align.temperature);
  kd.alpha = static_cast<float>(config_.align.alpha);
  // The middle's output (the input of the top adapters), in the emulator and in the LLM.
  HiddenMatch hidden;
  const int emulator_middle_end = emulator_->config().n_layer - config_.top - 1;
  if (config_.hidden_weight > 0.0 && emulator_middle_end >= 0) {
    hidden.layers = {{emulator_middle_end, llm_->config().n_layer - config_.top - 1}};
    hidden.weight = static_cast<float>(config_.hidden_weight);
  }
  DenseDistillTerm term(std::move(windows), llm_.get(), kd, config_.align.server_batch, hidden);
  LocalTrainer& trainer = align_optimizer_->BeginRound();
  double hidden_before = 0.0, hidden_after = 0.0;
  const double before = term.MeanLoss(*emulator_, &hidden_before);
  Rng rng = Rng(config_.seed).Fork(round);
  for (int s = 0; s < config_.align.server_steps; ++s) {
    TANDEM_RETURN_IF_ERROR(
        trainer.Step({&term}, static_cast<float>(config_.align.server_lr), rng).status());
  }
  const double after = term.MeanLoss(*emulator_, &hidden_after);
  // kd: the distillation on logits; hidden: the hidden-state term (weighted).
  align_metrics_["emulator_kd_loss_before"] = before - hidden_before;
  align_metrics_["emulator_kd_loss_after"] = after - hidden_after;
  if (!hidden.layers.empty()) {
    align_metrics_["emulator_hidden_loss_before"] = hidden_before;
    align_metrics_["emulator_hidden_loss_after"] = hidden_after;
  }
  ++version_;
  emulator_tensor_.reset();
  return Status::Ok();
}

StatusOr<TaskSpec> OffsiteServer::BeginRound(uint64_t round,
                                             const std::vector<ClientInfo>& cohort) {
  aggregated_ = false;
  train_loss_sum_ = train_weight_ = 0.0;
  strategy_->BeginRound(adapters_.size());
  if (config_.realign_every_round || version_ == 0) TANDEM_RETURN_IF_ERROR(Align(round));
  OffsiteTrainTask task;
  task.local = LocalTrainParams{config_.local, config_.seed};
  task.bottom = config_.bottom;
  task.top = config_.top;
  task.emulator = map_;
  task.emulator_version = version_;
  task.proximal_mu = config_.proximal_mu;
  if (lora()) task.lora = config_.lora;
  TaskSpec spec;
  spec.kind = kOffsiteTrainTask;
  task.Encode(&spec.params);
  spec.tensors = {wire::Tensor::Float32("adapters", {adapters_.size()}, adapters_)};
  spec.contribution = ContributionSpec{"delta", adapters_.size()};
  return spec;
}

void OffsiteServer::Customize(const ClientInfo& client, wire::TaskAssign* assign) {
  auto it = client_version_.find(client.name);
  if (it != client_version_.end() && it->second == version_) return;
  if (!emulator_tensor_) {
    const auto p = emulator_->params();
    emulator_tensor_ = wire::Tensor::Float32("emulator", {p.size()}, p);
  }
  assign->tensors.push_back(*emulator_tensor_);
  client_version_[client.name] = version_;
}

Status OffsiteServer::OnResult(const ClientInfo& client, const wire::TaskResult& result) {
  if (!(result.weight > 0.0)) {
    return Status::InvalidArgument("weight " + std::to_string(result.weight) + " is not positive");
  }
  auto loss = result.metrics.find("train_loss");
  if (loss == result.metrics.end() || !(loss->second >= 0.0)) {
    return Status::InvalidArgument("metric 'train_loss' missing or negative");
  }
  const wire::Tensor* delta = FindTensor(result.tensors, "delta");
  if (result.tensors.size() != 1 || delta == nullptr || delta->dtype != wire::DType::kFloat32 ||
      delta->shape.size() != 1 || delta->shape[0] != adapters_.size()) {
    return Status::InvalidArgument("expected one tensor 'delta' of f32[" +
                                   std::to_string(adapters_.size()) + "] (the adapters" +
                                   (lora() ? "' LoRA factors)" : ")"));
  }
  TANDEM_RETURN_IF_ERROR(strategy_->AddDelta(delta->ToFloat32(), result.weight));
  train_loss_sum_ += loss->second * result.weight;
  train_weight_ += result.weight;
  return Status::Ok();
}

Status OffsiteServer::OnAggregate(const Aggregate& aggregate) {
  TANDEM_RETURN_IF_ERROR(strategy_->ApplyAggregate(aggregate.mean, adapters_));
  aggregated_ = true;
  return Status::Ok();
}

StatusOr<std::optional<TaskSpec>> OffsiteServer::OnTaskClosed(const TaskReport& report) {
  // A member that did not answer may not hold the emulator it was sent: send it again.
  for (const std::string& name : report.assigned) {
    if (std::find(report.responded.begin(), report.responded.end(), name) ==
        report.responded.end()) {
      client_version_.erase(name);
    }
  }
  if (!aggregated_) TANDEM_RETURN_IF_ERROR(strategy_->Apply(adapters_));
  aggregated_ = false;
  PlugAdapters();
  return std::optional<TaskSpec>();
}

void OffsiteServer::AbortRound() {
  aggregated_ = false;
  train_loss_sum_ = train_weight_ = 0.0;
  client_version_.clear();  // who received what is unknown
}

Status OffsiteServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  if (train_weight_ > 0) (*metrics)["train_loss"] = train_loss_sum_ / train_weight_;
  // The alignment's figures belong to the round it ran in (every round for fedbiot, the first
  // for offsite).
  for (const auto& [k, v] : align_metrics_) (*metrics)[k] = v;
  align_metrics_.clear();
  (*metrics)["emulator_version"] = static_cast<double>(version_);
  TANDEM_ASSIGN_OR_RETURN(double v, HeldOutLoss(*llm_, validation_, 16, config_.eval_tokens));
  if (std::isfinite(v)) {
    (*metrics)["val_loss"] = v;
    (*metrics)["val_ppl"] = std::exp(v);
  }
  TANDEM_ASSIGN_OR_RETURN(double e,
                          HeldOutLoss(*emulator_, validation_, 16, config_.eval_tokens));
  if (std::isfinite(e)) (*metrics)["emulator_val_loss"] = e;
  return Status::Ok();
}

std::vector<RunModel> OffsiteServer::Models() const {
  return {{"model", llm_.get(), true, ""}, {"emulator", emulator_.get(), false, ""}};
}

void OffsiteServer::SaveState(std::map<std::string, std::vector<float>>* tensors,
                              std::map<std::string, std::string>* metadata) const {
  const auto l = llm_->params();
  (*tensors)["llm.params"] = std::vector<float>(l.begin(), l.end());
  const auto e = emulator_->params();
  (*tensors)["emulator.params"] = std::vector<float>(e.begin(), e.end());
  SaveStrategyState(*strategy_, tensors);
  (*metadata)["model"] = llm_->config().ToString();
  (*metadata)["emulator"] = AlignmentMapToJson(map_);
  (*metadata)["emulator_version"] = std::to_string(version_);
  (*metadata)["strategy"] = strategy_->name();
  if (lora()) {
    // Only LoRA checkpoints name their kind: full ones stay as they were before LoRA existed.
    (*metadata)["adapters"] = config_.adapters;
    // The LLM holds base + merged factors; the base cannot be recovered from it bit for bit.
    (*tensors)["adapters.lora"] = adapters_;
    (*tensors)["llm.adapter_base"] = llm_base_;
    (*metadata)["adapters.lora"] = LoraText(emulator_->lora_config());
  }
  align_optimizer_->Save(tensors, metadata);
}

Status OffsiteServer::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                                const std::map<std::string, std::string>& metadata) {
  TANDEM_RETURN_IF_ERROR(ExpectSavedValue(metadata, "model", llm_->config().ToString(), "model"));
  TANDEM_ASSIGN_OR_RETURN(std::string map, SavedValue(metadata, "emulator"));
  if (map != AlignmentMapToJson(map_)) {
    return Status::FailedPrecondition("checkpoint's emulator keeps other blocks than the config's "
                                      "(" + config_.section + ".bottom, .top, .emulator_keep)");
  }
  TANDEM_ASSIGN_OR_RETURN(std::string version_text, SavedValue(metadata, "emulator_version"));
  char* end = nullptr;
  const long long version = std::strtoll(version_text.c_str(), &end, 10);
  if (version_text.empty() || *end != '\0' || version < 0) {
    return Status::Corruption("checkpoint's emulator_version '" + version_text + "'");
  }
  TANDEM_RETURN_IF_ERROR(
      ExpectSavedValue(metadata, "strategy", strategy_->name(), "strategy"));
  // A checkpoint without the key holds full adapters (as every one did before LoRA existed).
  auto adapters_kind = metadata.find("adapters");
  const std::string kind = adapters_kind == metadata.end() ? "full" : adapters_kind->second;
  if (kind != config_.adapters) {
    return Status::FailedPrecondition("checkpoint was made with " + config_.section +
                                      ".adapters = \"" + kind + "\", the config asks for \"" +
                                      config_.adapters + "\"");
  }
  const std::vector<float>* lora_factors = nullptr;
  const std::vector<float>* lora_base = nullptr;
  if (lora()) {
    auto text = metadata.find("adapters.lora");
    if (text == metadata.end() || text->second != LoraText(emulator_->lora_config())) {
      return Status::FailedPrecondition(
          "checkpoint's LoRA adapters (" +
          (text == metadata.end() ? std::string("none") : text->second) +
          ") differ from the config's (" + LoraText(emulator_->lora_config()) + ")");
    }
    TANDEM_ASSIGN_OR_RETURN(lora_factors, SavedTensor(tensors, "adapters.lora", adapters_.size()));
    TANDEM_ASSIGN_OR_RETURN(lora_base, SavedTensor(tensors, "llm.adapter_base", llm_base_.size()));
  }
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float>* llm,
                          SavedTensor(tensors, "llm.params", llm_->params().size()));
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float>* emulator,
                          SavedTensor(tensors, "emulator.params", emulator_->params().size()));
  TANDEM_RETURN_IF_ERROR(align_optimizer_->Check(tensors, metadata));
  TANDEM_RETURN_IF_ERROR(LoadStrategyState(tensors, adapters_.size(), strategy_.get()));
  TANDEM_RETURN_IF_ERROR(align_optimizer_->Load(tensors, metadata));
  std::memcpy(llm_->params().data(), llm->data(), llm->size() * sizeof(float));
  std::memcpy(emulator_->params().data(), emulator->data(), emulator->size() * sizeof(float));
  if (lora()) {
    adapters_ = *lora_factors;
    llm_base_ = *lora_base;
    std::copy(adapters_.begin(), adapters_.end(), emulator_->lora_params().begin());
  } else {
    adapters_ = GatherRanges(llm_->params(), llm_ranges_);
  }
  version_ = version;
  emulator_tensor_.reset();
  client_version_.clear();
  return Status::Ok();
}

}  // namespace tandem

#include "algorithms/fedcollm/server.h"

#include <algorithm>
#include <cmath>

#include "algorithms/common/task_parts.h"
#include "algorithms/fedcollm/tasks.h"
#include "core/config.h"
#include "data/public_windows.h"
#include "distill/kd_terms.h"
#include "train/local_trainer.h"
#include "core/timer.h"
#include "distill/kd_loss.h"
#include "models/adamw.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

constexpr const char* kTask = kFedCoLLMTrainTask;
constexpr const char* kEvalTask = kFedCoLLMEvalTask;


}  // namespace

StatusOr<FedCoLLMConfig> FedCoLLMConfigFromConfig(const Config& config) {
  FedCoLLMConfig c;
  if (config.Has("model.lora.rank") || config.Has("model.lora.alpha") ||
      config.Has("model.lora.targets")) {
    TANDEM_ASSIGN_OR_RETURN(c.lora, LoraConfigFromConfig(config, "model.lora"));
  }
  TANDEM_RETURN_IF_ERROR(c.lora.Validate());
  TANDEM_RETURN_IF_ERROR(ReadServerDistillConfig(config, "fedcollm", &c));
  TANDEM_RETURN_IF_ERROR(ReadLlmObjectiveConfig(config, "fedcollm", &c));
  TANDEM_ASSIGN_OR_RETURN(c.llm, config.RequireString("fedcollm.llm"));
  TANDEM_ASSIGN_OR_RETURN(c.slm_lr, config.GetDouble("fedcollm.slm_lr", c.slm_lr, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(c.client_eval, config.GetBool("eval.clients", c.client_eval));
  return c;
}

StatusOr<std::unique_ptr<FedCoLLMServer>> FedCoLLMServer::Create(
    FedCoLLMConfig config, LocalTrainConfig local, StrategyConfig strategy_config,
    std::unique_ptr<Gpt> slm, std::shared_ptr<Gpt> llm, const std::vector<Record>& public_records,
    std::vector<Record> validation, int64_t eval_tokens, uint64_t seed,
    std::vector<Record> english) {
  if (llm->config().vocab != slm->config().vocab || llm->config().context < slm->config().context) {
    return Status::InvalidArgument("the LLM must share the SLM's vocabulary and cover its context");
  }
  TokenDataset tokens = TokenDataset::FromRecords(public_records);
  if (tokens.size() < static_cast<size_t>(slm->config().context) + 1) {
    return Status::InvalidArgument("fedcollm needs a public split of at least one context; set "
                                   "data.public_categories or data.public_fraction");
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(strategy_config));
  if (strategy->NeedsIndividualContributions()) {
    return Status::InvalidArgument("fedcollm averages adapters: use a mean-based strategy");
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<PublicTextTerm> english_term,
                          MakeEnglishTerm(config, "fedcollm", english, slm->config().context));
  TANDEM_RETURN_IF_ERROR(slm->EnableLora(config.lora, seed));
  auto server = std::unique_ptr<FedCoLLMServer>(new FedCoLLMServer(
      std::move(config), local, std::move(strategy), std::move(slm), std::move(llm),
      std::move(tokens), std::move(validation), eval_tokens, seed));
  server->english_ = std::move(english_term);
  return server;
}

FedCoLLMServer::FedCoLLMServer(FedCoLLMConfig config, LocalTrainConfig local,
                               std::unique_ptr<Strategy> strategy, std::unique_ptr<Gpt> slm,
                               std::shared_ptr<Gpt> llm, TokenDataset public_tokens,
                               std::vector<Record> validation, int64_t eval_tokens, uint64_t seed)
    : config_(std::move(config)), local_(local), strategy_(std::move(strategy)),
      slm_(std::move(slm)), llm_(std::move(llm)), public_tokens_(std::move(public_tokens)),
      validation_(std::move(validation)), eval_tokens_(eval_tokens), seed_(seed),
      slm_optimizer_("slm_optimizer", slm_.get(), TrainerOptions{Trainable::AdaptersOnly()}),
      llm_optimizer_("llm_optimizer", llm_.get()) {}

std::vector<std::string> FedCoLLMServer::RequiredCapabilities() const {
  if (config_.client_eval) return {kTask, kEvalTask};
  return {kTask};
}

TaskSpec FedCoLLMServer::SlmTask(const std::string& kind) const {
  TaskSpec spec;
  spec.kind = kind;
  EncodeWeights(*slm_, &spec.params, &spec.tensors);
  EncodeLoraConfig(config_.lora, &spec.params);
  const auto adapters = slm_->lora_params();
  spec.tensors.push_back(wire::Tensor::Float32("lora", {adapters.size()}, adapters));
  return spec;
}

std::vector<RunModel> FedCoLLMServer::Models() const {
  std::vector<RunModel> models = {{"model", slm_.get(), true, "", 8}};
  if (!llm_shared_) models.push_back({"llm", llm_.get(), false, ""});
  return models;
}

std::optional<std::string> FedCoLLMServer::PrivacyConflict() const {
  if (config_.client_eval) {
    return "eval.clients = true reports each client's held-out loss in the clear, outside secure "
           "aggregation and the privacy accounting";
  }
  return std::nullopt;
}

StatusOr<TaskSpec> FedCoLLMServer::BeginRound(uint64_t round, const std::vector<ClientInfo>&) {
  AbortRound();
  round_ = round;
  windows_ = PublicWindows::Draw(public_tokens_.size(), slm_->config().context, config_.windows,
                                 seed_, round);
  const size_t adapters = slm_->lora_params().size();
  strategy_->BeginRound(adapters);
  TaskSpec spec = SlmTask(kTask);
  FedAvgTrainTask{LocalTrainParams{local_, seed_}, 0.0}.Encode(&spec.params);
  spec.contribution = ContributionSpec{"delta", adapters};
  return spec;
}

Status FedCoLLMServer::OnResult(const ClientInfo&, const wire::TaskResult& result) {
  if (evaluating_) {
    auto loss = result.metrics.find("val_loss");
    if (loss == result.metrics.end() || !(loss->second >= 0.0) || !std::isfinite(loss->second)) {
      return Status::InvalidArgument("an evaluation needs a finite val_loss >= 0");
    }
    if (!(result.weight > 0.0) || !std::isfinite(result.weight)) {
      return Status::InvalidArgument("an evaluation's weight (its held-out tokens) must be > 0");
    }
    client_val_sum_ += loss->second * result.weight;
    client_val_weight_ += result.weight;
    return Status::Ok();
  }
  const size_t n = slm_->lora_params().size();
  if (result.tensors.size() != 1 || result.tensors[0].name != "delta" ||
      result.tensors[0].dtype != wire::DType::kFloat32 || result.tensors[0].NumElements() != n) {
    return Status::InvalidArgument("expected one tensor 'delta' of f32[" + std::to_string(n) + "]");
  }
  if (!(result.weight > 0.0)) return Status::InvalidArgument("weight is not positive");
  TANDEM_RETURN_IF_ERROR(strategy_->AddDelta(result.tensors[0].ToFloat32(), result.weight));
  if (auto it = result.metrics.find("train_loss"); it != result.metrics.end()) {
    train_loss_sum_ += it->second * result.weight;
    train_weight_ += result.weight;
  }
  return Status::Ok();
}

Status FedCoLLMServer::OnAggregate(const Aggregate& aggregate) {
  TANDEM_RETURN_IF_ERROR(strategy_->ApplyAggregate(aggregate.mean, slm_->lora_params()));
  aggregated_ = true;
  return Status::Ok();
}

StatusOr<std::pair<double, double>> FedCoLLMServer::Distil(Gpt& teacher, Gpt& student,
                                                           ServerOptimizer& optimizer, double lr,
                                                           LossTerm* extra) {
  const int T = slm_->config().context, V = slm_->config().vocab;
  const int W = static_cast<int>(windows_.size());
  TANDEM_ASSIGN_OR_RETURN(PublicWindows windows,
                          PublicWindows::Create(public_tokens_, windows_, T));
  KdOptions kd;
  kd.temperature = static_cast<float>(config_.temperature);
  kd.alpha = static_cast<float>(config_.alpha);
  DenseDistillTerm term(std::move(windows), ModelTeacher(&teacher), kd,
                        std::min(config_.server_batch, W), V, config_.confidence);
  LocalTrainer& trainer = optimizer.BeginRound();
  // The distillation term walks its windows in order and draws nothing; the English term draws
  // its windows from the round's own stream.
  Rng rng(seed_ ^ (0x656e676c697368ULL * (round_ + 1)));
  std::vector<LossTerm*> terms = {&term};
  if (extra != nullptr) terms.push_back(extra);
  const double before = term.MeanLoss(student);
  if (&student == llm_.get()) up_masked_ = term.masked_fraction();
  StatusOr<TrainReport> report =
      trainer.Run(terms, config_.server_steps, static_cast<float>(lr), rng);
  if (!report.ok()) {
    return Status::Internal("fedcollm's server distillation diverged: " +
                            report.status().message());
  }
  if (extra != nullptr) english_ce_ = report->Mean(extra->name() + "_loss");
  return std::make_pair(before, term.MeanLoss(student));
}

StatusOr<std::optional<TaskSpec>> FedCoLLMServer::OnTaskClosed(const TaskReport&) {
  if (evaluating_) return std::optional<TaskSpec>();
  if (!aggregated_) TANDEM_RETURN_IF_ERROR(strategy_->Apply(slm_->lora_params()));
  aggregated_ = false;
  Stopwatch watch;
  // LLM → SLM: the averaged adapters learn from the LLM on public text.
  TANDEM_ASSIGN_OR_RETURN(down_, Distil(*llm_, *slm_, slm_optimizer_, config_.slm_lr));
  // SLM → LLM: the LLM learns what the clients' adapters taught the SLM.
  TANDEM_ASSIGN_OR_RETURN(up_, Distil(*slm_, *llm_, llm_optimizer_, config_.server_lr,
                                      english_.get()));
  server_s_ = watch.Seconds();
  if (!config_.client_eval) return std::optional<TaskSpec>();
  evaluating_ = true;
  TaskSpec eval = SlmTask(kEvalTask);
  eval.params["eval_tokens"] = eval_tokens_;
  return std::optional<TaskSpec>(std::move(eval));
}

void FedCoLLMServer::AbortRound() {
  aggregated_ = evaluating_ = false;
  train_loss_sum_ = train_weight_ = 0.0;
  client_val_sum_ = client_val_weight_ = 0.0;
  down_ = up_ = {0, 0};
  english_ce_ = up_masked_ = 0.0;
  server_s_ = 0.0;
}

StatusOr<double> FedCoLLMServer::SlmValidationLoss() {
  return HeldOutLoss(*slm_, validation_, 8, eval_tokens_);
}

StatusOr<double> FedCoLLMServer::LlmValidationLoss() {
  return HeldOutLoss(*llm_, validation_, 8, eval_tokens_);
}

Status FedCoLLMServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  if (train_weight_ > 0) (*metrics)["train_loss"] = train_loss_sum_ / train_weight_;
  if (client_val_weight_ > 0) (*metrics)["client_val_loss"] = client_val_sum_ / client_val_weight_;
  (*metrics)["slm_kd_loss_before"] = down_.first;
  (*metrics)["slm_kd_loss_after"] = down_.second;
  (*metrics)["llm_kd_loss_before"] = up_.first;
  (*metrics)["llm_kd_loss_after"] = up_.second;
  if (english_) (*metrics)["llm_english_ce"] = english_ce_;
  if (config_.confidence.threshold > 0.0) (*metrics)["llm_kd_masked_fraction"] = up_masked_;
  (*metrics)["server_train_s"] = server_s_;
  TANDEM_ASSIGN_OR_RETURN(double slm, SlmValidationLoss());
  if (std::isfinite(slm)) {
    (*metrics)["val_loss"] = slm;
    (*metrics)["val_ppl"] = std::exp(slm);
  }
  if (llm_shared_) return Status::Ok();
  TANDEM_ASSIGN_OR_RETURN(double llm, LlmValidationLoss());
  if (std::isfinite(llm)) (*metrics)["llm_val_loss"] = llm;
  return Status::Ok();
}

void FedCoLLMServer::SaveState(std::map<std::string, std::vector<float>>* tensors,
                               std::map<std::string, std::string>* metadata) const {
  const auto a = slm_->lora_params();
  (*tensors)["slm.lora"] = std::vector<float>(a.begin(), a.end());
  SaveStrategyState(*strategy_, tensors);
  // Both optimisers are this half's own, also when the LLM is shared with other groups.
  slm_optimizer_.Save(tensors, metadata);
  llm_optimizer_.Save(tensors, metadata);
  if (llm_shared_) {
    (*metadata)["model"] = slm_->config().ToString();
    return;
  }
  const auto l = llm_->params();
  (*tensors)["llm.params"] = std::vector<float>(l.begin(), l.end());
  (*metadata)["model"] = llm_->config().ToString();
}

Status FedCoLLMServer::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  // The model SaveState names: the LLM's architecture, or the SLM's when the LLM is shared.
  const std::string model = (llm_shared_ ? slm_->config() : llm_->config()).ToString();
  TANDEM_RETURN_IF_ERROR(ExpectSavedValue(metadata, "model", model, "model"));
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float>* a,
                          SavedTensor(tensors, "slm.lora", slm_->lora_params().size()));
  const std::vector<float>* l = nullptr;
  if (!llm_shared_) {
    TANDEM_ASSIGN_OR_RETURN(l, SavedTensor(tensors, "llm.params", llm_->params().size()));
  }
  TANDEM_RETURN_IF_ERROR(slm_optimizer_.Check(tensors, metadata));
  TANDEM_RETURN_IF_ERROR(llm_optimizer_.Check(tensors, metadata));
  TANDEM_RETURN_IF_ERROR(LoadStrategyState(tensors, slm_->lora_params().size(), strategy_.get()));
  TANDEM_RETURN_IF_ERROR(slm_optimizer_.Load(tensors, metadata));
  TANDEM_RETURN_IF_ERROR(llm_optimizer_.Load(tensors, metadata));
  std::copy(a->begin(), a->end(), slm_->lora_params().begin());
  if (!llm_shared_) std::copy(l->begin(), l->end(), llm_->params().begin());
  return Status::Ok();
}

}  // namespace tandem

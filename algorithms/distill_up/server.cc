#include "algorithms/distill_up/server.h"

#include <algorithm>
#include <cmath>

#include "algorithms/common/own_model.h"
#include "algorithms/distill_up/tasks.h"
#include "algorithms/fedmkt/tasks.h"
#include "core/config.h"
#include "data/public_windows.h"
#include "distill/kd_terms.h"
#include "train/local_trainer.h"
#include "core/timer.h"
#include "distill/confidence.h"
#include "distill/ensemble.h"
#include "distill/votes.h"
#include "distill/kd_loss.h"
#include "distill/topk.h"
#include "models/gpt_checkpoint.h"
#include "train/evaluate.h"

namespace tandem {
namespace {


}  // namespace

StatusOr<DistillUpConfig> DistillUpConfigFromConfig(const Config& config,
                                                    const std::string& section, bool mutual) {
  DistillUpConfig c;
  TANDEM_RETURN_IF_ERROR(ReadServerDistillConfig(config, section, &c));
  TANDEM_RETURN_IF_ERROR(ReadLlmObjectiveConfig(config, section, &c));
  TANDEM_ASSIGN_OR_RETURN(c.llm, config.RequireString(section + ".llm"));
  c.mutual = mutual;
  if (c.mutual) {
    TANDEM_ASSIGN_OR_RETURN(int64_t k, config.GetInt(section + ".top_k", c.top_k, 1, 1 << 20));
    c.top_k = static_cast<int>(k);
    TANDEM_ASSIGN_OR_RETURN(c.client_alpha, config.GetDouble(section + ".client_alpha",
                                                             c.client_alpha, 0.0, 1.0));
    TANDEM_ASSIGN_OR_RETURN(c.client_weight, config.GetDouble(section + ".client_weight",
                                                              c.client_weight, 0.0, 1e3));
    TANDEM_ASSIGN_OR_RETURN(c.selection, config.GetChoice(section + ".selection", "mean",
                                                          {"mean", "min-ce"}));
  }
  TANDEM_ASSIGN_OR_RETURN(std::string ensemble,
                          config.GetChoice(section + ".ensemble", "mean",
                                           {"mean", "confidence", "votes"}));
  c.ensemble = ensemble == "confidence" ? EnsembleUpload::kConfidence
               : ensemble == "votes"    ? EnsembleUpload::kVotes
                                        : EnsembleUpload::kMean;
  TANDEM_ASSIGN_OR_RETURN(int64_t top_k, config.GetInt(section + ".vote_top_k", c.vote_top_k, 1,
                                                       1 << 20));
  c.vote_top_k = static_cast<int>(top_k);
  if (c.selection == "min-ce" && c.ensemble != EnsembleUpload::kMean) {
    return Status::InvalidArgument(section + ".selection = \"min-ce\" picks one client's "
                                   "probabilities per position: it needs " + section +
                                   ".ensemble = \"mean\"");
  }
  if (config.Has(section + ".vote_top_k") && c.ensemble != EnsembleUpload::kVotes) {
    return Status::InvalidArgument(section + ".vote_top_k applies to " + section +
                                   ".ensemble = \"votes\" only");
  }
  return c;
}


StatusOr<std::unique_ptr<DistillUpServer>> DistillUpServer::Create(
    DistillUpConfig config, LocalTrainConfig local, std::shared_ptr<Gpt> llm,
    const ModelConfig& student, const std::vector<Record>& public_records,
    std::vector<Record> validation, int64_t eval_tokens, uint64_t seed,
    std::vector<ModelConfig> client_models, bool client_eval, std::vector<Record> english) {
  if (config.ensemble == EnsembleUpload::kVotes && config.vote_top_k > student.vocab) {
    return Status::InvalidArgument("vote_top_k = " + std::to_string(config.vote_top_k) +
                                   " is larger than the vocabulary (" +
                                   std::to_string(student.vocab) + ")");
  }
  for (const ModelConfig& m : client_models) {
    if (m.vocab != student.vocab) {
      return Status::InvalidArgument("every client SLM must share one vocabulary: " +
                                     m.ToString() + " does not");
    }
  }
  if (llm->config().vocab != student.vocab) {
    return Status::InvalidArgument("the LLM's vocabulary (" + std::to_string(llm->config().vocab) +
                                   ") is not the SLM's (" + std::to_string(student.vocab) + ")");
  }
  if (llm->config().context < student.context) {
    return Status::InvalidArgument("the LLM's context is shorter than the SLM's");
  }
  TokenDataset tokens = TokenDataset::FromRecords(public_records);
  if (tokens.size() < static_cast<size_t>(student.context) + 1) {
    return Status::InvalidArgument("distill-up needs a public split of at least one context (" +
                                   std::to_string(student.context + 1) + " tokens), it has " +
                                   std::to_string(tokens.size()) +
                                   "; set data.public_categories or data.public_fraction");
  }
  auto server = std::unique_ptr<DistillUpServer>(
      new DistillUpServer(std::move(config), local, std::move(llm), student, std::move(tokens),
                          std::move(validation), eval_tokens, seed));
  server->context_ = student.context;
  for (const ModelConfig& m : client_models) server->context_ = std::min(server->context_, m.context);
  server->client_models_ = std::move(client_models);
  server->client_eval_ = client_eval;
  if (server->config_.upload) {
    TANDEM_ASSIGN_OR_RETURN(server->english_,
                            MakeEnglishTerm(server->config_, server->name(), english,
                                            server->context_));
  }
  return server;
}

DistillUpServer::DistillUpServer(DistillUpConfig config, LocalTrainConfig local,
                                 std::shared_ptr<Gpt> llm, ModelConfig student,
                                 TokenDataset public_tokens, std::vector<Record> validation,
                                 int64_t eval_tokens, uint64_t seed)
    : config_(std::move(config)), local_(local), llm_(std::move(llm)), student_(student),
      public_tokens_(std::move(public_tokens)), validation_(std::move(validation)),
      eval_tokens_(eval_tokens), seed_(seed) {
  // With local SLMs the LLM only teaches: it has no optimiser to keep.
  if (config_.upload) llm_optimizer_ = std::make_unique<ServerOptimizer>("llm_optimizer", llm_.get());
}

size_t DistillUpServer::ContributionLength() const {
  return EnsembleUploadLength(config_.ensemble, static_cast<size_t>(config_.windows) * context_,
                              student_.vocab);
}

StatusOr<TaskSpec> DistillUpServer::BeginRound(uint64_t round, const std::vector<ClientInfo>&) {
  AbortRound();
  round_ = round;
  windows_ = PublicWindows::Draw(public_tokens_.size(), context_, config_.windows, seed_, round);
  DistillUpTask up;
  up.model = student_.ToString();
  up.local = LocalTrainParams{local_, seed_};
  up.temperature = static_cast<float>(config_.temperature);
  up.windows = windows_;
  up.context = context_;
  up.ensemble = config_.ensemble;
  up.vote_top_k = config_.vote_top_k;
  TaskSpec spec;
  if (config_.mutual) {
    MutualTask mutual;
    mutual.up = std::move(up);
    mutual.kd.options.alpha = static_cast<float>(config_.client_alpha);
    mutual.kd.options.temperature = mutual.up.temperature;
    mutual.kd.weight = config_.client_weight;
    mutual.upload = config_.upload;
    spec.kind = kMutualTask;
    mutual.Encode(&spec.params, &spec.tensors);
    // Knowledge down as well: the LLM's top-k on the same windows, before it learns this round.
    AddTeacherTargets(*llm_, public_tokens_, windows_, context_, config_.top_k,
                      config_.temperature, &spec);
  } else {
    spec.kind = kDistillUpTask;
    up.Encode(&spec.params, &spec.tensors);
  }
  if (config_.upload) {
    spec.contribution = ContributionSpec{EnsembleTensorName(config_.ensemble), ContributionLength()};
  }
  return spec;
}

void DistillUpServer::Customize(const ClientInfo& client, wire::TaskAssign* assign) {
  if (client_models_.empty()) return;
  const size_t k = client.index >= 0 ? static_cast<size_t>(client.index) : 0;
  assign->params["model"] = client_models_[k % client_models_.size()].ToString();
}

Status DistillUpServer::OnResult(const ClientInfo&, const wire::TaskResult& result) {
  if (evaluating_) {
    auto own = result.metrics.find("own_val_loss");
    auto all = result.metrics.find("all_val_loss");
    if (own == result.metrics.end() || all == result.metrics.end() || !(own->second >= 0.0) ||
        !(all->second >= 0.0)) {
      return Status::InvalidArgument("an evaluation needs own_val_loss and all_val_loss >= 0");
    }
    if (!(result.weight > 0.0) || !std::isfinite(result.weight)) {
      return Status::InvalidArgument("an evaluation's weight (its own held-out tokens) must be > 0");
    }
    // Own categories: weighted by the client's held-out tokens, as fedavg's client_val_loss is, so
    // the two read the same for one shared model. All categories: every client scores one set.
    own_val_sum_ += own->second * result.weight;
    own_val_weight_ += result.weight;
    all_val_sum_ += all->second;
    ++evaluations_;
    return Status::Ok();
  }
  if (!config_.upload) {
    if (!result.tensors.empty()) {
      return Status::InvalidArgument("distill-down with local SLMs takes no tensors back");
    }
    CountClientLoss(result);
    return Status::Ok();
  }
  const size_t n = ContributionLength();
  const std::string name = EnsembleTensorName(config_.ensemble);
  const wire::Tensor* upload = nullptr;
  for (const auto& t : result.tensors) {
    if (t.name == name) upload = &t;
  }
  if (upload == nullptr || upload->dtype != wire::DType::kFloat32 || upload->NumElements() != n) {
    return Status::InvalidArgument("expected a tensor '" + name + "' of f32[" +
                                   std::to_string(n) + "]");
  }
  const std::vector<float> values = upload->ToFloat32();
  TANDEM_RETURN_IF_ERROR(CheckUpload(values));
  const int V = student_.vocab;
  if (config_.selection == "min-ce") {
    // Per position, keep the client whose prediction gives the text's next token the most mass.
    const int T = context_;
    const auto& pub = public_tokens_.tokens();
    if (best_.empty()) {
      best_.assign(n, 0.0f);
      best_ce_.assign(n / V, INFINITY);
    }
    for (size_t row = 0; row < n / V; ++row) {
      const size_t target = pub[windows_[row / T] + row % T + 1];
      const double ce = -std::log(std::max(static_cast<double>(values[row * V + target]), 1e-30));
      if (ce < best_ce_[row]) {
        best_ce_[row] = ce;
        std::copy(values.begin() + row * V, values.begin() + (row + 1) * V,
                  best_.begin() + row * V);
      }
    }
  } else {
    if (!sum_) sum_.emplace(n);
    TANDEM_RETURN_IF_ERROR(sum_->Add(values, 1.0));
  }
  CountClientLoss(result);
  return Status::Ok();
}

Status DistillUpServer::CheckUpload(const std::vector<float>& values) const {
  // A client cannot outweigh the others by scaling its upload.
  const int V = student_.vocab, N = config_.windows * context_;
  if (config_.ensemble == EnsembleUpload::kConfidence) {
    return CheckConfidenceContribution(values, N, V);
  }
  if (config_.ensemble == EnsembleUpload::kVotes) {
    return CheckVoteContribution(values, N, V, config_.vote_top_k);
  }
  // Each row must be a distribution.
  for (int row = 0; row < N; ++row) {
    double sum = 0.0;
    for (int v = 0; v < V; ++v) {
      const float p = values[static_cast<size_t>(row) * V + v];
      if (!(p >= 0.0f && p <= 1.0f)) return Status::InvalidArgument("a probability is outside [0, 1]");
      sum += p;
    }
    if (std::fabs(sum - 1.0) > 1e-3) {
      return Status::InvalidArgument("row " + std::to_string(row) + " sums to " +
                                     std::to_string(sum) + ", not 1");
    }
  }
  return Status::Ok();
}

void DistillUpServer::CountClientLoss(const wire::TaskResult& result) {
  if (auto it = result.metrics.find("train_loss"); it != result.metrics.end()) {
    client_loss_sum_ += it->second;
    client_weight_ += 1.0;
    if (auto kl = result.metrics.find("kd_kl"); kl != result.metrics.end()) {
      client_kl_sum_ += kl->second;
    }
  }
}

Status DistillUpServer::OnAggregate(const Aggregate& aggregate) {
  if (aggregate.mean.size() != ContributionLength()) {
    return Status::InvalidArgument("aggregate of the wrong length");
  }
  mean_ = aggregate.mean;
  return Status::Ok();
}

StatusOr<std::optional<TaskSpec>> DistillUpServer::OnTaskClosed(const TaskReport&) {
  if (evaluating_) {
    evaluating_ = false;
    return std::optional<TaskSpec>();
  }
  if (config_.upload) TANDEM_RETURN_IF_ERROR(LearnFromEnsemble());
  if (!client_eval_) return std::optional<TaskSpec>();
  evaluating_ = true;
  TaskSpec eval;
  eval.kind = kOwnEvalTask;
  eval.params = {{"model", student_.ToString()},
                 {"eval_tokens", eval_tokens_},
                 {"seed", static_cast<int64_t>(seed_ & 0x7FFFFFFFFFFFFFFFULL)}};
  return std::optional<TaskSpec>(std::move(eval));
}

Status DistillUpServer::LearnFromEnsemble() {
  std::vector<float> mean;
  if (mean_) {
    mean = std::move(*mean_);
  } else if (config_.selection == "min-ce") {
    if (best_.empty()) return Status::FailedPrecondition("no predictions arrived");
    mean = std::move(best_);
    best_.clear();
    best_ce_.clear();
  } else {
    if (!sum_ || sum_->count() == 0) return Status::FailedPrecondition("no predictions arrived");
    mean.resize(ContributionLength());
    TANDEM_RETURN_IF_ERROR(sum_->Mean(mean));
  }
  sum_.reset();
  mean_.reset();
  if (config_.ensemble == EnsembleUpload::kConfidence) {
    // Σ w·p / Σ w: the member count that divides both parts of the mean cancels.
    const int N = config_.windows * context_, V = student_.vocab;
    std::vector<float> probs(static_cast<size_t>(N) * V);
    ConfidenceEnsemble(probs.data(), mean.data(), N, V);
    return TrainLlm(probs);
  }
  // "mean": the mean of probabilities; "votes": the (noisy) vote histogram over the members.
  return TrainLlm(mean);
}

Status DistillUpServer::TrainLlm(const std::vector<float>& probs) {
  Stopwatch watch;
  const int T = context_, V = student_.vocab, W = static_cast<int>(windows_.size());
  const float temperature = static_cast<float>(config_.temperature);
  last_ensemble_ = probs;
  // The ensemble as teacher logits at T (probabilities floored and renormalised: DP noise can
  // leave the simplex).
  std::vector<float> teacher(probs.size());
  EnsembleTeacherLogits(teacher.data(), probs.data(), W * T, V, temperature,
                        EnsembleMode::kMeanProbabilities);
  TANDEM_ASSIGN_OR_RETURN(PublicWindows windows,
                          PublicWindows::Create(public_tokens_, windows_, T));
  KdOptions kd;
  kd.temperature = temperature;
  kd.alpha = static_cast<float>(config_.alpha);
  DenseDistillTerm term(std::move(windows), FixedTeacher(std::move(teacher), T, V), kd,
                        std::min(config_.server_batch, W), V, config_.confidence);
  LocalTrainer& trainer = llm_optimizer_->BeginRound();
  // The distillation term walks its windows in order and draws nothing; the English term draws
  // its windows from the round's own stream.
  Rng rng(seed_ ^ (0x656e676c697368ULL * (round_ + 1)));
  std::vector<LossTerm*> terms = {&term};
  if (english_) terms.push_back(english_.get());
  kd_before_ = term.MeanLoss(*llm_);
  masked_fraction_ = term.masked_fraction();
  for (int step = 0; step < config_.server_steps; ++step) {
    StatusOr<std::vector<TermLoss>> l =
        trainer.Step(terms, static_cast<float>(config_.server_lr), rng);
    if (!l.ok()) {
      return Status::Internal("the LLM's distillation diverged; lower " + name() +
                              ".server_lr (" + l.status().message() + ")");
    }
    kd_sum_ += (*l)[0].loss;
    kl_sum_ += (*l)[0].kl;
    ce_sum_ += (*l)[0].ce;
    if (english_) english_sum_ += (*l)[1].loss;
    ++steps_done_;
  }
  kd_after_ = term.MeanLoss(*llm_);
  server_s_ = watch.Seconds();
  return Status::Ok();
}

void DistillUpServer::AbortRound() {
  sum_.reset();
  mean_.reset();
  best_.clear();
  best_ce_.clear();
  evaluating_ = false;
  own_val_sum_ = own_val_weight_ = all_val_sum_ = 0.0;
  evaluations_ = 0;
  client_loss_sum_ = client_weight_ = client_kl_sum_ = 0.0;
  kd_sum_ = kl_sum_ = ce_sum_ = english_sum_ = 0.0;
  masked_fraction_ = 0.0;
  steps_done_ = 0;
  server_s_ = 0.0;
}

StatusOr<double> DistillUpServer::ValidationLoss() {
  return HeldOutLoss(*llm_, validation_, 8, eval_tokens_);
}

Status DistillUpServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  if (client_weight_ > 0) (*metrics)["train_loss"] = client_loss_sum_ / client_weight_;
  if (config_.mutual && client_weight_ > 0) (*metrics)["kd_kl"] = client_kl_sum_ / client_weight_;
  if (evaluations_ > 0) {
    // The clients' own SLMs: on their own categories, and on every private category.
    (*metrics)["slm_own_val_loss"] = own_val_sum_ / own_val_weight_;
    (*metrics)["slm_all_val_loss"] = all_val_sum_ / evaluations_;
  }
  if (steps_done_ > 0) {
    (*metrics)["llm_kd_loss"] = kd_sum_ / steps_done_;
    (*metrics)["llm_kd_kl"] = kl_sum_ / steps_done_;
    (*metrics)["llm_public_ce"] = ce_sum_ / steps_done_;
    (*metrics)["llm_kd_loss_before"] = kd_before_;
    (*metrics)["llm_kd_loss_after"] = kd_after_;
    if (english_) (*metrics)["llm_english_ce"] = english_sum_ / steps_done_;
    if (config_.confidence.threshold > 0.0) (*metrics)["llm_kd_masked_fraction"] = masked_fraction_;
  }
  if (!config_.upload) return Status::Ok();  // the LLM is the teacher, and did not move
  (*metrics)["server_train_s"] = server_s_;
  TANDEM_ASSIGN_OR_RETURN(double v, ValidationLoss());
  if (std::isfinite(v)) {
    (*metrics)["val_loss"] = v;
    (*metrics)["val_ppl"] = std::exp(v);
  }
  return Status::Ok();
}

void DistillUpServer::SaveState(std::map<std::string, std::vector<float>>* tensors,
                                std::map<std::string, std::string>* metadata) const {
  const auto p = llm_->params();
  (*tensors)["model.params"] = std::vector<float>(p.begin(), p.end());
  (*metadata)["model"] = llm_->config().ToString();
  if (llm_optimizer_) llm_optimizer_->Save(tensors, metadata);
}

Status DistillUpServer::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  TANDEM_RETURN_IF_ERROR(ExpectSavedValue(metadata, "model", llm_->config().ToString(), "LLM"));
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float>* t,
                          SavedTensor(tensors, "model.params", llm_->params().size()));
  if (llm_optimizer_) TANDEM_RETURN_IF_ERROR(llm_optimizer_->Check(tensors, metadata));
  std::copy(t->begin(), t->end(), llm_->params().begin());
  if (llm_optimizer_) TANDEM_RETURN_IF_ERROR(llm_optimizer_->Load(tensors, metadata));
  return Status::Ok();
}

std::vector<RunModel> DistillUpServer::Models() const {
  // With local SLMs the LLM only teaches and never changes: nothing to keep.
  if (!config_.upload) return {};
  return {{"llm", llm_.get(), true, "", 8}};
}

std::optional<std::string> DistillUpServer::PrivacyConflict() const {
  if (!config_.upload) {
    return "distill-down.slms = \"local\" sends nothing from the clients, so [privacy] has "
           "nothing to protect; switch it off, or average the SLMs (distill-down.slms = "
           "\"fedavg\")";
  }
  if (config_.selection == "min-ce") {
    return "fedmkt.selection = \"min-ce\" picks one client's prediction per position, which needs "
           "every client's upload; with [privacy] on only their mean exists: use \"mean\"";
  }
  if (client_eval_) {
    return "eval.clients = true reports each client's held-out loss in the clear, outside secure "
           "aggregation and the privacy accounting";
  }
  return std::nullopt;
}

}  // namespace tandem

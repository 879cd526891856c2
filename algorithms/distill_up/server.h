// The coordinator's half of `distill-up` (DESIGN.md "Algorithms"; FedDF, Lin et al. 2020): what
// the edge SLMs learn on private data flows up into the cloud LLM. Every round each client trains
// its own SLM on its own data (the SLMs stay local) and uploads its predictions on windows of the
// public split as a contribution — so secure aggregation and DP apply to them like to any update;
// the coordinator gets their mean, a mixture of the clients' distributions, and trains its LLM by
// knowledge distillation to it, together with the LLM's own loss on the public text:
//
//   LLM loss on a public window = α·CE(text) + (1 − α)·T²·KL(ensemble^T ‖ LLM^T)
//
// plus, with <section>.english_weight = λ > 0, λ·CE on a batch of the public English corpus each
// step (so the LLM keeps its English). The ensemble is the clients' plain mean, their
// confidence-weighted mean or their vote histogram (<section>.ensemble), and each position's KD
// term may be masked or weighted by the ensemble's confidence (<section>.confidence_*); see
// docs/distillation.md "Sound upward distillation".
//
// `fedmkt` (Fan et al. 2024, FedMKT) is the same class with knowledge going both ways every round:
// the task ("distill.mutual") also carries the LLM's top-k targets on the round's windows, and
// each client's own SLM trains on its data plus distillation to them before it predicts. FedMKT
// picks, per public position, the client whose prediction has the lowest cross-entropy to the
// text (selection = "min-ce"); that needs individual uploads, so it is refused with the privacy
// pipeline on, where only the mean exists (selection = "mean").
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/aggregator.h"
#include "algorithms/common/local_train.h"
#include "algorithms/common/server_distill.h"
#include "algorithms/common/teacher_targets.h"
#include "coordinator/engine.h"
#include "data/batcher.h"
#include "distill/ensemble.h"
#include "models/adamw.h"
#include "models/gpt.h"

namespace tandem {

class Config;

// distill-up's section ([distill-up]) or fedmkt's ([fedmkt]).
struct DistillUpConfig : ServerDistillConfig {
  std::string llm;               // <section>.llm: the cloud LLM's checkpoint; required
  // fedmkt only.
  bool mutual = false;           // set from algorithm.name = "fedmkt"
  int top_k = 16;                // fedmkt.top_k: the LLM's targets for the clients
  double client_alpha = 0.5;     // fedmkt.client_alpha: the clients' public CE weight
  double client_weight = 1.0;    // fedmkt.client_weight: their public batch's weight
  std::string selection = "mean";  // fedmkt.selection: "mean" or "min-ce" (per position)
  // <section>.ensemble: what the clients upload and how the coordinator combines it —
  // "mean" (probabilities, their plain mean), "confidence" (Σ w·p / Σ w, distill/confidence.h) or
  // "votes" (the vote histogram, distill/votes.h); "min-ce" needs "mean".
  EnsembleUpload ensemble = EnsembleUpload::kMean;
  int vote_top_k = 1;              // <section>.vote_top_k: tokens each vote is shared among
  // false: distill-down with SLMs that stay local (distill-down.slms = "local"). The clients train
  // their own SLMs with the LLM's targets and send nothing up; the LLM, the teacher, never moves.
  bool upload = true;
};

StatusOr<DistillUpConfig> DistillUpConfigFromConfig(const Config& config,
                                                    const std::string& section, bool mutual);

class DistillUpServer : public ServerAlgorithm {
 public:
  // `llm` is the cloud model being trained; `student` the clients' SLM architecture; `local` the
  // clients' local training ([client]); `validation` the held-out records the LLM is evaluated on.
  // `english` is the public corpus's text (train/data_setup.h PublicCorpus) for
  // <section>.english_weight. `client_models`, when not empty, gives client K the architecture client_models[K % size]
  // (heterogeneous clients: only predictions move, so each may run its own SLM); windows are then
  // as long as the shortest context among them.
  static StatusOr<std::unique_ptr<DistillUpServer>> Create(
      DistillUpConfig config, LocalTrainConfig local, std::shared_ptr<Gpt> llm,
      const ModelConfig& student, const std::vector<Record>& public_records,
      std::vector<Record> validation, int64_t eval_tokens, uint64_t seed,
      std::vector<ModelConfig> client_models = {}, bool client_eval = false,
      std::vector<Record> english = {});

  std::string name() const override {
    return !config_.upload ? "distill-down" : config_.mutual ? "fedmkt" : "distill-up";
  }
  // With eval.clients, each round ends with "distill.eval": the clients' own SLMs evaluated on
  // their own held-out records and on all private categories.
  std::vector<std::string> RequiredCapabilities() const override {
    std::vector<std::string> caps = {config_.mutual ? "distill.mutual" : "distill.up",};
    if (client_eval_) caps.push_back("distill.eval");
    return caps;
  }
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override;
  bool CustomizesTasks() const override { return !client_models_.empty(); }
  void Customize(const ClientInfo& client, wire::TaskAssign* assign) override;
  Status OnResult(const ClientInfo& client, const wire::TaskResult& result) override;
  Status OnAggregate(const Aggregate& aggregate) override;
  StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) override;
  void AbortRound() override;
  Status EndRound(uint64_t round, std::map<std::string, double>* metrics) override;
  void SaveState(std::map<std::string, std::vector<float>>* tensors,
                 std::map<std::string, std::string>* metadata) const override;
  Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                   const std::map<std::string, std::string>& metadata) override;

  std::vector<RunModel> Models() const override;
  std::optional<std::string> PrivacyConflict() const override;

  Gpt& llm() { return *llm_; }
  StatusOr<double> ValidationLoss();
  // Values each client uploads: windows · context · vocab (plus windows · context confidence
  // weights with ensemble = "confidence").
  size_t ContributionLength() const;
  // The ensemble the LLM last distilled to: (windows · context, vocab) probabilities, before the
  // floor and renormalisation of EnsembleTeacherLogits.
  const std::vector<float>& last_ensemble() const { return last_ensemble_; }

 private:
  DistillUpServer(DistillUpConfig config, LocalTrainConfig local, std::shared_ptr<Gpt> llm,
                  ModelConfig student, TokenDataset public_tokens, std::vector<Record> validation,
                  int64_t eval_tokens, uint64_t seed);
  // Trains the LLM on the round's windows against the ensemble `probs` (N,V).
  Status TrainLlm(const std::vector<float>& probs);
  // One client's upload checked as config_.ensemble says.
  Status CheckUpload(const std::vector<float>& values) const;
  // The round's ensemble (from the results or the privacy pipeline's aggregate) into the LLM.
  Status LearnFromEnsemble();
  void CountClientLoss(const wire::TaskResult& result);

  DistillUpConfig config_;
  LocalTrainConfig local_;
  std::shared_ptr<Gpt> llm_;
  // The LLM's AdamW across rounds (null when the LLM only teaches: config_.upload false).
  std::unique_ptr<ServerOptimizer> llm_optimizer_;
  std::unique_ptr<PublicTextTerm> english_;  // <section>.english_weight > 0
  std::vector<float> last_ensemble_;
  ModelConfig student_;
  std::vector<ModelConfig> client_models_;
  int context_ = 0;  // window length: the shortest context of any client's SLM
  bool client_eval_ = false;
  bool evaluating_ = false;  // the round's distill.eval task is open
  double own_val_sum_ = 0.0, own_val_weight_ = 0.0, all_val_sum_ = 0.0;
  int evaluations_ = 0;
  TokenDataset public_tokens_;
  std::vector<Record> validation_;
  int64_t eval_tokens_;
  uint64_t seed_;

  // The round in progress.
  uint64_t round_ = 0;
  std::vector<uint32_t> windows_;
  std::optional<RunningSum> sum_;          // clients' probabilities, without the privacy pipeline
  // selection = "min-ce": per position the lowest-CE client's probabilities and that CE.
  std::vector<float> best_;
  std::vector<double> best_ce_;
  std::optional<std::vector<float>> mean_;  // from the privacy pipeline
  double client_loss_sum_ = 0.0, client_weight_ = 0.0;
  double client_kl_sum_ = 0.0;  // fedmkt: the clients' distillation KL to the LLM
  double kd_sum_ = 0.0, kl_sum_ = 0.0, ce_sum_ = 0.0, english_sum_ = 0.0;
  double masked_fraction_ = 0.0;
  // The LLM's loss over all the round's windows before and after its steps.
  double kd_before_ = 0.0, kd_after_ = 0.0;
  int steps_done_ = 0;
  double server_s_ = 0.0;
};

}  // namespace tandem

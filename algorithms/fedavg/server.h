// The coordinator's half of `fedavg` (McMahan et al. 2017) and its server-optimizer family: each
// round the cohort gets the global SLM ("fedavg.train"), trains it locally and uploads its delta;
// the deltas are folded into the strategy's running sum as they arrive, and the strategy's step
// (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, median, trimmed mean) makes the new global model.
// Optionally a second task ("fedavg.eval") has the cohort evaluate the new model on its own data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/common/local_train.h"
#include "algorithms/common/strategy.h"
#include "coordinator/algorithm.h"
#include "data/corpus.h"
#include "models/gpt.h"

namespace tandem {

class Config;

struct FedAvgServerConfig {
  LocalTrainConfig local;
  StrategyConfig strategy;
  int64_t eval_tokens = 32768;  // eval.tokens: held-out targets per evaluation (0 = all)
  bool client_eval = false;     // eval.clients: also a "fedavg.eval" task every round
  uint64_t seed = 1;
};

// Reads [client], [strategy] and [eval].
StatusOr<FedAvgServerConfig> FedAvgServerConfigFromConfig(const Config& config);

class FedAvgServer : public ServerAlgorithm {
 public:
  // `model` is the initial global SLM; `validation` the held-out records it is evaluated on.
  FedAvgServer(FedAvgServerConfig config, std::unique_ptr<Gpt> model,
               std::unique_ptr<Strategy> strategy, std::vector<Record> validation);

  std::string name() const override { return "fedavg"; }
  std::vector<std::string> RequiredCapabilities() const override;
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override;
  Status OnResult(const ClientInfo& client, const wire::TaskResult& result) override;
  // A training result's delta folded into the strategy's running sum as it arrives (mean-based
  // strategies; the coordinate-wise ones keep every delta and take it whole).
  StatusOr<std::unique_ptr<ResultStream>> StreamResult(const ClientInfo& client, double weight,
                                                       size_t values) override;
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

  Gpt& model() { return *model_; }
  // Held-out loss of the global model on the validation records (eval.tokens of them).
  StatusOr<double> ValidationLoss();

 private:
  class DeltaStream;
  TaskSpec ModelTask(const std::string& kind, wire::Params params) const;
  // Everything about a training result but its delta's values: weight, the one f32 tensor
  // "delta" of the model's shape, train_loss. Returns the loss.
  StatusOr<double> CheckTrainResult(const wire::TaskResult& result) const;
  // Counts an accepted training result's metrics.
  void CountTrainResult(const wire::TaskResult& result, double loss);

  FedAvgServerConfig config_;
  std::unique_ptr<Gpt> model_;
  std::unique_ptr<Strategy> strategy_;
  std::vector<Record> validation_;
  uint64_t round_ = 0;
  std::string task_kind_;
  bool aggregated_ = false;  // this round's step was taken in OnAggregate
  // Reported by clients with their results, weighted by the results' weights.
  double train_loss_sum_ = 0.0, train_weight_ = 0.0;
  double client_val_sum_ = 0.0, client_val_weight_ = 0.0;
  double compute_max_ = 0.0, compute_sum_ = 0.0;  // clients' reported compute seconds
  int compute_count_ = 0;
};

}  // namespace tandem

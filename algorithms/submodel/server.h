// The coordinator's half of `submodel`: federated training of the global model (the cloud LLM)
// through sub-models of it, HeteroFL (Diao et al. 2021), FedRolex (Alam et al. 2022) and FjORD
// (Horváth et al. 2021) style. Each client has a capacity tier, a width divisor d from
// submodel.width_divisors (client K gets entry K mod its length); each round it is sent the
// sub-model of width 1/d cut from the global model by an alignment map (prune/plan.h SubmodelMap:
// a static prefix, a window rolling with the round, or the most important heads, neurons and
// channels), trains it on its own data and uploads its delta. The coordinator lifts every delta
// into the global model's coordinates (prune/extract.h) and moves each coordinate by the mean of
// the deltas of the clients whose sub-model covered it, weighted by their examples; coordinates
// no client covered stay as they were. With every client at width 1 this is FedAvg, bit for bit.
//
// Under the privacy pipeline each client uploads its delta lifted into the global model's
// coordinates (0 outside its sub-model), with weight 1: contributions of every tier then have
// one length, are clipped, noised and masked like any other, and the coordinator divides each
// coordinate of the protected sum by the number of contributors whose sub-model covers it (it
// knows who contributed and their tiers, not what they sent). The price is bytes: every client
// uploads the whole model's length whatever its tier, and the DP noise on a coordinate is divided
// by fewer clients where fewer cover it.
//
// Models(): the global model ("model", the headline) and, once a round has ended, each narrower
// tier's sub-model of that round's window cut from the new global model ("submodel_d<d>").
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/common/local_train.h"
#include "algorithms/common/strategy.h"
#include "coordinator/aggregator.h"
#include "coordinator/algorithm.h"
#include "data/corpus.h"
#include "models/gpt.h"
#include "prune/extract.h"
#include "prune/importance.h"
#include "prune/plan.h"

namespace tandem {

class Config;

struct SubmodelServerConfig {
  LocalTrainConfig local;
  StrategyConfig strategy;
  std::vector<int64_t> width_divisors = {1};  // submodel.width_divisors: client K gets [K mod n]
  WindowKind window = WindowKind::kStatic;    // submodel.window
  int stride = 0;                             // submodel.stride (rolling; 0 = the window's width)
  bool shrink_channels = true;                // submodel.shrink_channels
  ImportanceMethod importance = ImportanceMethod::kMagnitude;  // submodel.importance
  int calibration_batches = 4;                // submodel.calibration_batches (activation, taylor)
  int64_t eval_tokens = 32768;                // eval.tokens
  uint64_t seed = 1;
};

// Reads [submodel], [client], [strategy] and [eval].
StatusOr<SubmodelServerConfig> SubmodelServerConfigFromConfig(const Config& config);

class SubmodelServer : public ServerAlgorithm {
 public:
  // `model` is the global model; `validation` its held-out records; `public_records` the
  // calibration text of activation and taylor importance; `privacy`: the pipeline wraps this half.
  SubmodelServer(SubmodelServerConfig config, std::unique_ptr<Gpt> model,
                 std::unique_ptr<Strategy> strategy, std::vector<Record> validation,
                 std::vector<Record> public_records, bool privacy);

  std::string name() const override { return "submodel"; }
  std::vector<std::string> RequiredCapabilities() const override;
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override;
  bool CustomizesTasks() const override { return true; }
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

  Gpt& model() { return *model_; }
  // The width divisor of client `index` (-1, a name that is not client-K: the first entry).
  int DivisorOf(int index) const;
  // This round's sub-model of divisor d (BeginRound made it); nullptr for a divisor not in use.
  const Alignment* TierAlignment(int divisor) const;

 private:
  // The round's sub-model of each divisor, and its weights once encoded.
  struct Tier {
    std::optional<Alignment> alignment;
    std::optional<wire::Tensor> weights;  // "params", extracted from the global model
    std::string model_name;               // the child's ModelConfig::ToString
  };
  Status MakeTiers(uint64_t round);
  // Moves the global model by the covered mean: `mean` is Σ w·lifted delta / `divisor` for the
  // clients `contributors` (names) with weights `weights` (empty: 1 each).
  Status ApplyCoveredMean(std::span<float> mean, double divisor,
                          const std::vector<std::string>& contributors,
                          const std::vector<double>& weights);
  int DivisorOfName(const std::string& name) const;

  SubmodelServerConfig config_;
  std::unique_ptr<Gpt> model_;
  std::unique_ptr<Strategy> strategy_;
  std::vector<Record> validation_;
  std::vector<Record> public_;
  bool privacy_ = false;
  uint64_t round_ = 0;
  std::map<int, Tier> tiers_;
  std::optional<RunningSum> sum_;        // Σ w·lifted delta, without the privacy pipeline
  std::vector<float> lifted_;            // (model) scratch for one lifted delta, kept at 0
  std::vector<std::string> accepted_;    // this round's contributors, in arrival order
  std::vector<double> accepted_weight_;  // and their weights
  std::optional<Aggregate> aggregate_;   // under the privacy pipeline, until the task closes
  double train_loss_sum_ = 0.0, train_weight_ = 0.0;
  double uncovered_fraction_ = 0.0;      // of the model's coordinates, this round
  std::vector<uint8_t> ever_covered_;    // (model) 1 once a round has moved the coordinate
  std::map<int, double> tier_loss_sum_, tier_weight_;
  // (width-1/d sub-model) each tier's sub-model of the last round's window cut from the global
  // model after its step (EndRound): what a device of that tier runs, checkpointed as
  // submodel_d<d>.safetensors so it can be scored like any model (tandem eval). Width 1 has none.
  std::map<int, std::unique_ptr<Gpt>> tier_models_;
};

}  // namespace tandem

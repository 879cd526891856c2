// The coordinator's half of `route-gapg`: federated post-training of the device model's
// answer-or-hand-off policy with GAPG (Fang, Han, Yuan, Brinton, arXiv 2509.24050; docs/routing.md
// "Federated routing"). The coordinator holds the device model (route-gapg.device_checkpoint) and
// the cloud (route-gapg.cloud_checkpoint), which its inference service serves (serve.enabled). Each
// round it sends the policy's trainable values (the marker row, or every parameter) — and the
// device's weights once to each client — and each client runs GAPG steps on its own prompts, asks
// the cloud through the service about its hand-offs, and uploads its delta: a contribution like
// any other, averaged by [strategy] and protected by the privacy pipeline. The averaged policy is
// checkpointed every round as checkpoints/model.safetensors, a device `tandem route eval` takes as
// route.policy_checkpoint.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/common/strategy.h"
#include "algorithms/route_gapg/tasks.h"
#include "coordinator/algorithm.h"
#include "data/corpus.h"
#include "models/gpt.h"
#include "models/trainable.h"

namespace tandem {

class Config;

struct RouteGapgServerConfig {
  std::string device_checkpoint;       // route-gapg.device_checkpoint (required)
  std::string cloud_checkpoint;        // route-gapg.cloud_checkpoint (required)
  std::vector<double> client_budgets = {0.3};  // client K: client_budgets[K mod size], in (0, 1]
  int64_t local_steps = 4;             // route-gapg.local_steps: GAPG steps per round
  bool filter = true;                  // route-gapg.filter: the adaptive filter each round
  int64_t warm_start_steps = 100;      // route-gapg.warm_start_steps: round 1 only
  // The rest of the task (levels, split, examples_per_level, test_fraction, trainable, mode, lr,
  // group_size, prompts_per_step, temperature, max_tokens, answer_correct, handoff_correct, rho,
  // warm_start_handoff_fraction, warm_start_lr, warm_start_batch): route-gapg.<same name>.
  RouteGapgTrainTask task;
  StrategyConfig strategy;
  int clients = 1;                     // federation.clients
  // Which part of the split client K holds: client_parts[K mod size]; empty: part K mod parts.
  std::vector<int> client_parts;       // route-gapg.client_parts
  double eval_budget = 0.3;            // route-gapg.eval_budget: the last round's scoring cap
  // route-gapg.eval_cap: how that cap grants, as route.cap for `tandem route eval`: "online"
  // (HandOffCap in arrival order) or "ranked" (RankedHandOffGrants on the marker probability).
  std::string eval_cap = "online";
  int64_t rounds = 1;                  // federation.rounds: the last round is scored
  int64_t eval_tokens = 32768;         // eval.tokens: the device's held-out loss on [data]
  int PartOf(int client_index) const;
};

// Reads [route-gapg] and [strategy], and checks what can be checked before a run: the rewards,
// the budgets, that every client's share of the prompts is non-empty, that serve.enabled is on.
StatusOr<RouteGapgServerConfig> RouteGapgServerConfigFromConfig(const Config& config);

class RouteGapgServer : public ServerAlgorithm {
 public:
  // `device`: where the policy starts (its architecture must be the clients'); `cloud`: what the
  // service serves, as large as the device at least (the service serves the largest model).
  static StatusOr<std::unique_ptr<RouteGapgServer>> Create(RouteGapgServerConfig config,
                                                           std::unique_ptr<Gpt> device,
                                                           std::unique_ptr<Gpt> cloud,
                                                           std::unique_ptr<Strategy> strategy,
                                                           std::vector<Record> validation = {});

  std::string name() const override { return "route-gapg"; }
  std::vector<std::string> RequiredCapabilities() const override { return {kRouteGapgTrainTask}; }
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
  // The cloud first: of equal sizes the service serves the first listed.
  std::vector<RunModel> Models() const override;
  std::optional<std::string> PrivacyConflict() const override;

  Gpt& device() { return *device_; }
  const std::vector<float>& policy() const { return policy_; }

 private:
  RouteGapgServer(RouteGapgServerConfig config, std::unique_ptr<Gpt> device,
                  std::unique_ptr<Gpt> cloud, std::unique_ptr<Strategy> strategy);

  RouteGapgServerConfig config_;
  std::unique_ptr<Gpt> device_, cloud_;
  std::unique_ptr<Strategy> strategy_;
  std::vector<Record> validation_;  // [data]'s held-out records: the device's text loss
  ParamRange range_;
  std::vector<float> policy_;  // the trainable values, as in device_
  uint64_t round_ = 0;
  std::map<std::string, bool> sent_device_;  // clients that hold the device's weights
  std::optional<wire::Tensor> device_tensor_;
  bool aggregated_ = false;
  double policy_change_ = 0.0;  // L2 norm of the round's step
  // The last round's scores of the policy on every part's held-out prompts and on their union.
  Status Score(std::map<std::string, double>* metrics) const;

  // The round's client figures: name -> metric -> value.
  std::map<std::string, std::pair<int, wire::Metrics>> client_metrics_;
};

}  // namespace tandem

// The coordinator's half of `distill-down` (DESIGN.md "Algorithms"): knowledge flows from the
// cloud LLM to the edge SLMs. Every round the coordinator picks windows of the public split, runs
// its LLM (the teacher) on them, and sends the top-k of its predictions with the round's training
// task ("distill.train"); each client trains the global SLM on its own data plus a
// distillation batch on those public windows (client/fedavg_client.h), and the deltas are
// averaged as in FedAvg, with any of its server strategies and the privacy pipeline.
//
// Clients hold the same public split (it is derived from the shared config), so only window
// offsets and k + 1 numbers per position travel: 100 bytes a position for k = 16.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/engine.h"
#include "algorithms/common/teacher_targets.h"
#include "algorithms/fedavg/server.h"
#include "core/rng.h"
#include "data/batcher.h"
#include "models/gpt.h"

namespace tandem {

class Config;

// The [distill-down] section.
struct DistillDownConfig {
  std::string teacher;       // distill-down.teacher: the LLM checkpoint (safetensors); required
  int top_k = 16;            // distill-down.top_k: teacher tokens kept per position, in [1, vocab]
  double temperature = 2.0;  // distill-down.temperature: T of the KD term
  double alpha = 0.5;        // distill-down.alpha: weight of the public batch's own CE; 1 − α for KD
  double weight = 1.0;       // distill-down.weight: of the public batch's loss against the own-data one
  int windows = 32;          // distill-down.windows: public windows per round, each one SLM context
  // distill-down.slms: "fedavg" averages the clients' SLMs every round; "local" keeps each client's
  // own SLM on the client (nothing goes up; run by DistillUpServer, see LocalDistillDownConfig).
  std::string slms = "fedavg";
};

StatusOr<DistillDownConfig> DistillDownConfigFromConfig(const Config& config);

// The teacher and the windows its targets are computed on. A grouped run (clients of several
// architectures, coordinator/grouped_server.h) has one DistillDownServer per architecture, all
// sharing one SharedTeacher: every group gets the same windows of `context` tokens (the shortest
// SLM context; sent as kd.context where it is below a group's own) and the same targets, computed
// by the first group that asks in a round and reused by the others. Servers sharing one must be
// built from the same DistillDownConfig, public records and seed. Not thread-safe.
struct SharedTeacher {
  SharedTeacher(std::shared_ptr<Gpt> teacher, int window_context)
      : model(std::move(teacher)), context(window_context) {}
  std::shared_ptr<Gpt> model;
  int context;  // window length, at most every sharing SLM's context and the teacher's
  // The last targets computed, and what they were computed on.
  std::vector<uint32_t> starts;
  int k = 0;
  double temperature = 0.0;
  std::vector<wire::Tensor> targets;  // kd.topk_words, kd.topk_values
  size_t bytes = 0;
};

class DistillDownServer : public ServerAlgorithm {
 public:
  // `teacher` must share the SLM's vocabulary and have at least its context; `public_records`
  // the public split, holding at least one window. `seed` draws the windows of each round.
  static StatusOr<std::unique_ptr<DistillDownServer>> Create(
      DistillDownConfig config, std::unique_ptr<FedAvgServer> inner, std::unique_ptr<Gpt> teacher,
      const std::vector<Record>& public_records, uint64_t seed);
  // The same with a teacher shared with other groups' servers: its window context must fit this
  // SLM and the teacher.
  static StatusOr<std::unique_ptr<DistillDownServer>> Create(
      DistillDownConfig config, std::unique_ptr<FedAvgServer> inner,
      std::shared_ptr<SharedTeacher> teacher, const std::vector<Record>& public_records,
      uint64_t seed);

  std::string name() const override { return "distill-down"; }
  std::vector<std::string> RequiredCapabilities() const override;
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override;
  bool CustomizesTasks() const override { return inner_->CustomizesTasks(); }
  void Customize(const ClientInfo& client, wire::TaskAssign* assign) override {
    inner_->Customize(client, assign);
  }
  Status OnResult(const ClientInfo& client, const wire::TaskResult& result) override;
  Status OnAggregate(const Aggregate& aggregate) override { return inner_->OnAggregate(aggregate); }
  StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) override {
    return inner_->OnTaskClosed(report);
  }
  void AbortRound() override;
  Status EndRound(uint64_t round, std::map<std::string, double>* metrics) override;
  void SaveState(std::map<std::string, std::vector<float>>* tensors,
                 std::map<std::string, std::string>* metadata) const override {
    inner_->SaveState(tensors, metadata);
  }
  Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                   const std::map<std::string, std::string>& metadata) override {
    return inner_->LoadState(tensors, metadata);
  }

  std::vector<RunModel> Models() const override { return inner_->Models(); }
  std::optional<std::string> PrivacyConflict() const override { return inner_->PrivacyConflict(); }

  FedAvgServer& fedavg() { return *inner_; }
  // The public-stream offsets of round `round`'s windows, from (seed, round) alone.
  std::vector<uint32_t> DrawWindows(uint64_t round) const;

 private:
  DistillDownServer(DistillDownConfig config, std::unique_ptr<FedAvgServer> inner,
                    std::shared_ptr<SharedTeacher> teacher, TokenDataset public_tokens,
                    uint64_t seed);
  // Adds the teacher's targets on `starts` to `spec`, reusing the shared teacher's last ones when
  // they were computed on the same windows; returns their bytes on the wire.
  size_t AddTargets(const std::vector<uint32_t>& starts, TaskSpec* spec);

  DistillDownConfig config_;
  std::unique_ptr<FedAvgServer> inner_;
  std::shared_ptr<SharedTeacher> teacher_;
  TokenDataset public_tokens_;
  uint64_t seed_;
  // Clients' distillation numbers this round, weighted by their results' weights.
  double kd_sum_ = 0.0, kl_sum_ = 0.0, kd_weight_ = 0.0;
  double teacher_s_ = 0.0;
  uint64_t targets_bytes_ = 0;
};

}  // namespace tandem

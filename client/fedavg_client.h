// The client half of `fedavg` and its family: "fedavg.train" trains the global SLM it is sent on
// the client's own partition for some steps or epochs (with the FedProx term when μ > 0, Li et al.
// 2020) and uploads the delta, weighted by its number of examples; "fedavg.eval" reports the
// loss of the model it is sent on the client's own held-out records. "distill.train" (the client
// half of `distill-down`) is "fedavg.train" plus, at every local step, a knowledge-distillation
// batch on the public split against the coordinator's top-k teacher targets. "distill.up" (the
// client half of `distill-up`) trains this client's own SLM, which stays here, and uploads its
// predictions on the task's public windows. "distill.mutual" (`fedmkt`) does both: the own SLM
// trains with distillation to the LLM's targets and uploads its predictions. "fedcollm.train"
// trains only LoRA adapters on the global SLM and uploads their delta.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/session.h"
#include "core/compute_slots.h"
#include "data/batcher.h"
#include "data/corpus.h"
#include "models/gpt.h"

namespace tandem {

struct ClientData {
  std::vector<Record> train;       // this client's partition of the training split
  std::vector<Record> validation;  // this client's partition of the validation split
  std::vector<Record> public_;     // the public split, the same for every process
  std::vector<Record> all_validation;  // every client's held-out records (all private categories)
};

class FedAvgClient : public TaskHandler {
 public:
  // `index`: this client's K, which seeds its local sampling. `threads`: compute threads it
  // uses, holding that many machine-wide compute slots while it computes (nullptr: no slots).
  FedAvgClient(const ModelConfig& model, ClientData data, int index, int threads,
               const ComputeSlots* slots);

  std::vector<std::string> Capabilities() const override;
  // The weights this client's own SLM starts from in distill-up (e.g. the SLM trained on the
  // public categories); without them it starts from a fresh initialization.
  void SetInitialParams(std::vector<float> params) { initial_params_ = std::move(params); }
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  Status Train(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result);
  // The public windows and teacher targets of a "distill.train" task, checked.
  struct KdBatches;
  StatusOr<KdBatches> LoadKd(const wire::TaskAssign& task) const;
  Status Evaluate(const wire::TaskAssign& task, wire::TaskResult* result);
  // distill.eval: this client's own SLM on its own held-out records and on everyone's.
  Status EvaluateLocal(const wire::TaskAssign& task, wire::TaskResult* result);
  Status LoadGlobal(const wire::TaskAssign& task);
  // The length of the task's public windows: kd.context when given (at most this model's context).
  StatusOr<int> WindowContext(const wire::Params& params) const;
  // fedcollm: enables the task's LoRA adapters on the SLM (once) and loads the global ones.
  Status LoadAdapters(const wire::TaskAssign& task);
  // distill-up: checks the task's model and sets up this client's own SLM on first use.
  Status UseLocalModel(const wire::TaskAssign& task, uint64_t seed);
  // distill-up: the SLM's probabilities at the task's temperature on its public windows.
  StatusOr<std::vector<float>> PredictWindows(const wire::TaskAssign& task);

  std::unique_ptr<Gpt> model_;
  ClientData data_;
  TokenDataset train_tokens_;   // data_.train, tokenized once
  TokenDataset public_tokens_;  // data_.public_, tokenized once
  int index_;
  int threads_;
  std::vector<float> initial_params_;
  bool local_ready_ = false;  // distill-up: the own SLM exists
  const ComputeSlots* slots_;
};

// The client's share of the run's data: the config's corpus split and partitioned exactly as
// every other process does, then partition `index` of `clients`.
class Config;
StatusOr<ClientData> LoadClientData(const Config& config, int index);

}  // namespace tandem

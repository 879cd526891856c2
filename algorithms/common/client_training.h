// What the client halves of fedavg, distill-down, fedmkt, distill-up and fedcollm share: a round
// of local training on the client's own data through the local trainer (the text's loss, then
// the algorithm's extra terms, then FedProx's), the delta upload, and held-out evaluation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "algorithms/common/local_train.h"
#include "client/context.h"
#include "train/local_trainer.h"
#include "wire/message.h"

namespace tandem {

struct OwnDataTraining {
  LocalTrainParams params;
  uint64_t round = 0;
  std::optional<Trainable> trainable;  // what trains (TrainerOptions::trainable)
  double proximal_mu = 0.0;       // > 0: FedProx towards the weights the round started from
  std::vector<LossTerm*> extra;   // after the text's term, in this order (e.g. distillation)
};

// Trains `model` for the task's steps. Batches depend on (seed, client index, round) alone, so
// a replayed round is identical. On return `start` holds the trained parameters as they were
// before (the round's starting point, for the delta).
StatusOr<TrainReport> TrainOnOwnData(const ClientContext& context, Gpt* model,
                                     const OwnDataTraining& training, std::vector<float>* start);

// The result's metrics from a report: train_loss, steps and, with distillation, kd_loss and kd_kl.
void ReportTraining(const TrainReport& report, wire::TaskResult* result);

// Uploads trained − start as the contribution "delta", weighted by the client's examples.
void UploadDelta(const ClientContext& context, std::span<const float> trained,
                 const std::vector<float>& start, wire::TaskResult* result);

// Scores `model` on the client's own held-out records: val_loss, weighted by its tokens.
Status EvaluateOwn(const ClientContext& context, Gpt& model, int64_t max_tokens,
                   wire::TaskResult* result);

}  // namespace tandem

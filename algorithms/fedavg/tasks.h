// The tasks of `fedavg`, encoded and decoded by both halves:
//   "fedavg.train": the global model's weights, the local training, and FedProx's μ; the result
//                   is the contribution "delta" (trained − sent), weighted by the client's examples.
//   "fedavg.eval":  the global model's weights and eval_tokens; the result is val_loss on the
//                   client's own held-out records, weighted by their tokens.
#pragma once

#include "algorithms/common/local_train.h"
#include "core/status.h"
#include "wire/message.h"

namespace tandem {

inline constexpr char kFedAvgTrainTask[] = "fedavg.train";
inline constexpr char kFedAvgEvalTask[] = "fedavg.eval";

struct FedAvgTrainTask {
  LocalTrainParams local;
  double proximal_mu = 0.0;  // FedProx (Li et al. 2020); 0 = plain FedAvg

  void Encode(wire::Params* params) const;
  static StatusOr<FedAvgTrainTask> Decode(const wire::Params& params);
};

}  // namespace tandem

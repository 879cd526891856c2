// The tasks of `distill-up` (FedDF), encoded and decoded by both halves:
//   "distill.up":   the client's own SLM trains on its data for the round (local training), then
//                   uploads its probabilities at kd.temperature on the public windows kd.windows
//                   (of kd.context tokens) as the contribution "probs", weight 1.
//   "distill.eval": the own SLM scored on the client's own and on all held-out records
//                   (algorithms/common/own_model.h).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "algorithms/common/local_train.h"
#include "core/status.h"
#include "models/model_config.h"
#include "wire/message.h"

namespace tandem {

inline constexpr char kDistillUpTask[] = "distill.up";

struct DistillUpTask {
  std::string model;              // the clients' architecture (ModelConfig::ToString)
  LocalTrainParams local;
  float temperature = 2.0f;       // kd.temperature of the uploaded probabilities
  std::vector<uint32_t> windows;  // kd.windows: public-stream offsets
  int context = 0;                // kd.context: the windows' length

  void Encode(wire::Params* params, std::vector<wire::Tensor>* tensors) const;
  // The windows are decoded against the client's public stream by DecodeWindows
  // (algorithms/common/task_parts.h); this reads the rest.
  static StatusOr<DistillUpTask> Decode(const wire::Params& params);
};

}  // namespace tandem

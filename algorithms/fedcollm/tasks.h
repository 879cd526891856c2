// The tasks of `fedcollm` (FedCoLLM, Fan et al. 2024), encoded and decoded by both halves:
//   "fedcollm.train": the global SLM's weights, its LoRA adapters (lora.rank/alpha/targets and
//                     tensor "lora"), fedavg's local training and FedProx's μ; the client trains
//                     the adapters alone and uploads their delta, weighted by its examples.
//   "fedcollm.eval":  the same weights and adapters and eval_tokens; val_loss on the client's own
//                     held-out records.
#pragma once

#include "algorithms/common/task_parts.h"
#include "algorithms/fedavg/tasks.h"

namespace tandem {

inline constexpr char kFedCoLLMTrainTask[] = "fedcollm.train";
inline constexpr char kFedCoLLMEvalTask[] = "fedcollm.eval";

}  // namespace tandem

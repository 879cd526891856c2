// The task of `distill-down`, encoded and decoded by both halves:
//   "distill.train": fedavg's training task (algorithms/fedavg/tasks.h: the global SLM, local
//                    training, FedProx's μ) plus the LLM's top-k targets on public windows
//                    (kd.windows, kd.topk_words, kd.topk_values, kd.context when the windows are
//                    shorter than the SLM's context) and the distillation settings (kd.alpha,
//                    kd.temperature, kd.weight). The result is fedavg's delta.
// With local SLMs (distill-down.slms = "local") the task is fedmkt's "distill.mutual" with
// kd.upload = 0 instead.
#pragma once

#include "algorithms/common/task_parts.h"
#include "algorithms/fedavg/tasks.h"

namespace tandem {

inline constexpr char kDistillTrainTask[] = "distill.train";

}  // namespace tandem

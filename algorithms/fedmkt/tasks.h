// The task of `fedmkt` (FedMKT, Fan et al. 2024), encoded and decoded by both halves:
//   "distill.mutual": distill-up's task (algorithms/distill_up/tasks.h) plus, on the same
//                     windows, the LLM's top-k targets (kd.topk_words, kd.topk_values) with the
//                     clients' distillation settings (kd.alpha, kd.weight): the own SLM trains on
//                     its data plus distillation to them, then uploads its probabilities. With
//                     kd.upload = 0 (distill-down with local SLMs) nothing goes up.
#pragma once

#include "algorithms/common/task_parts.h"
#include "algorithms/distill_up/tasks.h"

namespace tandem {

inline constexpr char kMutualTask[] = "distill.mutual";

struct MutualTask {
  DistillUpTask up;     // its temperature is the targets' too
  KdTaskSettings kd;
  bool upload = true;   // kd.upload

  // The targets travel as tensors beside these (EncodeTopK / DecodeTopKFor).
  void Encode(wire::Params* params, std::vector<wire::Tensor>* tensors) const;
  static StatusOr<MutualTask> Decode(const wire::Params& params);
};

}  // namespace tandem

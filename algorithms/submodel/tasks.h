// The task of `submodel`, encoded and decoded by both halves:
//   "submodel.train": local training, the client's sub-model (its alignment map as the u8 tensor
//                     "sub.map", its weights as "model"/"params", the child's architecture), and
//                     "sub.scatter"; the result is the contribution "delta": trained − sent in the
//                     child's own coordinates weighted by the client's examples, or — with
//                     sub.scatter, under the privacy pipeline — lifted into the parent's
//                     coordinates (0 where the sub-model does not reach) with weight 1, so every
//                     client's contribution has the parent's length and secure aggregation and DP
//                     apply unchanged.
// The map travels as a tensor of its JSON bytes, not as a string parameter: an importance
// window's map lists many short runs (llm-small: tens of kB), beyond the wire's 4 KiB strings.
#pragma once

#include <vector>

#include "algorithms/common/local_train.h"
#include "core/status.h"
#include "prune/alignment_map.h"
#include "wire/message.h"

namespace tandem {

inline constexpr char kSubmodelTrainTask[] = "submodel.train";

struct SubmodelTrainTask {
  LocalTrainParams local;
  AlignmentMap map;      // tensor "sub.map": where the sub-model sits in the parent
  bool scatter = false;  // "sub.scatter": upload in the parent's coordinates

  // The parameters into `params`, the map's tensor appended to `tensors`.
  void Encode(wire::Params* params, std::vector<wire::Tensor>* tensors) const;
  // Checks the map (prune/alignment_map.h AlignmentMapFromJson).
  static StatusOr<SubmodelTrainTask> Decode(const wire::TaskAssign& task);
};

}  // namespace tandem

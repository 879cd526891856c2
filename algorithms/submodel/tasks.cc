// submodel's task; see algorithms/submodel/tasks.h.
#include "algorithms/submodel/tasks.h"

#include <cstdint>
#include <span>
#include <string>

#include "algorithms/common/task_parts.h"
#include "client/task_params.h"

namespace tandem {

void SubmodelTrainTask::Encode(wire::Params* params, std::vector<wire::Tensor>* tensors) const {
  local.Encode(params);
  (*params)["sub.scatter"] = static_cast<int64_t>(scatter ? 1 : 0);
  const std::string json = AlignmentMapToJson(map);
  tensors->push_back(wire::Tensor::Bytes(
      "sub.map", std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(json.data()),
                                          json.size())));
}

StatusOr<SubmodelTrainTask> SubmodelTrainTask::Decode(const wire::TaskAssign& assign) {
  SubmodelTrainTask task;
  TANDEM_ASSIGN_OR_RETURN(task.local, LocalTrainParams::Decode(assign.params));
  const wire::Tensor* map = FindTensor(assign.tensors, "sub.map");
  if (map == nullptr || map->dtype != wire::DType::kUint8) {
    return Status::InvalidArgument("expected a tensor 'sub.map' of u8 (the sub-model's map)");
  }
  const std::span<const uint8_t> bytes = map->AsBytes();
  TANDEM_ASSIGN_OR_RETURN(
      task.map, AlignmentMapFromJson(
                    std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                    "sub.map"));
  TANDEM_ASSIGN_OR_RETURN(int64_t scatter, IntParam(assign.params, "sub.scatter", 0, 1));
  task.scatter = scatter == 1;
  return task;
}

}  // namespace tandem

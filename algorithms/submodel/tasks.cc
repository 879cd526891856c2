// submodel's task; see algorithms/submodel/tasks.h.
#include "algorithms/submodel/tasks.h"

#include "client/task_params.h"

namespace tandem {

void SubmodelTrainTask::Encode(wire::Params* params) const {
  local.Encode(params);
  (*params)["sub.map"] = AlignmentMapToJson(map);
  (*params)["sub.scatter"] = static_cast<int64_t>(scatter ? 1 : 0);
}

StatusOr<SubmodelTrainTask> SubmodelTrainTask::Decode(const wire::Params& params) {
  SubmodelTrainTask task;
  TANDEM_ASSIGN_OR_RETURN(task.local, LocalTrainParams::Decode(params));
  TANDEM_ASSIGN_OR_RETURN(std::string map, StringParam(params, "sub.map"));
  TANDEM_ASSIGN_OR_RETURN(task.map, AlignmentMapFromJson(map, "sub.map"));
  TANDEM_ASSIGN_OR_RETURN(int64_t scatter, IntParam(params, "sub.scatter", 0, 1));
  task.scatter = scatter == 1;
  return task;
}

}  // namespace tandem

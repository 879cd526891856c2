// distill-up's tasks; see algorithms/distill_up/tasks.h.
#include "algorithms/distill_up/tasks.h"

#include "algorithms/common/task_parts.h"
#include "client/task_params.h"

namespace tandem {

void DistillUpTask::Encode(wire::Params* params, std::vector<wire::Tensor>* tensors) const {
  (*params)["model"] = model;
  local.Encode(params);
  (*params)["kd.temperature"] = static_cast<double>(temperature);
  EncodeWindows(windows, context, params, tensors);
}

StatusOr<DistillUpTask> DistillUpTask::Decode(const wire::Params& params) {
  DistillUpTask task;
  TANDEM_ASSIGN_OR_RETURN(task.model, StringParam(params, "model"));
  TANDEM_ASSIGN_OR_RETURN(task.local, LocalTrainParams::Decode(params));
  TANDEM_ASSIGN_OR_RETURN(double t, RealParam(params, "kd.temperature", 1e-3, 1e3));
  task.temperature = static_cast<float>(t);
  return task;
}

}  // namespace tandem

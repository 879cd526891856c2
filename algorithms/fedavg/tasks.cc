// fedavg's tasks; see algorithms/fedavg/tasks.h.
#include "algorithms/fedavg/tasks.h"

#include "client/task_params.h"

namespace tandem {

void FedAvgTrainTask::Encode(wire::Params* params) const {
  local.Encode(params);
  (*params)["proximal_mu"] = proximal_mu;
}

StatusOr<FedAvgTrainTask> FedAvgTrainTask::Decode(const wire::Params& params) {
  FedAvgTrainTask task;
  TANDEM_ASSIGN_OR_RETURN(task.local, LocalTrainParams::Decode(params));
  TANDEM_ASSIGN_OR_RETURN(task.proximal_mu, RealParam(params, "proximal_mu", 0.0, 1e6));
  return task;
}

}  // namespace tandem

// fedmkt's task; see algorithms/fedmkt/tasks.h.
#include "algorithms/fedmkt/tasks.h"

#include "client/task_params.h"

namespace tandem {

void MutualTask::Encode(wire::Params* params, std::vector<wire::Tensor>* tensors) const {
  up.Encode(params, tensors);
  EncodeKd(kd, params);
  if (!upload) (*params)["kd.upload"] = int64_t{0};
}

StatusOr<MutualTask> MutualTask::Decode(const wire::Params& params) {
  MutualTask task;
  TANDEM_ASSIGN_OR_RETURN(task.up, DistillUpTask::Decode(params));
  TANDEM_ASSIGN_OR_RETURN(task.kd, DecodeKd(params));
  if (params.count("kd.upload")) {
    TANDEM_ASSIGN_OR_RETURN(int64_t flag, IntParam(params, "kd.upload", 0, 1));
    task.upload = flag == 1;
  }
  return task;
}

}  // namespace tandem

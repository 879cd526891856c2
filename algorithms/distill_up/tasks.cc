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
  // Absent for the plain mean, so its tasks are byte for byte what they were.
  if (ensemble != EnsembleUpload::kMean) (*params)["kd.ensemble"] = std::string(EnsembleUploadName(ensemble));
  if (ensemble == EnsembleUpload::kVotes) (*params)["kd.vote_top_k"] = int64_t{vote_top_k};
}

const char* EnsembleTensorName(EnsembleUpload upload) {
  switch (upload) {
    case EnsembleUpload::kMean: return "probs";
    case EnsembleUpload::kConfidence: return "confidence";
    case EnsembleUpload::kVotes: return "votes";
  }
  return "probs";
}

StatusOr<DistillUpTask> DistillUpTask::Decode(const wire::Params& params) {
  DistillUpTask task;
  TANDEM_ASSIGN_OR_RETURN(task.model, StringParam(params, "model"));
  TANDEM_ASSIGN_OR_RETURN(task.local, LocalTrainParams::Decode(params));
  TANDEM_ASSIGN_OR_RETURN(double t, RealParam(params, "kd.temperature", 1e-3, 1e3));
  task.temperature = static_cast<float>(t);
  if (params.count("kd.ensemble")) {
    TANDEM_ASSIGN_OR_RETURN(std::string e, StringParam(params, "kd.ensemble"));
    if (e == "confidence") {
      task.ensemble = EnsembleUpload::kConfidence;
    } else if (e == "votes") {
      task.ensemble = EnsembleUpload::kVotes;
      // The vocabulary bounds it again where the logits are known.
      TANDEM_ASSIGN_OR_RETURN(int64_t k, IntParam(params, "kd.vote_top_k", 1, 1 << 20));
      task.vote_top_k = static_cast<int>(k);
    } else if (e != "mean") {
      return Status::InvalidArgument("kd.ensemble must be \"mean\", \"confidence\" or \"votes\"");
    }
  }
  return task;
}

}  // namespace tandem

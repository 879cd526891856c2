// The client half of distill-up; see algorithms/distill_up/client.h.
#include "algorithms/distill_up/client.h"

#include "algorithms/common/client_training.h"
#include "algorithms/common/own_model.h"
#include "algorithms/common/task_parts.h"
#include "algorithms/distill_up/tasks.h"

namespace tandem {

std::vector<std::string> DistillUpClient::Capabilities() const {
  return {kDistillUpTask, kOwnEvalTask};
}

Status DistillUpClient::Run(uint64_t round, const wire::TaskAssign& task,
                            wire::TaskResult* result) {
  if (task.kind == kOwnEvalTask) return EvaluateOwnModel(context_, task, result);
  if (task.kind != kDistillUpTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(DistillUpTask up, DistillUpTask::Decode(task.params));
  TANDEM_ASSIGN_OR_RETURN(Gpt * model, OwnModelFor(context_, task, up.local.seed));
  TANDEM_ASSIGN_OR_RETURN(PublicWindows windows, DecodeWindows(task, context_->public_tokens(),
                                                               model->config().context));
  OwnDataTraining training;
  training.params = up.local;
  training.round = round;
  std::vector<float> start;
  TANDEM_ASSIGN_OR_RETURN(TrainReport report, TrainOnOwnData(*context_, model, training, &start));
  TANDEM_ASSIGN_OR_RETURN(std::vector<float> upload,
                          PredictUpload(*model, windows, up.temperature, up.ensemble,
                                        up.vote_top_k));
  result->tensors.clear();
  result->tensors.push_back(
      wire::Tensor::Float32(EnsembleTensorName(up.ensemble), {upload.size()}, upload));
  result->weight = 1.0;  // every client counts once; confidence weights travel in the upload
  ReportTraining(report, result);
  return Status::Ok();
}

}  // namespace tandem

// The client half of fedavg; see algorithms/fedavg/client.h.
#include "algorithms/fedavg/client.h"

#include "algorithms/common/client_training.h"
#include "algorithms/common/task_parts.h"
#include "algorithms/fedavg/tasks.h"

namespace tandem {

std::vector<std::string> FedAvgClient::Capabilities() const {
  return {kFedAvgTrainTask, kFedAvgEvalTask};
}

Status FedAvgClient::Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) {
  Gpt& global = context_->global();
  if (task.kind == kFedAvgEvalTask) {
    TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens, DecodeEvalTokens(task.params));
    TANDEM_RETURN_IF_ERROR(DecodeWeightsInto(task, &global));
    return EvaluateOwn(*context_, global, max_tokens, result);
  }
  if (task.kind != kFedAvgTrainTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(FedAvgTrainTask train, FedAvgTrainTask::Decode(task.params));
  TANDEM_RETURN_IF_ERROR(DecodeWeightsInto(task, &global));
  OwnDataTraining training;
  training.params = train.local;
  training.round = round;
  training.proximal_mu = train.proximal_mu;
  std::vector<float> start;
  TANDEM_ASSIGN_OR_RETURN(TrainReport report, TrainOnOwnData(*context_, &global, training, &start));
  UploadDelta(*context_, global.params(), start, result);
  ReportTraining(report, result);
  return Status::Ok();
}

}  // namespace tandem

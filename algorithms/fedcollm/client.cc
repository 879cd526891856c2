// The client half of fedcollm; see algorithms/fedcollm/client.h.
#include "algorithms/fedcollm/client.h"

#include "algorithms/common/client_training.h"
#include "algorithms/fedcollm/tasks.h"

namespace tandem {

std::vector<std::string> FedCoLLMClient::Capabilities() const {
  return {kFedCoLLMTrainTask, kFedCoLLMEvalTask};
}

Status FedCoLLMClient::Run(uint64_t round, const wire::TaskAssign& task,
                           wire::TaskResult* result) {
  Gpt& slm = context_->global();
  if (task.kind == kFedCoLLMEvalTask) {
    TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens, DecodeEvalTokens(task.params));
    TANDEM_RETURN_IF_ERROR(DecodeWeightsInto(task, &slm));
    TANDEM_RETURN_IF_ERROR(DecodeAdaptersInto(task, &slm));
    return EvaluateOwn(*context_, slm, max_tokens, result);
  }
  if (task.kind != kFedCoLLMTrainTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(FedAvgTrainTask train, FedAvgTrainTask::Decode(task.params));
  TANDEM_RETURN_IF_ERROR(DecodeWeightsInto(task, &slm));
  TANDEM_RETURN_IF_ERROR(DecodeAdaptersInto(task, &slm));
  OwnDataTraining training;
  training.params = train.local;
  training.round = round;
  training.trained = Trained::kAdapters;
  training.proximal_mu = train.proximal_mu;
  std::vector<float> start;
  TANDEM_ASSIGN_OR_RETURN(TrainReport report, TrainOnOwnData(*context_, &slm, training, &start));
  UploadDelta(*context_, slm.lora_params(), start, result);
  ReportTraining(report, result);
  return Status::Ok();
}

}  // namespace tandem

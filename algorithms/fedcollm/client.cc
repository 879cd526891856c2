// The client half of fedcollm; see algorithms/fedcollm/client.h.
#include "algorithms/fedcollm/client.h"

#include <algorithm>
#include <vector>

#include "algorithms/common/client_training.h"
#include "algorithms/fedcollm/tasks.h"

namespace tandem {
namespace {

// The task's base SLM and adapters into `slm`, or neither: the adapters load first (they are
// small to keep), the base last (DecodeWeightsInto checks before it copies), so a refused task
// leaves the SLM as it was — except that a first task enables the adapters it names.
Status LoadSlm(const wire::TaskAssign& task, Gpt* slm) {
  std::vector<float> adapters;
  if (slm->has_lora()) adapters.assign(slm->lora_params().begin(), slm->lora_params().end());
  TANDEM_RETURN_IF_ERROR(DecodeAdaptersInto(task, slm));
  if (Status s = DecodeWeightsInto(task, slm); !s.ok()) {
    if (!adapters.empty()) std::copy(adapters.begin(), adapters.end(), slm->lora_params().begin());
    return s;
  }
  return Status::Ok();
}

}  // namespace

std::vector<std::string> FedCoLLMClient::Capabilities() const {
  return {kFedCoLLMTrainTask, kFedCoLLMEvalTask};
}

Status FedCoLLMClient::Run(uint64_t round, const wire::TaskAssign& task,
                           wire::TaskResult* result) {
  Gpt& slm = context_->global();
  if (task.kind == kFedCoLLMEvalTask) {
    TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens, DecodeEvalTokens(task.params));
    TANDEM_RETURN_IF_ERROR(LoadSlm(task, &slm));
    return EvaluateOwn(*context_, slm, max_tokens, result);
  }
  if (task.kind != kFedCoLLMTrainTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(FedAvgTrainTask train, FedAvgTrainTask::Decode(task.params));
  TANDEM_RETURN_IF_ERROR(LoadSlm(task, &slm));
  OwnDataTraining training;
  training.params = train.local;
  training.round = round;
  training.trainable = Trainable::AdaptersOnly();
  training.proximal_mu = train.proximal_mu;
  std::vector<float> start;
  TANDEM_ASSIGN_OR_RETURN(TrainReport report, TrainOnOwnData(*context_, &slm, training, &start));
  UploadDelta(*context_, slm.lora_params(), start, result);
  ReportTraining(report, result);
  return Status::Ok();
}

}  // namespace tandem

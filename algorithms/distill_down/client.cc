// The client half of distill-down; see algorithms/distill_down/client.h.
#include "algorithms/distill_down/client.h"

#include <algorithm>

#include "algorithms/common/client_training.h"
#include "algorithms/distill_down/tasks.h"
#include "algorithms/fedmkt/tasks.h"
#include "algorithms/common/own_model.h"
#include "distill/kd_terms.h"

namespace tandem {

std::vector<std::string> DistillDownClient::Capabilities() const {
  return {kDistillTrainTask, kFedAvgEvalTask, kMutualTask, kOwnEvalTask};
}

Status DistillDownClient::Run(uint64_t round, const wire::TaskAssign& task,
                              wire::TaskResult* result) {
  if (task.kind == kMutualTask || task.kind == kOwnEvalTask) {
    return local_.Run(round, task, result);
  }
  Gpt& global = context_->global();
  if (task.kind == kFedAvgEvalTask) {
    TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens, DecodeEvalTokens(task.params));
    TANDEM_RETURN_IF_ERROR(DecodeWeightsInto(task, &global));
    return EvaluateOwn(*context_, global, max_tokens, result);
  }
  if (task.kind != kDistillTrainTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(FedAvgTrainTask train, FedAvgTrainTask::Decode(task.params));
  // Everything is checked before the weights load: a refused task leaves the model as it was.
  TANDEM_ASSIGN_OR_RETURN(KdTaskSettings settings, DecodeKd(task.params));
  TANDEM_ASSIGN_OR_RETURN(PublicWindows windows, DecodeWindows(task, context_->public_tokens(),
                                                               global.config().context));
  TANDEM_ASSIGN_OR_RETURN(TopKTargets targets,
                          DecodeTopKFor(task, windows, global.config().vocab,
                                        settings.options.temperature));
  TANDEM_RETURN_IF_ERROR(DecodeWeightsInto(task, &global));
  const int kd_batch = std::min(train.local.train.batch, windows.count());
  TopKDistillTerm kd(windows, std::move(targets), settings.options, kd_batch,
                     static_cast<float>(settings.weight));
  OwnDataTraining training;
  training.params = train.local;
  training.round = round;
  training.proximal_mu = train.proximal_mu;
  training.extra = {&kd};
  std::vector<float> start;
  TANDEM_ASSIGN_OR_RETURN(TrainReport report, TrainOnOwnData(*context_, &global, training, &start));
  UploadDelta(*context_, global.params(), start, result);
  ReportTraining(report, result);
  return Status::Ok();
}

}  // namespace tandem

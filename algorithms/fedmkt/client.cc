// The client half of fedmkt; see algorithms/fedmkt/client.h.
#include "algorithms/fedmkt/client.h"

#include <algorithm>

#include "algorithms/common/client_training.h"
#include "algorithms/common/own_model.h"
#include "algorithms/fedmkt/tasks.h"
#include "distill/kd_terms.h"

namespace tandem {

std::vector<std::string> FedMktClient::Capabilities() const { return {kMutualTask, kOwnEvalTask}; }

Status FedMktClient::Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) {
  if (task.kind == kOwnEvalTask) return EvaluateOwnModel(context_, task, result);
  if (task.kind != kMutualTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(MutualTask mutual, MutualTask::Decode(task.params));
  TANDEM_ASSIGN_OR_RETURN(Gpt * model, OwnModelFor(context_, task, mutual.up.local.seed));
  TANDEM_ASSIGN_OR_RETURN(PublicWindows windows, DecodeWindows(task, context_->public_tokens(),
                                                               model->config().context));
  TANDEM_ASSIGN_OR_RETURN(TopKTargets targets,
                          DecodeTopKFor(task, windows, model->config().vocab,
                                        mutual.kd.options.temperature));
  // KD batches walk the windows in order, at most a training batch of them at a time.
  const int kd_batch = std::min(mutual.up.local.train.batch, windows.count());
  TopKDistillTerm kd(windows, std::move(targets), mutual.kd.options, kd_batch,
                     static_cast<float>(mutual.kd.weight));
  OwnDataTraining training;
  training.params = mutual.up.local;
  training.round = round;
  training.extra = {&kd};
  std::vector<float> start;
  TANDEM_ASSIGN_OR_RETURN(TrainReport report, TrainOnOwnData(*context_, model, training, &start));
  result->tensors.clear();
  if (mutual.upload) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<float> upload,
                            PredictUpload(*model, windows, mutual.up.temperature,
                                          mutual.up.ensemble, mutual.up.vote_top_k));
    result->tensors.push_back(wire::Tensor::Float32(EnsembleTensorName(mutual.up.ensemble),
                                                    {upload.size()}, upload));
  }
  result->weight = 1.0;
  ReportTraining(report, result);
  return Status::Ok();
}

}  // namespace tandem

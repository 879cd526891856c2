// The client half of submodel; see algorithms/submodel/client.h.
#include "algorithms/submodel/client.h"

#include "algorithms/common/client_training.h"
#include "algorithms/common/task_parts.h"
#include "algorithms/submodel/tasks.h"
#include "prune/extract.h"

namespace tandem {

std::vector<std::string> SubmodelClient::Capabilities() const { return {kSubmodelTrainTask}; }

Status SubmodelClient::Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) {
  if (task.kind != kSubmodelTrainTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(SubmodelTrainTask train, SubmodelTrainTask::Decode(task));
  if (!(train.map.parent == context_->model_config())) {
    return Status::InvalidArgument("sub.map is cut from " + train.map.parent.ToString() +
                                   ", this client's model is " + context_->model_config().ToString());
  }
  TANDEM_ASSIGN_OR_RETURN(Alignment alignment, Alignment::Create(train.map));
  const ModelConfig child_config = alignment.child_config();
  // One model per sub-model shape: a client keeps its tier, so this is made once.
  Gpt& child = context_->model("submodel " + child_config.ToString(),
                               [&] { return std::make_unique<Gpt>(child_config); });
  TANDEM_RETURN_IF_ERROR(DecodeWeightsInto(task, &child));
  OwnDataTraining training;
  training.params = train.local;
  training.round = round;
  std::vector<float> start;
  TANDEM_ASSIGN_OR_RETURN(TrainReport report, TrainOnOwnData(*context_, &child, training, &start));
  UploadDelta(*context_, child.params(), start, result);
  if (train.scatter) {
    // The delta in the global model's coordinates, 0 where this sub-model does not reach; every
    // client counts once, so the coordinator can divide each coordinate by the clients covering it.
    const std::vector<float> delta = result->tensors[0].ToFloat32();
    std::vector<float> lifted(alignment.parent_size(), 0.0f);
    const std::vector<size_t>& at = alignment.parent_offsets();
    for (size_t i = 0; i < delta.size(); ++i) lifted[at[i]] = delta[i];
    result->tensors = {wire::Tensor::Float32("delta", {lifted.size()}, lifted)};
    result->weight = 1.0;
  }
  ReportTraining(report, result);
  return Status::Ok();
}

}  // namespace tandem

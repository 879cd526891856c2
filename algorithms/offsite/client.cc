// The client half of offsite and fedbiot; see algorithms/offsite/client.h.
#include "algorithms/offsite/client.h"

#include "algorithms/common/client_training.h"
#include "algorithms/common/task_parts.h"
#include "algorithms/offsite/emulator.h"
#include "algorithms/offsite/tasks.h"

namespace tandem {

std::vector<std::string> OffsiteClient::Capabilities() const { return {kOffsiteTrainTask}; }

Status OffsiteClient::Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) {
  if (task.kind != kOffsiteTrainTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(OffsiteTrainTask train, OffsiteTrainTask::Decode(task.params));
  if (!(train.emulator.parent == context_->model_config())) {
    return Status::InvalidArgument("the emulator is cut from " + train.emulator.parent.ToString() +
                                   ", this client's model is " +
                                   context_->model_config().ToString());
  }
  const ModelConfig config = train.emulator.ChildConfig();
  Gpt& emulator = context_->model("emulator " + config.ToString(),
                                  [&] { return std::make_unique<Gpt>(config); });
  const wire::Tensor* weights = FindTensor(task.tensors, "emulator");
  if (weights != nullptr) {
    const size_t n = emulator.params().size();
    if (weights->dtype != wire::DType::kFloat32 || weights->shape.size() != 1 ||
        weights->shape[0] != n) {
      return Status::InvalidArgument("expected a tensor 'emulator' of f32[" + std::to_string(n) +
                                     "]");
    }
  } else if (emulator_version_ != train.emulator_version) {
    return Status::FailedPrecondition(
        "the task is for emulator version " + std::to_string(train.emulator_version) +
        " without its weights, and this client holds " +
        (emulator_version_ < 0 ? std::string("none") : std::to_string(emulator_version_)) +
        " (the coordinator sends it again next round)");
  }
  // With LoRA the adapters are factors on the adapter blocks, which the emulator carries from
  // its first such task on; their own weights stay the emulator's.
  std::optional<LoraConfig> lora;
  if (train.lora) {
    lora = AdapterLora(*train.lora, config.n_layer, train.bottom, train.top);
    if (emulator.has_lora() && !(emulator.lora_config() == *lora)) {
      return Status::InvalidArgument("the task's LoRA adapters (rank, alpha, targets or blocks) "
                                     "differ from those this client's emulator carries");
    }
  } else if (emulator.has_lora()) {
    return Status::InvalidArgument("the task asks for full adapters, and this client's emulator "
                                   "carries LoRA adapters from an earlier task");
  }
  const std::vector<ParamRange> ranges = AdapterRanges(emulator, train.bottom, train.top);
  const size_t adapter_size = lora ? LoraSize(emulator.weights(), *lora) : RangesSize(ranges);
  const wire::Tensor* adapters = FindTensor(task.tensors, "adapters");
  if (adapters == nullptr || adapters->dtype != wire::DType::kFloat32 ||
      adapters->shape.size() != 1 || adapters->shape[0] != adapter_size) {
    return Status::InvalidArgument("expected a tensor 'adapters' of f32[" +
                                   std::to_string(adapter_size) + "]" +
                                   (lora ? " (LoRA factors)" : ""));
  }
  // Everything is checked; only now does the client's emulator change.
  if (weights != nullptr) {
    weights->CopyTo(emulator.params());
    emulator_version_ = train.emulator_version;
  }
  if (lora) {
    if (!emulator.has_lora()) TANDEM_RETURN_IF_ERROR(emulator.EnableLora(*lora, 0));
    adapters->CopyTo(emulator.lora_params());
  } else {
    ScatterRanges(adapters->ToFloat32(), ranges, emulator.params());
  }

  OwnDataTraining training;
  training.params = train.local;
  training.round = round;
  training.trainable = lora ? Trainable::AdaptersOnly()
                            : Trainable::Blocks(config, emulator.layout(), train.bottom, train.top);
  training.proximal_mu = train.proximal_mu;
  std::vector<float> start;
  TANDEM_ASSIGN_OR_RETURN(TrainReport report,
                          TrainOnOwnData(*context_, &emulator, training, &start));
  if (lora) {
    UploadDelta(*context_, emulator.lora_params(), start, result);
    ReportTraining(report, result);
    return Status::Ok();
  }
  std::vector<float> delta = GatherRanges(emulator.params(), ranges);
  const std::vector<float> sent = GatherRanges(start, ranges);
  for (size_t i = 0; i < delta.size(); ++i) delta[i] -= sent[i];
  result->tensors = {wire::Tensor::Float32("delta", {delta.size()}, delta)};
  result->weight = static_cast<double>(context_->data().train.size());
  ReportTraining(report, result);
  return Status::Ok();
}

}  // namespace tandem

// Shared parts of tasks; see algorithms/common/task_parts.h.
#include "algorithms/common/task_parts.h"

#include <algorithm>

#include "client/task_params.h"

namespace tandem {

const wire::Tensor* FindTensor(const std::vector<wire::Tensor>& tensors,
                               const std::string& name) {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

void EncodeWeights(const Gpt& model, wire::Params* params, std::vector<wire::Tensor>* tensors) {
  (*params)["model"] = model.config().ToString();
  const auto p = model.params();
  tensors->push_back(wire::Tensor::Float32("params", {p.size()}, p));
}

Status CheckModelName(const wire::Params& params, const ModelConfig& model) {
  auto it = params.find("model");
  if (it == params.end() || !std::holds_alternative<std::string>(it->second) ||
      std::get<std::string>(it->second) != model.ToString()) {
    return Status::InvalidArgument("task is for another model than this client's " +
                                   model.ToString());
  }
  return Status::Ok();
}

Status DecodeWeightsInto(const wire::TaskAssign& task, Gpt* model) {
  TANDEM_RETURN_IF_ERROR(CheckModelName(task.params, model->config()));
  const size_t n = model->params().size();
  const wire::Tensor* params = FindTensor(task.tensors, "params");
  if (params == nullptr || params->dtype != wire::DType::kFloat32 || params->shape.size() != 1 ||
      params->shape[0] != n) {
    return Status::InvalidArgument("expected a tensor 'params' of f32[" + std::to_string(n) + "]");
  }
  params->CopyTo(model->params());
  return Status::Ok();
}

void EncodeWindows(const std::vector<uint32_t>& starts, std::optional<int> context,
                   wire::Params* params, std::vector<wire::Tensor>* tensors) {
  if (context) (*params)["kd.context"] = static_cast<int64_t>(*context);
  tensors->push_back(wire::Tensor::Uint32("kd.windows", {starts.size()}, starts));
}

StatusOr<PublicWindows> DecodeWindows(const wire::TaskAssign& task, const TokenDataset& stream,
                                      int max_context) {
  int context = max_context;
  if (task.params.count("kd.context")) {
    TANDEM_ASSIGN_OR_RETURN(int64_t c, IntParam(task.params, "kd.context", 1, max_context));
    context = static_cast<int>(c);
  }
  const wire::Tensor* windows = FindTensor(task.tensors, "kd.windows");
  if (windows == nullptr || windows->dtype != wire::DType::kUint32) {
    return Status::InvalidArgument("the task needs a u32 tensor 'kd.windows'");
  }
  StatusOr<PublicWindows> out = PublicWindows::Create(stream, windows->ToUint32(), context);
  if (!out.ok()) return out.status().WithContext("kd.windows");
  return out;
}

void EncodeKd(const KdTaskSettings& kd, wire::Params* params) {
  (*params)["kd.alpha"] = static_cast<double>(kd.options.alpha);
  (*params)["kd.temperature"] = static_cast<double>(kd.options.temperature);
  (*params)["kd.weight"] = kd.weight;
}

StatusOr<KdTaskSettings> DecodeKd(const wire::Params& p) {
  KdTaskSettings kd;
  TANDEM_ASSIGN_OR_RETURN(double alpha, RealParam(p, "kd.alpha", 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(double temperature, RealParam(p, "kd.temperature", 1e-3, 1e3));
  TANDEM_ASSIGN_OR_RETURN(kd.weight, RealParam(p, "kd.weight", 0.0, 1e3));
  kd.options.alpha = static_cast<float>(alpha);
  kd.options.temperature = static_cast<float>(temperature);
  return kd;
}

void EncodeTopK(const TopKTargets& targets, std::vector<wire::Tensor>* tensors) {
  const TopKWire wire = EncodeTopK(targets);
  tensors->push_back(wire::Tensor::Uint32("kd.topk_words", {wire.words.size()}, wire.words));
  tensors->push_back(wire::Tensor::Float32("kd.topk_values", {wire.values.size()}, wire.values));
}

StatusOr<TopKTargets> DecodeTopKFor(const wire::TaskAssign& task, const PublicWindows& windows,
                                    int vocab, float temperature) {
  const wire::Tensor* words = FindTensor(task.tensors, "kd.topk_words");
  const wire::Tensor* values = FindTensor(task.tensors, "kd.topk_values");
  if (words == nullptr || words->dtype != wire::DType::kUint32 || values == nullptr ||
      values->dtype != wire::DType::kFloat32) {
    return Status::InvalidArgument("the task needs u32 'kd.topk_words' and f32 'kd.topk_values'");
  }
  TANDEM_ASSIGN_OR_RETURN(TopKTargets t, DecodeTopK(words->ToUint32(), values->ToFloat32()));
  const int rows = windows.count() * windows.context();
  if (t.rows != rows || t.vocab != vocab || t.temperature != temperature) {
    return Status::InvalidArgument("kd targets hold " + std::to_string(t.rows) +
                                   " rows of vocabulary " + std::to_string(t.vocab) + " at T " +
                                   std::to_string(t.temperature) + "; expected " +
                                   std::to_string(rows) + " rows of " + std::to_string(vocab) +
                                   " at the task's kd.temperature");
  }
  return t;
}

void EncodeLoraConfig(const LoraConfig& lora, wire::Params* params) {
  std::string targets;
  for (const auto& t : lora.targets) targets += (targets.empty() ? "" : ",") + t;
  (*params)["lora.rank"] = static_cast<int64_t>(lora.rank);
  (*params)["lora.alpha"] = static_cast<double>(lora.alpha);
  (*params)["lora.targets"] = targets;
}

StatusOr<LoraConfig> DecodeLoraConfig(const wire::Params& p) {
  LoraConfig lora;
  TANDEM_ASSIGN_OR_RETURN(int64_t rank, IntParam(p, "lora.rank", 1, 4096));
  TANDEM_ASSIGN_OR_RETURN(double alpha, RealParam(p, "lora.alpha", 1e-6, 1e6));
  TANDEM_ASSIGN_OR_RETURN(std::string targets, StringParam(p, "lora.targets"));
  lora.rank = static_cast<int>(rank);
  lora.alpha = static_cast<float>(alpha);
  lora.targets.clear();
  for (size_t at = 0; at <= targets.size();) {
    const size_t comma = std::min(targets.find(',', at), targets.size());
    lora.targets.push_back(targets.substr(at, comma - at));
    at = comma + 1;
  }
  TANDEM_RETURN_IF_ERROR(lora.Validate());
  return lora;
}

Status DecodeAdaptersInto(const wire::TaskAssign& task, Gpt* model) {
  TANDEM_ASSIGN_OR_RETURN(LoraConfig lora, DecodeLoraConfig(task.params));
  if (!model->has_lora()) {
    TANDEM_RETURN_IF_ERROR(model->EnableLora(lora, 0));
  } else if (model->lora_config().rank != lora.rank ||
             model->lora_config().alpha != lora.alpha ||
             model->lora_config().targets != lora.targets) {
    return Status::InvalidArgument("the task's LoRA configuration changed during the run");
  }
  const wire::Tensor* adapters = FindTensor(task.tensors, "lora");
  const size_t n = model->lora_params().size();
  if (adapters == nullptr || adapters->dtype != wire::DType::kFloat32 ||
      adapters->NumElements() != n) {
    return Status::InvalidArgument("expected a tensor 'lora' of f32[" + std::to_string(n) + "]");
  }
  adapters->CopyTo(model->lora_params());
  return Status::Ok();
}

StatusOr<int64_t> DecodeEvalTokens(const wire::Params& params) {
  return IntParam(params, "eval_tokens", 0, INT64_MAX);
}

}  // namespace tandem

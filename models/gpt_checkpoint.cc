#include "models/gpt_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "models/safetensors.h"

namespace tandem {
namespace {

StatusOr<int> MetaInt(const std::map<std::string, std::string>& meta, const std::string& key,
                      const std::string& path) {
  auto it = meta.find(key);
  if (it == meta.end()) return Status::Corruption(path + ": metadata lacks '" + key + "'");
  try {
    size_t used = 0;
    const int v = std::stoi(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("trailing");
    return v;
  } catch (const std::exception&) {
    return Status::Corruption(path + ": metadata '" + key + "' is not an integer: '" +
                              it->second + "'");
  }
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

Status CopyTensors(const SafetensorsFile& file, const ParamLayout& layout, float* dest,
                   const std::string& path, const std::string& prefix) {
  for (const auto& spec : layout.tensors()) {
    auto it = file.tensors.find(prefix + spec.name);
    if (it == file.tensors.end()) {
      return Status::Corruption(path + ": tensor '" + spec.name + "' is missing");
    }
    if (it->second.shape != spec.shape) {
      return Status::Corruption(path + ": tensor '" + spec.name + "' has shape " +
                                ShapeString(it->second.shape) + ", expected " +
                                ShapeString(spec.shape));
    }
    TANDEM_ASSIGN_OR_RETURN(std::vector<float> values, it->second.ToFloat());
    std::memcpy(dest + spec.offset, values.data(), spec.size * sizeof(float));
  }
  return Status::Ok();
}

}  // namespace

Status SaveGpt(const std::string& path, const Gpt& model,
               const std::map<std::string, std::string>& extra_metadata) {
  // With merged adapters the base weights hold base + adapter: save the base alone.
  std::unique_ptr<Gpt> unmerged;
  const Gpt* source = &model;
  if (model.lora_merged()) {
    unmerged = std::make_unique<Gpt>(model);
    unmerged->UnmergeLora();
    source = unmerged.get();
  }
  const ModelConfig& c = model.config();
  std::map<std::string, std::string> meta = extra_metadata;
  meta["format"] = "tandem-gpt2";
  meta["vocab_size"] = std::to_string(c.vocab);
  meta["n_positions"] = std::to_string(c.context);
  meta["n_embd"] = std::to_string(c.d_model);
  meta["n_layer"] = std::to_string(c.n_layer);
  meta["n_head"] = std::to_string(c.n_head);
  std::vector<TensorToWrite> tensors;
  for (const auto& spec : source->layout().tensors()) {
    tensors.push_back({spec.name, DType::kF32, spec.shape, source->params().data() + spec.offset});
  }
  return WriteSafetensors(path, tensors, meta);
}

StatusOr<std::unique_ptr<Gpt>> LoadGpt(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  // Hugging Face GPT2LMHeadModel files prefix the body with "transformer.".
  std::string prefix;
  if (file.tensors.count("wte.weight") == 0 && file.tensors.count("transformer.wte.weight") > 0) {
    prefix = "transformer.";
  }
  ModelConfig config;
  if (file.metadata.count("n_embd") > 0) {
    TANDEM_ASSIGN_OR_RETURN(config.vocab, MetaInt(file.metadata, "vocab_size", path));
    TANDEM_ASSIGN_OR_RETURN(config.context, MetaInt(file.metadata, "n_positions", path));
    TANDEM_ASSIGN_OR_RETURN(config.d_model, MetaInt(file.metadata, "n_embd", path));
    TANDEM_ASSIGN_OR_RETURN(config.n_layer, MetaInt(file.metadata, "n_layer", path));
    TANDEM_ASSIGN_OR_RETURN(config.n_head, MetaInt(file.metadata, "n_head", path));
  } else {
    auto wte = file.tensors.find(prefix + "wte.weight");
    auto wpe = file.tensors.find(prefix + "wpe.weight");
    if (wte == file.tensors.end() || wpe == file.tensors.end() || wte->second.shape.size() != 2 ||
        wpe->second.shape.size() != 2) {
      return Status::Corruption(path + ": not a GPT-2 checkpoint (no 2-D wte.weight and "
                                       "wpe.weight)");
    }
    config.vocab = static_cast<int>(wte->second.shape[0]);
    config.d_model = static_cast<int>(wte->second.shape[1]);
    config.context = static_cast<int>(wpe->second.shape[0]);
    config.n_layer = 0;
    while (file.tensors.count(prefix + "h." + std::to_string(config.n_layer) + ".ln_1.weight")) {
      ++config.n_layer;
    }
    config.n_head = std::max(1, config.d_model / 64);
  }
  Status valid = config.Validate();
  if (!valid.ok()) return valid.WithContext(path);
  // Every parameter must come from the file, so a model larger than the file's tensors is
  // corrupt: refuse it before allocating (a forged header must not make us allocate gigabytes).
  const double C = config.d_model, L = config.n_layer;
  const double needed = config.vocab * C + config.context * C + L * (12 * C * C + 13 * C) + 2 * C;
  double available = 0;
  for (const auto& [name, t] : file.tensors) available += static_cast<double>(t.elements());
  // A slightly short file (a missing bias, say) is reported below by the tensor it lacks.
  if (needed > 2 * available + (1 << 20)) {
    return Status::Corruption(path + ": the model its header describes (" + config.ToString() +
                              ") needs more parameters than the file holds");
  }
  auto model = std::make_unique<Gpt>(config);
  TANDEM_RETURN_IF_ERROR(CopyTensors(file, model->layout(), model->params().data(), path, prefix));
  return model;
}

Status SaveLora(const std::string& path, const Gpt& model) {
  if (!model.has_lora()) return Status::FailedPrecondition("model has no LoRA adapters to save");
  const LoraConfig& lora = model.lora_config();
  std::map<std::string, std::string> meta;
  meta["format"] = "tandem-lora";
  meta["lora_rank"] = std::to_string(lora.rank);
  std::ostringstream alpha;
  alpha.precision(9);
  alpha << lora.alpha;
  meta["lora_alpha"] = alpha.str();
  std::string targets;
  for (const auto& t : lora.targets) targets += (targets.empty() ? "" : ",") + t;
  meta["lora_targets"] = targets;
  std::vector<TensorToWrite> tensors;
  for (const auto& spec : model.lora_layout().tensors()) {
    tensors.push_back({spec.name, DType::kF32, spec.shape,
                       model.lora_params().data() + spec.offset});
  }
  return WriteSafetensors(path, tensors, meta);
}

Status LoadLora(const std::string& path, Gpt* model) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  LoraConfig lora;
  TANDEM_ASSIGN_OR_RETURN(lora.rank, MetaInt(file.metadata, "lora_rank", path));
  auto alpha = file.metadata.find("lora_alpha");
  auto targets = file.metadata.find("lora_targets");
  if (alpha == file.metadata.end() || targets == file.metadata.end()) {
    return Status::Corruption(path + ": metadata lacks lora_alpha or lora_targets");
  }
  try {
    lora.alpha = std::stof(alpha->second);
  } catch (const std::exception&) {
    return Status::Corruption(path + ": lora_alpha is not a number");
  }
  lora.targets.clear();
  std::stringstream ss(targets->second);
  for (std::string t; std::getline(ss, t, ',');) lora.targets.push_back(t);
  TANDEM_RETURN_IF_ERROR(lora.Validate().WithContext(path));
  if (model->lora_merged()) {
    return Status::FailedPrecondition(path + ": cannot load adapters into a model whose adapters "
                                             "are merged; unmerge first");
  }
  if (model->has_lora()) {
    auto sorted = [](std::vector<std::string> v) {
      std::sort(v.begin(), v.end());
      return v;
    };
    const LoraConfig& have = model->lora_config();
    if (have.rank != lora.rank || have.alpha != lora.alpha ||
        sorted(have.targets) != sorted(lora.targets)) {
      return Status::InvalidArgument(path + ": adapters (rank, alpha or targets) do not match "
                                            "the model's LoRA config");
    }
    // Load into a copy first: a file that fails part-way leaves the model as it was.
    Gpt staged(*model);
    TANDEM_RETURN_IF_ERROR(
        CopyTensors(file, staged.lora_layout(), staged.lora_params().data(), path, ""));
    std::copy(staged.lora_params().begin(), staged.lora_params().end(),
              model->lora_params().begin());
    return Status::Ok();
  }
  Gpt staged(*model);
  TANDEM_RETURN_IF_ERROR(staged.EnableLora(lora, 0).WithContext(path));
  TANDEM_RETURN_IF_ERROR(
      CopyTensors(file, staged.lora_layout(), staged.lora_params().data(), path, ""));
  TANDEM_RETURN_IF_ERROR(model->EnableLora(lora, 0));
  std::copy(staged.lora_params().begin(), staged.lora_params().end(),
            model->lora_params().begin());
  return Status::Ok();
}

}  // namespace tandem

#include "models/gpt_checkpoint.h"

#include <algorithm>
#include <cmath>
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

// A comma-separated list of integers ("4,3,4").
StatusOr<std::vector<int>> MetaIntList(const std::map<std::string, std::string>& meta,
                                       const std::string& key, const std::string& path) {
  std::vector<int> out;
  auto it = meta.find(key);
  if (it == meta.end()) return out;
  std::stringstream ss(it->second);
  for (std::string item; std::getline(ss, item, ',');) {
    std::map<std::string, std::string> one = {{key, item}};
    TANDEM_ASSIGN_OR_RETURN(int v, MetaInt(one, key, path));
    out.push_back(v);
  }
  return out;
}

std::string IntList(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// Parameters of a model of shape `c`, in double so a forged header cannot overflow it.
double ParameterCount(const ModelConfig& c) {
  const double C = c.d_model;
  double n = (static_cast<double>(c.vocab) + c.context + 2) * C;
  for (int l = 0; l < c.n_layer; ++l) {
    const double A = c.attn_width(l), M = c.mlp_width(l);
    n += 4 * C + C * 3 * A + 3 * A + A * C + C + C * M + M + M * C + C;
  }
  return n;
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
    // A NaN or infinity would turn every loss and every answer of the model into NaN.
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) {
        return Status::Corruption(path + ": tensor '" + prefix + spec.name + "' holds " +
                                  (std::isnan(values[i]) ? "NaN" : "an infinity") +
                                  " (element " + std::to_string(i) + " of " +
                                  std::to_string(values.size()) +
                                  "): the weights are not finite, so the run that wrote them "
                                  "diverged or the file is damaged");
      }
    }
    std::memcpy(dest + spec.offset, values.data(), spec.size * sizeof(float));
  }
  return Status::Ok();
}

}  // namespace

Status SaveGpt(const std::string& path, const GptWeights& weights,
               const std::map<std::string, std::string>& extra_metadata) {
  // With merged adapters the base weights hold base + adapter: save the base alone.
  std::unique_ptr<GptWeights> unmerged;
  const GptWeights* source = &weights;
  if (weights.lora_merged()) {
    unmerged = std::make_unique<GptWeights>(weights);
    unmerged->UnmergeLora();
    source = unmerged.get();
  }
  const ModelConfig& c = weights.config();
  std::map<std::string, std::string> meta = extra_metadata;
  meta["format"] = "tandem-gpt2";
  meta["vocab_size"] = std::to_string(c.vocab);
  meta["n_positions"] = std::to_string(c.context);
  meta["n_embd"] = std::to_string(c.d_model);
  meta["n_layer"] = std::to_string(c.n_layer);
  meta["n_head"] = std::to_string(c.n_head);
  // Only shapes other than GPT-2's carry these keys, so GPT-2-shaped files stay as they were.
  if (c.mlp_width() != 4 * c.d_model) meta["n_inner"] = std::to_string(c.mlp_width());
  if (c.d_model % c.n_head != 0 || c.head_dim() != c.d_model / c.n_head) {
    meta["head_dim"] = std::to_string(c.head_dim());
  }
  if (!c.layer_n_head.empty()) meta["layer_n_head"] = IntList(c.layer_n_head);
  if (!c.layer_d_mlp.empty()) meta["layer_n_inner"] = IntList(c.layer_d_mlp);
  std::vector<TensorToWrite> tensors;
  for (const auto& spec : source->layout().tensors()) {
    tensors.push_back({spec.name, DType::kF32, spec.shape, source->params().data() + spec.offset});
  }
  return WriteSafetensors(path, tensors, meta);
}

Status SaveGpt(const std::string& path, const Gpt& model,
               const std::map<std::string, std::string>& extra_metadata) {
  return SaveGpt(path, model.weights(), extra_metadata);
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
    if (file.metadata.count("n_inner") > 0) {
      TANDEM_ASSIGN_OR_RETURN(config.d_mlp, MetaInt(file.metadata, "n_inner", path));
    }
    if (file.metadata.count("head_dim") > 0) {
      TANDEM_ASSIGN_OR_RETURN(config.d_head, MetaInt(file.metadata, "head_dim", path));
    }
    TANDEM_ASSIGN_OR_RETURN(config.layer_n_head, MetaIntList(file.metadata, "layer_n_head", path));
    TANDEM_ASSIGN_OR_RETURN(config.layer_d_mlp, MetaIntList(file.metadata, "layer_n_inner", path));
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
    // MLP widths from the c_fc weights (Hugging Face's n_inner, per block for pruned models).
    std::vector<int> widths;
    for (int l = 0; l < config.n_layer; ++l) {
      auto fc = file.tensors.find(prefix + "h." + std::to_string(l) + ".mlp.c_fc.weight");
      if (fc == file.tensors.end() || fc->second.shape.size() != 2) break;
      widths.push_back(static_cast<int>(fc->second.shape[1]));
    }
    if (!widths.empty() && static_cast<int>(widths.size()) == config.n_layer) {
      config.d_mlp = widths[0];
      if (std::count(widths.begin(), widths.end(), widths[0]) != config.n_layer) {
        config.layer_d_mlp = widths;
      }
    }
  }
  Status valid = config.Validate();
  if (!valid.ok()) return valid.WithContext(path);
  // Every parameter must come from the file, so a model larger than the file's tensors is
  // corrupt: refuse it before allocating (a forged header must not make us allocate gigabytes).
  // A block is 12 tensors: a header claiming more blocks than the file could hold is corrupt
  // (and is refused before anything is sized by it).
  if (static_cast<double>(config.n_layer) * 12 > static_cast<double>(file.tensors.size())) {
    return Status::Corruption(path + ": the model its header describes (" + config.ToString() +
                              ") needs more parameters than the file holds (" +
                              std::to_string(file.tensors.size()) + " tensors)");
  }
  const double needed = ParameterCount(config);
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
  // Only adapters on some blocks carry the key, so files of adapters on every block stay as they
  // were.
  if (!lora.layers.empty()) meta["lora_layers"] = IntList(lora.layers);
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
  TANDEM_ASSIGN_OR_RETURN(lora.layers, MetaIntList(file.metadata, "lora_layers", path));
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
        sorted(have.targets) != sorted(lora.targets) || have.layers != lora.layers) {
      return Status::InvalidArgument(path + ": adapters (rank, alpha, targets or layers) do not "
                                            "match "
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

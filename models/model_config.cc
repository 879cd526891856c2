#include "models/model_config.h"

#include <map>

#include "core/config.h"

namespace tandem {
namespace {

const std::map<std::string, ModelConfig>& Presets() {
  static const std::map<std::string, ModelConfig> presets = {
      // name         vocab context d_model n_layer n_head
      {"slm-micro", {256, 64, 64, 2, 2}},  // for fast tests
      {"slm-tiny", {256, 128, 128, 4, 4}},
      {"slm-small", {256, 128, 192, 4, 6}},
      {"llm-small", {256, 128, 384, 6, 6}},
      {"llm-medium", {256, 256, 512, 8, 8}},
  };
  return presets;
}

}  // namespace

Status ModelConfig::Validate() const {
  if (vocab < 2 || vocab > (1 << 20)) {
    return Status::InvalidArgument("model vocab must be in [2, 1048576], got " +
                                   std::to_string(vocab));
  }
  if (context < 1 || context > 65536) {
    return Status::InvalidArgument("model context must be in [1, 65536], got " +
                                   std::to_string(context));
  }
  if (d_model < 1 || n_layer < 1 || n_head < 1) {
    return Status::InvalidArgument("model d_model, n_layer and n_head must be >= 1");
  }
  if (d_model % n_head != 0) {
    return Status::InvalidArgument("model d_model (" + std::to_string(d_model) +
                                   ") must be divisible by n_head (" + std::to_string(n_head) +
                                   ")");
  }
  return Status::Ok();
}

std::string ModelConfig::ToString() const {
  return "d_model=" + std::to_string(d_model) + " n_layer=" + std::to_string(n_layer) +
         " n_head=" + std::to_string(n_head) + " context=" + std::to_string(context) +
         " vocab=" + std::to_string(vocab);
}

StatusOr<ModelConfig> ModelPreset(const std::string& name) {
  auto it = Presets().find(name);
  if (it == Presets().end()) {
    std::string names;
    for (const auto& n : ModelPresetNames()) names += (names.empty() ? "" : ", ") + n;
    return Status::NotFound("unknown model preset '" + name + "' (known: " + names + ")");
  }
  return it->second;
}

std::vector<std::string> ModelPresetNames() {
  std::vector<std::string> names;
  for (const auto& [name, _] : Presets()) names.push_back(name);
  return names;
}

StatusOr<ModelConfig> ModelConfigFromConfig(const Config& config, const std::string& prefix) {
  TANDEM_ASSIGN_OR_RETURN(std::string preset, config.GetString(prefix + ".preset", "slm-tiny"));
  auto base = ModelPreset(preset);
  if (!base.ok()) return base.status().WithContext(config.source() + ": " + prefix + ".preset");
  ModelConfig m = *base;
  TANDEM_ASSIGN_OR_RETURN(int64_t d, config.GetInt(prefix + ".d_model", m.d_model, 1, 8192));
  TANDEM_ASSIGN_OR_RETURN(int64_t l, config.GetInt(prefix + ".n_layer", m.n_layer, 1, 256));
  TANDEM_ASSIGN_OR_RETURN(int64_t h, config.GetInt(prefix + ".n_head", m.n_head, 1, 256));
  TANDEM_ASSIGN_OR_RETURN(int64_t c, config.GetInt(prefix + ".context", m.context, 1, 65536));
  TANDEM_ASSIGN_OR_RETURN(int64_t v, config.GetInt(prefix + ".vocab", m.vocab, 2, 1 << 20));
  m.d_model = static_cast<int>(d);
  m.n_layer = static_cast<int>(l);
  m.n_head = static_cast<int>(h);
  m.context = static_cast<int>(c);
  m.vocab = static_cast<int>(v);
  Status s = m.Validate();
  if (!s.ok()) return s.WithContext(config.source() + ": " + prefix);
  return m;
}

StatusOr<std::vector<ModelConfig>> ClientModelsFromConfig(const Config& config) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> names,
                          config.GetStringList("federation.client_models", {}));
  std::vector<ModelConfig> out;
  for (const auto& name : names) {
    StatusOr<ModelConfig> m = ModelPreset(name);
    if (!m.ok()) {
      return Status::InvalidArgument(config.source() + ": federation.client_models: " +
                                     m.status().message());
    }
    out.push_back(*m);
  }
  return out;
}

}  // namespace tandem

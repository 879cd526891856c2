#include "models/model_config.h"

#include <algorithm>
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

int ModelConfig::max_heads() const {
  int m = n_head;
  if (!layer_n_head.empty()) m = *std::max_element(layer_n_head.begin(), layer_n_head.end());
  return m;
}

int ModelConfig::max_mlp_width() const {
  int m = mlp_width();
  if (!layer_d_mlp.empty()) m = *std::max_element(layer_d_mlp.begin(), layer_d_mlp.end());
  return m;
}

bool ModelConfig::is_gpt2_shape() const {
  if (n_head < 1 || d_model % n_head != 0 || head_dim() != d_model / n_head ||
      mlp_width() != 4 * d_model) {
    return false;
  }
  for (int l = 0; l < n_layer; ++l) {
    if (heads(l) != n_head || mlp_width(l) != 4 * d_model) return false;
  }
  return true;
}

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
  if (d_mlp < 0 || d_head < 0) {
    return Status::InvalidArgument("model d_mlp and d_head must be >= 0 (0: the GPT-2 default)");
  }
  if (d_head == 0 && d_model % n_head != 0) {
    return Status::InvalidArgument("model d_model (" + std::to_string(d_model) +
                                   ") must be divisible by n_head (" + std::to_string(n_head) +
                                   ") unless d_head is set");
  }
  auto check_layers = [&](const std::vector<int>& v, const char* key) -> Status {
    if (v.empty()) return Status::Ok();
    if (static_cast<int>(v.size()) != n_layer) {
      return Status::InvalidArgument(std::string("model ") + key + " has " +
                                     std::to_string(v.size()) + " entries, expected n_layer = " +
                                     std::to_string(n_layer));
    }
    for (int x : v) {
      if (x < 1) return Status::InvalidArgument(std::string("model ") + key + " entries must be >= 1");
    }
    return Status::Ok();
  };
  TANDEM_RETURN_IF_ERROR(check_layers(layer_n_head, "layer_n_head"));
  TANDEM_RETURN_IF_ERROR(check_layers(layer_d_mlp, "layer_d_mlp"));
  return Status::Ok();
}

namespace {

std::string IntList(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::string ModelConfig::ToString() const {
  std::string s = "d_model=" + std::to_string(d_model) + " n_layer=" + std::to_string(n_layer) +
                  " n_head=" + std::to_string(n_head) + " context=" + std::to_string(context) +
                  " vocab=" + std::to_string(vocab);
  if (mlp_width() != 4 * d_model) s += " d_mlp=" + std::to_string(mlp_width());
  if (n_head < 1 || d_model % n_head != 0 || head_dim() != d_model / n_head) {
    s += " d_head=" + std::to_string(head_dim());
  }
  if (!layer_n_head.empty()) s += " layer_n_head=" + IntList(layer_n_head);
  if (!layer_d_mlp.empty()) s += " layer_d_mlp=" + IntList(layer_d_mlp);
  return s;
}

bool ModelConfig::operator==(const ModelConfig& o) const {
  if (vocab != o.vocab || context != o.context || d_model != o.d_model || n_layer != o.n_layer ||
      n_head != o.n_head || head_dim() != o.head_dim()) {
    return false;
  }
  for (int l = 0; l < n_layer; ++l) {
    if (heads(l) != o.heads(l) || mlp_width(l) != o.mlp_width(l)) return false;
  }
  return true;
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
  TANDEM_ASSIGN_OR_RETURN(int64_t mlp, config.GetInt(prefix + ".d_mlp", m.d_mlp, 0, 65536));
  TANDEM_ASSIGN_OR_RETURN(int64_t hd, config.GetInt(prefix + ".d_head", m.d_head, 0, 8192));
  TANDEM_ASSIGN_OR_RETURN(int64_t c, config.GetInt(prefix + ".context", m.context, 1, 65536));
  TANDEM_ASSIGN_OR_RETURN(int64_t v, config.GetInt(prefix + ".vocab", m.vocab, 2, 1 << 20));
  TANDEM_ASSIGN_OR_RETURN(std::vector<int64_t> layer_heads,
                          config.GetIntList(prefix + ".layer_n_head", {}, 1, 256));
  TANDEM_ASSIGN_OR_RETURN(std::vector<int64_t> layer_mlp,
                          config.GetIntList(prefix + ".layer_d_mlp", {}, 1, 65536));
  m.d_model = static_cast<int>(d);
  m.n_layer = static_cast<int>(l);
  m.n_head = static_cast<int>(h);
  m.d_mlp = static_cast<int>(mlp);
  m.d_head = static_cast<int>(hd);
  m.context = static_cast<int>(c);
  m.vocab = static_cast<int>(v);
  m.layer_n_head.assign(layer_heads.begin(), layer_heads.end());
  m.layer_d_mlp.assign(layer_mlp.begin(), layer_mlp.end());
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

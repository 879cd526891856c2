// Shape of a GPT decoder (DESIGN.md "Models") and the named presets.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace tandem {

class Config;

struct ModelConfig {
  int vocab = 256;
  int context = 128;  // maximum sequence length (positions in wpe)
  int d_model = 128;
  int n_layer = 4;
  int n_head = 4;

  int head_dim() const { return d_model / n_head; }
  Status Validate() const;
  std::string ToString() const;
  bool operator==(const ModelConfig&) const = default;
};

// "slm-tiny", "slm-small", "llm-small", ...; NotFound lists the known names.
StatusOr<ModelConfig> ModelPreset(const std::string& name);

// Heterogeneous clients: `federation.client_models`, a list of preset names; client K runs
// client_models[K % size]. Empty when the key is not set (every client runs [model]).
StatusOr<std::vector<ModelConfig>> ClientModelsFromConfig(const Config& config);
std::vector<std::string> ModelPresetNames();

// Reads `<prefix>.preset` and then per-field overrides `<prefix>.d_model`, `.n_layer`, `.n_head`,
// `.context`, `.vocab`; validates the result.
StatusOr<ModelConfig> ModelConfigFromConfig(const Config& config, const std::string& prefix);

}  // namespace tandem

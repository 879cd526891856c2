// Shape of a GPT decoder (DESIGN.md "Models") and the named presets.
//
// A model is uniform (every block has n_head heads of head_dim() and a d_mlp-wide MLP, as GPT-2)
// unless layer_n_head / layer_d_mlp are set: a pruned model keeps its parent's head dimension and
// embedding width while its blocks lose heads and MLP neurons independently, so per block the
// attention width heads(l) * head_dim() need not equal d_model.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace tandem {

class Config;

struct ModelConfig {
  ModelConfig() = default;
  // GPT-2's shape at the given size (how the presets are written).
  ModelConfig(int vocab_, int context_, int d_model_, int n_layer_, int n_head_)
      : vocab(vocab_), context(context_), d_model(d_model_), n_layer(n_layer_), n_head(n_head_) {}

  int vocab = 256;
  int context = 128;  // maximum sequence length (positions in wpe)
  int d_model = 128;
  int n_layer = 4;
  int n_head = 4;
  int d_mlp = 0;   // MLP hidden width; 0 means 4 * d_model (GPT-2)
  int d_head = 0;  // dimension of one attention head; 0 means d_model / n_head
  // Per-block head counts and MLP widths (one entry per block); empty means n_head and
  // mlp_width() in every block.
  std::vector<int> layer_n_head;
  std::vector<int> layer_d_mlp;

  int head_dim() const { return d_head > 0 ? d_head : d_model / n_head; }
  int mlp_width() const { return d_mlp > 0 ? d_mlp : 4 * d_model; }
  // Heads, attention width (of each of q, k and v: heads(l) * head_dim()) and MLP width of
  // block `layer`.
  int heads(int layer) const { return layer_n_head.empty() ? n_head : layer_n_head[layer]; }
  int attn_width(int layer) const { return heads(layer) * head_dim(); }
  int mlp_width(int layer) const {
    return layer_d_mlp.empty() ? mlp_width() : layer_d_mlp[layer];
  }
  // The largest of these over the blocks (sizes scratch buffers).
  int max_heads() const;
  int max_attn_width() const { return max_heads() * head_dim(); }
  int max_mlp_width() const;
  // Every block has GPT-2's shape: n_head heads of d_model / n_head, a 4 * d_model MLP.
  bool is_gpt2_shape() const;

  Status Validate() const;
  // "d_model=128 n_layer=4 n_head=4 context=128 vocab=256", followed by the fields that differ
  // from GPT-2's shape (d_mlp, d_head, layer_n_head, layer_d_mlp) when they do.
  std::string ToString() const;
  // Equal when they describe the same shapes (d_mlp = 0 equals d_mlp = 4 * d_model, an explicit
  // per-layer list equals a uniform one with the same values).
  bool operator==(const ModelConfig& other) const;
};

// "slm-tiny", "slm-small", "llm-small", ...; NotFound lists the known names.
StatusOr<ModelConfig> ModelPreset(const std::string& name);

// Heterogeneous clients: `federation.client_models`, a list of preset names; client K runs
// client_models[K % size]. Empty when the key is not set (every client runs [model]).
StatusOr<std::vector<ModelConfig>> ClientModelsFromConfig(const Config& config);
std::vector<std::string> ModelPresetNames();

// Reads `<prefix>.preset` and then per-field overrides `<prefix>.d_model`, `.n_layer`, `.n_head`,
// `.d_mlp`, `.d_head`, `.layer_n_head`, `.layer_d_mlp`, `.context`, `.vocab`; validates the
// result.
StatusOr<ModelConfig> ModelConfigFromConfig(const Config& config, const std::string& prefix);

}  // namespace tandem

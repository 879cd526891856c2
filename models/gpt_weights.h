// The weights of a GPT decoder (DESIGN.md "Models"): its config, the layout of its tensors, one
// flat parameter buffer, and the optional LoRA adapters (Hu et al. 2021) with their own layout
// and buffer. Tensors are named and shaped as in Hugging Face GPT-2, per block:
//
//   h.{l}.ln_1.weight, .bias          (C)        C = d_model
//   h.{l}.attn.c_attn.weight, .bias   (C,3A) (3A) A = heads(l) * head_dim(): q, k, v
//   h.{l}.attn.c_proj.weight, .bias   (A,C)  (C)
//   h.{l}.ln_2.weight, .bias          (C)
//   h.{l}.mlp.c_fc.weight, .bias      (C,M)  (M)  M = mlp_width(l)
//   h.{l}.mlp.c_proj.weight, .bias    (M,C)  (C)
//
// between wte.weight (V,C), wpe.weight (context,C) and ln_f.weight, .bias (C).
//
// Weights hold no activations, gradients or caches: those live in GptWorkspace, and any number
// of workspaces may use one GptWeights at once (llama.cpp's model / context split).
//
// Thread safety: const methods may be called from any number of threads at once. A non-const
// method (InitWeights, EnableLora, MergeLora, writing through params() or lora_params(), an
// optimizer step) requires that no other thread uses these weights meanwhile, workspaces
// included: the caller serialises training steps with the forward passes of other workspaces.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "models/lora.h"
#include "models/model_config.h"
#include "models/param_layout.h"

namespace tandem {

// Pointers to one block's parameters (all inside GptWeights::params()); A and M as above.
struct BlockWeights {
  const float* ln1_w;     // (C)
  const float* ln1_b;     // (C)
  const float* qkv_w;     // (C,3A)
  const float* qkv_b;     // (3A)
  const float* proj_w;    // (A,C)
  const float* proj_b;    // (C)
  const float* ln2_w;     // (C)
  const float* ln2_b;     // (C)
  const float* fc_w;      // (C,M)
  const float* fc_b;      // (M)
  const float* fcproj_w;  // (M,C)
  const float* fcproj_b;  // (C)
};

// The parameter layout of a model of shape `config` (no buffer is allocated).
ParamLayout GptLayout(const ModelConfig& config);

class GptWeights {
 public:
  // A block's tensors, in layout order.
  enum BlockTensor {
    kLn1W, kLn1B, kQkvW, kQkvB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFcProjW, kFcProjB,
    kNumBlockTensors
  };
  // The four linear layers of a block.
  enum LinearKind { kQkv = 0, kAttnProj = 1, kFc = 2, kFcProj = 3, kNumLinear = 4 };
  // "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj".
  static const char* LinearName(int kind);
  // "ln_1.weight", ..., "mlp.c_proj.bias".
  static const char* BlockTensorName(int tensor);
  static BlockTensor LinearWeight(int kind);
  static BlockTensor LinearBias(int kind);

  // All parameters zero until InitWeights or a checkpoint fills them. Requires config.Validate().
  explicit GptWeights(const ModelConfig& config);
  // A deep copy (parameters and adapters).
  GptWeights(const GptWeights& other);
  GptWeights& operator=(const GptWeights&) = delete;
  ~GptWeights();

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }

  // GPT-2 initialisation: weights N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)),
  // biases 0, LayerNorm gains 1.
  void InitWeights(uint64_t seed);

  std::span<float> params() { return params_; }
  std::span<const float> params() const { return params_; }
  // The named tensor; aborts if the name is unknown (a programming error).
  float* param(const std::string& name);
  const float* param(const std::string& name) const;
  BlockWeights block(int layer) const;
  // Offsets into params() resolved once, so the training step does no name lookups.
  size_t block_offset(int layer, int tensor) const { return block_offsets_[layer][tensor]; }
  size_t wte_offset() const { return wte_offset_; }
  size_t wpe_offset() const { return wpe_offset_; }
  size_t lnf_w_offset() const { return lnf_w_offset_; }
  size_t lnf_b_offset() const { return lnf_b_offset_; }
  // Input and output width of a block's linear layer.
  int linear_in(int layer, int kind) const;
  int linear_out(int layer, int kind) const;

  // --- LoRA -------------------------------------------------------------------------------
  // Adds adapters to the target layers of every block (of lora.layers' blocks when it is not
  // empty; InvalidArgument when one is beyond n_layer). A has standard deviation 1/sqrt(fan_in) and B
  // is zero, so a new adapter leaves the model's output unchanged.
  Status EnableLora(const LoraConfig& lora, uint64_t seed);
  bool has_lora() const { return lora_ != nullptr; }
  const LoraConfig& lora_config() const;
  const ParamLayout& lora_layout() const;
  std::span<float> lora_params();
  std::span<const float> lora_params() const;
  // Offsets of a linear's A (in,r) and B (r,out) in lora_params(), or SIZE_MAX when that linear
  // has no adapter.
  size_t lora_a_offset(int layer, int kind) const;
  size_t lora_b_offset(int layer, int kind) const;
  // Folds the adapters into the base weights (inference at base speed) and back. While merged,
  // workspaces run the base weights alone and adapters receive no gradient.
  void MergeLora();
  void UnmergeLora();
  bool lora_merged() const;

  // Parameters, without adapters.
  size_t num_params() const { return params_.size(); }

 private:
  struct LoraState;

  ModelConfig config_;
  ParamLayout layout_;
  std::vector<float> params_;
  std::unique_ptr<LoraState> lora_;
  // [layer][BlockTensor] offsets into params_.
  std::vector<std::vector<size_t>> block_offsets_;
  size_t wte_offset_ = 0, wpe_offset_ = 0, lnf_w_offset_ = 0, lnf_b_offset_ = 0;
};

}  // namespace tandem

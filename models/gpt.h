// GPT decoder language model (Radford et al. 2019; DESIGN.md "Models") with forward and backward
// written by hand, after llm.c's train_gpt2.c: token + position embedding, pre-LayerNorm blocks of
// causal multi-head attention and a GELU MLP, a final LayerNorm and a head tied to wte.
//
// Parameters, gradients and (in AdamW) optimizer moments each live in one flat buffer laid out by
// layout(); tensors are named and shaped as in Hugging Face GPT-2. Optional LoRA adapters live in
// a second flat buffer with its own layout. Activations are kept in an arena sized for the last
// (B,T), reallocated only when that shape changes, so a training step allocates nothing once
// warm. The batch is split into one shard of sequences per OpenMP thread; each shard has its own
// gradient buffer, so results are bit-for-bit the same whatever the scheduling.
// Not thread-safe: one model is used by one thread at a time (its kernels use OpenMP inside).
#pragma once

#include <algorithm>
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

// Pointers to one block's parameters (all inside params()).
struct BlockWeights {
  const float* ln1_w;  // (C)
  const float* ln1_b;  // (C)
  const float* qkv_w;  // (C,3C)
  const float* qkv_b;  // (3C)
  const float* proj_w; // (C,C)
  const float* proj_b; // (C)
  const float* ln2_w;  // (C)
  const float* ln2_b;  // (C)
  const float* fc_w;   // (C,4C)
  const float* fc_b;   // (4C)
  const float* fcproj_w;  // (4C,C)
  const float* fcproj_b;  // (C)
};

class Gpt {
 public:
  explicit Gpt(const ModelConfig& config);
  ~Gpt();
  Gpt(const Gpt& other);
  Gpt& operator=(const Gpt&) = delete;

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }

  // GPT-2 initialisation: weights N(0, 0.02), residual projections N(0, 0.02/sqrt(2L)),
  // biases 0, LayerNorm gains 1.
  void InitWeights(uint64_t seed);

  std::span<float> params() { return params_; }
  std::span<const float> params() const { return params_; }
  std::span<float> grads() { return grads_; }
  std::span<const float> grads() const { return grads_; }
  // The named tensor; aborts if the name is unknown (a programming error).
  float* param(const std::string& name);
  const float* param(const std::string& name) const;
  float* grad(const std::string& name);
  BlockWeights block(int layer) const;

  // --- LoRA -------------------------------------------------------------------------------
  // Adds adapters to every block's target layers and freezes the base (set_train_base(true) to
  // train both). A has standard deviation 1/sqrt(fan_in) and B is zero (Hu et al.), so a new
  // adapter leaves the model's output unchanged.
  Status EnableLora(const LoraConfig& lora, uint64_t seed);
  bool has_lora() const { return lora_ != nullptr; }
  const LoraConfig& lora_config() const;
  const ParamLayout& lora_layout() const;
  std::span<float> lora_params();
  std::span<const float> lora_params() const;
  std::span<float> lora_grads();
  // Folds the adapters into the base weights (inference at base speed) and back.
  void MergeLora();
  void UnmergeLora();
  bool lora_merged() const;
  // Whether Backward() computes gradients of the base parameters. True without LoRA; false by
  // default once LoRA is enabled (frozen base).
  void set_train_base(bool train) { train_base_ = train; }
  bool train_base() const { return train_base_; }

  // --- Training and inference -------------------------------------------------------------
  // tokens (B,T) in [0, vocab), T <= context. targets (B,T) in [0, vocab) or -1 (ignored), or
  // null for inference. Returns the mean cross-entropy over non-ignored targets (0 if none or
  // null). logits() then holds (B,T,V).
  float Forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  const float* logits() const;
  // (B*T) per-position losses of the last Forward with targets (0 where ignored).
  const float* losses() const;
  int loss_count() const { return loss_count_; }

  void ZeroGrad();
  // Accumulates d(mean loss)/d(parameters) into grads() (and lora_grads()). Requires the last
  // Forward to have had targets.
  void Backward();
  // Accumulates gradients given dlogits (B,T,V) of any loss of the last Forward's logits (the
  // entry point for distillation losses).
  void BackwardFromLogits(const float* dlogits);

  // Parameters, counting adapters.
  size_t num_params() const { return params_.size(); }

 private:
  struct Activations;
  struct LoraState;
  struct LinearSlot;

  void EnsureActivations(int B, int T);
  // Threads the batch is split over: min(B, OpenMP threads).
  int NumShards(int B) const;
  // Forward and backward of sequences [b0, b0 + nb) of the batch. g and gl are the gradient
  // buffers (base and adapters) this shard accumulates into.
  void ForwardShard(int b0, int nb, double* loss_sum, int* count);
  void BackwardShard(int b0, int nb, const float* dlogits, float* g, float* gl);
  // A linear layer's weights; its gradients point into g (and gl for adapters), or the model's
  // own buffers when null.
  LinearSlot Linear(int layer, int kind, float* g, float* gl = nullptr);
  void LinearFwd(const LinearSlot& s, float* out, const float* inp, int N, bool accumulate,
                 size_t xa_offset);
  void LinearBwd(const LinearSlot& s, float* dinp, const float* dout, const float* inp, int N,
                 size_t xa_offset);

  // Offsets into params_/grads_ of every block's tensors, resolved once so the step does no
  // name lookups: [layer][BlockTensor].
  std::vector<std::vector<size_t>> block_offsets_;
  // Offsets of the tensors outside the blocks, resolved once likewise.
  size_t wte_offset_ = 0, wpe_offset_ = 0, lnf_w_offset_ = 0, lnf_b_offset_ = 0;

  ModelConfig config_;
  ParamLayout layout_;
  std::vector<float> params_;
  std::vector<float> grads_;
  std::unique_ptr<LoraState> lora_;
  bool train_base_ = true;
  std::unique_ptr<Activations> acts_;
  int B_ = 0, T_ = 0;  // shape of the last Forward
  bool has_targets_ = false;
  int loss_count_ = 0;
};

}  // namespace tandem

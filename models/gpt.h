// GPT decoder language model (Radford et al. 2019; DESIGN.md "Models"): token + position
// embedding, pre-LayerNorm blocks of causal multi-head attention and a GELU MLP, a final LayerNorm
// and a head tied to wte.
//
// Gpt is the convenient whole: shared weights (gpt_weights.h: config, layout, flat parameters,
// LoRA adapters) plus one default workspace (gpt_workspace.h: activations, gradients, cached
// decoding) on them. More workspaces can be opened on weights() to evaluate or decode from the
// same weights at the same time, each on its own thread:
//
//   Gpt model(config);                       // trains through its default workspace
//   GptWorkspace eval(model.shared_weights()); // a second user of the same weights
//
// Ownership: a Gpt shares ownership of its weights with every workspace opened on them; copying
// a Gpt copies the weights (and gradients), so the copy is independent.
// Thread safety: as GptWorkspace for the default workspace, as GptWeights for the weights: one
// thread uses a Gpt at a time, and nothing may run on the weights while they are written (an
// optimizer step on params(), EnableLora, MergeLora).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"
#include "models/gpt_weights.h"
#include "models/gpt_workspace.h"
#include "models/lora.h"
#include "models/model_config.h"
#include "models/param_layout.h"
#include "models/trainable.h"

namespace tandem {

class Gpt {
 public:
  explicit Gpt(const ModelConfig& config);
  // A model on existing weights (shared, not copied).
  explicit Gpt(std::shared_ptr<GptWeights> weights);
  // An independent copy: weights, adapters, gradients and what trains.
  Gpt(const Gpt& other);
  Gpt& operator=(const Gpt&) = delete;
  ~Gpt();

  GptWeights& weights() { return *weights_; }
  const GptWeights& weights() const { return *weights_; }
  std::shared_ptr<GptWeights> shared_weights() { return weights_; }
  std::shared_ptr<const GptWeights> shared_weights() const { return weights_; }
  GptWorkspace& workspace() { return workspace_; }
  const GptWorkspace& workspace() const { return workspace_; }

  const ModelConfig& config() const { return weights_->config(); }
  const ParamLayout& layout() const { return weights_->layout(); }
  void InitWeights(uint64_t seed) { weights_->InitWeights(seed); }
  std::span<float> params() { return weights_->params(); }
  std::span<const float> params() const { return weights_->params(); }
  float* param(const std::string& name) { return weights_->param(name); }
  const float* param(const std::string& name) const { return weights_->param(name); }
  BlockWeights block(int layer) const { return weights_->block(layer); }
  // Parameters, without adapters.
  size_t num_params() const { return weights_->num_params(); }

  // --- LoRA (see GptWeights) ----------------------------------------------------------------
  // Also makes the adapters alone trainable (set_trainable(Trainable::All(layout())) trains
  // both).
  Status EnableLora(const LoraConfig& lora, uint64_t seed);
  bool has_lora() const { return weights_->has_lora(); }
  const LoraConfig& lora_config() const { return weights_->lora_config(); }
  const ParamLayout& lora_layout() const { return weights_->lora_layout(); }
  std::span<float> lora_params() { return weights_->lora_params(); }
  std::span<const float> lora_params() const { return weights_->lora_params(); }
  void MergeLora() { weights_->MergeLora(); }
  void UnmergeLora() { weights_->UnmergeLora(); }
  bool lora_merged() const { return weights_->lora_merged(); }

  // --- Training and inference through the default workspace (see GptWorkspace) -------------
  // What Backward computes gradients for: everything without LoRA, the adapters once LoRA is
  // enabled.
  void set_trainable(const Trainable& trainable) { workspace_.set_trainable(trainable); }
  const Trainable& trainable() const { return workspace_.trainable(); }
  float Forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
    return workspace_.Forward(tokens, targets, B, T);
  }
  const float* logits() const { return workspace_.logits(); }
  const float* losses() const { return workspace_.losses(); }
  int loss_count() const { return workspace_.loss_count(); }
  std::span<float> grads() { return workspace_.grads(); }
  std::span<const float> grads() const { return workspace_.grads(); }
  float* grad(const std::string& name) { return workspace_.grad(name); }
  std::span<float> lora_grads() { return workspace_.lora_grads(); }
  void ZeroGrad() { workspace_.ZeroGrad(); }
  void Backward() { workspace_.Backward(); }
  void BackwardFromLogits(const float* dlogits) { workspace_.BackwardFromLogits(dlogits); }
  void BackwardFromLogits(const float* dlogits,
                          std::span<const GptWorkspace::HiddenGrad> hidden) {
    workspace_.BackwardFromLogits(dlogits, hidden);
  }

 private:
  std::shared_ptr<GptWeights> weights_;
  GptWorkspace workspace_;
};

}  // namespace tandem

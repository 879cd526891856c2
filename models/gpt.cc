#include "models/gpt.h"

#include <algorithm>

namespace tandem {

Gpt::Gpt(const ModelConfig& config) : Gpt(std::make_shared<GptWeights>(config)) {}

Gpt::Gpt(std::shared_ptr<GptWeights> weights) : weights_(weights), workspace_(weights) {
  workspace_.ZeroGrad();  // gradients exist from the start, as callers read them before Backward
}

Gpt::Gpt(const Gpt& other)
    : weights_(std::make_shared<GptWeights>(*other.weights_)), workspace_(weights_) {
  workspace_.set_trainable(other.workspace_.trainable());
  std::span<const float> g = other.workspace_.grads();
  std::span<float> mine = workspace_.grads();
  if (g.size() == mine.size()) std::copy(g.begin(), g.end(), mine.begin());
  if (has_lora()) {
    std::span<const float> gl = other.workspace_.lora_grads();
    std::span<float> mine_l = workspace_.lora_grads();
    if (gl.size() == mine_l.size()) std::copy(gl.begin(), gl.end(), mine_l.begin());
  }
}

Gpt::~Gpt() = default;

Status Gpt::EnableLora(const LoraConfig& lora, uint64_t seed) {
  TANDEM_RETURN_IF_ERROR(weights_->EnableLora(lora, seed));
  workspace_.set_trainable(Trainable::AdaptersOnly());
  return Status::Ok();
}

}  // namespace tandem

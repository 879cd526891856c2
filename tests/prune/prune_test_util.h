// Small models and batches shared by the prune tests.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/rng.h"
#include "models/gpt_weights.h"
#include "models/gpt_workspace.h"
#include "prune/importance.h"

namespace tandem::testing {

// 3 blocks of 4 heads of 4, a 64-wide MLP, 16 channels; vocab 32, context 16.
inline ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab = 32;
  c.context = 16;
  c.d_model = 16;
  c.n_layer = 3;
  c.n_head = 4;
  return c;
}

// Weights N(0, stddev) everywhere, LayerNorm gains around 1: larger than GPT-2's init so that
// every structure matters and gradients are well above float rounding.
inline std::shared_ptr<GptWeights> RandomWeights(const ModelConfig& c, uint64_t seed,
                                                 float stddev = 0.2f) {
  auto w = std::make_shared<GptWeights>(c);
  Rng rng(seed);
  for (const auto& t : w->layout().tensors()) {
    const bool gain = t.name.find("ln_") != std::string::npos &&
                      t.name.find(".weight") != std::string::npos;
    for (size_t i = 0; i < t.size; ++i) {
      w->params()[t.offset + i] = (gain ? 1.0f : 0.0f) + stddev * static_cast<float>(rng.Normal());
    }
  }
  return w;
}

inline CalibrationBatches RandomCalibration(int count, int B, int T, int vocab, uint64_t seed) {
  CalibrationBatches cal;
  cal.batch = B;
  cal.context = T;
  Rng rng(seed);
  for (int i = 0; i < count * B * T; ++i) {
    cal.tokens.push_back(static_cast<int32_t>(rng.Below(vocab)));
    cal.targets.push_back(static_cast<int32_t>(rng.Below(vocab)));
  }
  return cal;
}

// Logits (B,T,V) of `w` on tokens (B,T).
inline std::vector<float> Logits(std::shared_ptr<const GptWeights> w,
                                 const std::vector<int32_t>& tokens, int B, int T) {
  GptWorkspace ws(std::move(w));
  ws.Forward(tokens.data(), nullptr, B, T);
  const size_t n = static_cast<size_t>(B) * T * ws.config().vocab;
  return std::vector<float>(ws.logits(), ws.logits() + n);
}

}  // namespace tandem::testing

// Writes a model and its logits, loss and every parameter gradient on a fixed batch, for
// tests/models/conformance.py to recompute with an independent PyTorch GPT-2.
// Usage: conformance_dump OUT_DIR [preset] [batch] [seq] [hidden]; preset "nonuniform" is a
// pruned-looking model whose blocks differ in head count and MLP width (as
// torch_gpt2.PRESETS["nonuniform"]). With "hidden", the gradients are those of the cross-entropy
// plus sum(G_l * h_l) over the first and last blocks' outputs h_l, for random G_l written as
// `hidden_grad.<l>`: the gradient injected at block outputs (GptWorkspace::HiddenGrad).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/rng.h"
#include "models/gpt.h"
#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"

int main(int argc, char** argv) {
  using namespace tandem;
  if (argc < 2) {
    std::fprintf(stderr, "usage: conformance_dump OUT_DIR [preset] [batch] [seq]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const std::string preset = argc > 2 ? argv[2] : "slm-micro";
  StatusOr<ModelConfig> config = ModelPreset(preset == "nonuniform" ? "slm-micro" : preset);
  if (config.ok() && preset == "nonuniform") {
    config->n_layer = 3;
    config->d_head = 16;
    config->layer_n_head = {4, 1, 3};
    config->layer_d_mlp = {256, 40, 96};
  }
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().ToString().c_str());
    return 2;
  }
  const int B = argc > 3 ? std::atoi(argv[3]) : 3;
  const int T = argc > 4 ? std::atoi(argv[4]) : config->context;
  Gpt model(*config);
  model.InitWeights(123);
  // Perturb LayerNorm gains and biases off their init so those gradients are exercised.
  Rng rng(99);
  for (const auto& t : model.layout().tensors()) {
    if (t.name.find("ln_") != std::string::npos || t.name.find(".bias") != std::string::npos) {
      for (size_t i = 0; i < t.size; ++i) model.params()[t.offset + i] += 0.1f * rng.Normal();
    }
  }
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.Below(config->vocab));
  for (auto& t : targets) t = static_cast<int32_t>(rng.Below(config->vocab));
  targets[1] = -1;  // an ignored position
  const bool hidden = argc > 5 && std::string(argv[5]) == "hidden";
  const int C = config->d_model, V = config->vocab;
  std::vector<int> hidden_layers;
  if (hidden) hidden_layers = {0, config->n_layer - 1};
  std::vector<std::vector<float>> G(hidden_layers.size(), std::vector<float>(size_t(B) * T * C));
  for (auto& g : G) {
    for (float& x : g) x = 0.1f * static_cast<float>(rng.Normal());
  }
  model.ZeroGrad();
  float loss = model.Forward(tokens.data(), targets.data(), B, T);
  if (!hidden) {
    model.Backward();
  } else {
    // d(mean CE)/d(logits) = (softmax − onehot) / count, over the positions with a target.
    std::vector<float> dlogits(size_t(B) * T * V, 0.0f);
    int count = 0;
    for (int32_t t : targets) count += t >= 0;
    for (int i = 0; i < B * T; ++i) {
      if (targets[i] < 0) continue;
      const float* z = model.logits() + size_t(i) * V;
      double m = z[0], sum = 0.0;
      for (int v = 1; v < V; ++v) m = std::max(m, double(z[v]));
      for (int v = 0; v < V; ++v) sum += std::exp(z[v] - m);
      for (int v = 0; v < V; ++v) {
        dlogits[size_t(i) * V + v] = float(std::exp(z[v] - m) / sum / count);
      }
      dlogits[size_t(i) * V + targets[i]] -= 1.0f / count;
    }
    std::vector<GptWorkspace::HiddenGrad> grads;
    for (size_t k = 0; k < G.size(); ++k) grads.push_back({hidden_layers[k], G[k].data()});
    model.BackwardFromLogits(dlogits.data(), grads);
  }

  Status s = SaveGpt(dir + "/model.safetensors", model);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<TensorToWrite> out = {
      {"tokens", DType::kI32, {B, T}, tokens.data()},
      {"targets", DType::kI32, {B, T}, targets.data()},
      {"logits", DType::kF32, {B, T, config->vocab}, model.logits()},
      {"loss", DType::kF32, {1}, &loss},
  };
  std::vector<std::string> names;
  names.reserve(model.layout().tensors().size() + G.size());
  for (size_t k = 0; k < G.size(); ++k) {
    names.push_back("hidden_grad." + std::to_string(hidden_layers[k]));
    out.push_back({names[k], DType::kF32, {B, T, C}, G[k].data()});
  }
  const size_t first_grad = names.size();
  for (const auto& t : model.layout().tensors()) names.push_back("grad." + t.name);
  for (size_t i = first_grad; i < names.size(); ++i) {
    const auto& t = model.layout().tensors()[i - first_grad];
    out.push_back({names[i], DType::kF32, t.shape, model.grads().data() + t.offset});
  }
  s = WriteSafetensors(dir + "/expected.safetensors", out, {});
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("loss %.6f written to %s\n", loss, dir.c_str());
  return 0;
}

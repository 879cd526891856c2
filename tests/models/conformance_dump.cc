// Writes a model and its logits, loss and every parameter gradient on a fixed batch, for
// tests/models/conformance.py to recompute with an independent PyTorch GPT-2.
// Usage: conformance_dump OUT_DIR [preset] [batch] [seq]; preset "nonuniform" is a pruned-looking
// model whose blocks differ in head count and MLP width (as torch_gpt2.PRESETS["nonuniform"]).
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
  model.ZeroGrad();
  float loss = model.Forward(tokens.data(), targets.data(), B, T);
  model.Backward();

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
  names.reserve(model.layout().tensors().size());
  for (const auto& t : model.layout().tensors()) names.push_back("grad." + t.name);
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& t = model.layout().tensors()[i];
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

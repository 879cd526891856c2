// Same seed, same bits: a few AdamW steps of the preset models from a fixed seed must end at
// exactly the parameters recorded before the model was split into weights and workspaces (and
// before non-uniform shapes, trainable ranges and cached decoding were added). A refactor that
// reorders one floating-point sum shows here as a different hash.
//
// The recorded hashes hold for one OpenBLAS kernel (the CPU it picks) and two OpenMP threads;
// on another CPU the test is skipped, since OpenBLAS's kernels differ in their summation order.
#include <gtest/gtest.h>

#include <cblas.h>
#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "core/rng.h"
#include "models/adamw.h"
#include "models/gpt.h"

namespace tandem {
namespace {

// The CPU kernel the hashes below were recorded with.
constexpr const char* kRecordedCore = "Prescott";

uint64_t Fnv1a(std::span<const float> values) {
  uint64_t h = 1469598103934665603ull;
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
  for (size_t i = 0; i < values.size() * sizeof(float); ++i) {
    h ^= bytes[i];
    h *= 1099511628211ull;
  }
  return h;
}

// Trains `preset` for `steps` AdamW steps on random batches (with LoRA adapters of rank 4 when
// `lora`) and returns the hash of what trained: the parameters, or the adapters.
uint64_t TrainAndHash(const std::string& preset, int batch, int steps, bool lora) {
  omp_set_num_threads(2);
  auto config = ModelPreset(preset);
  EXPECT_TRUE(config.ok());
  Gpt model(*config);
  model.InitWeights(2024);
  if (lora) {
    LoraConfig lc;
    lc.rank = 4;
    EXPECT_TRUE(model.EnableLora(lc, 7).ok());
  }
  AdamW opt(AdamWConfig{}, lora ? model.lora_layout() : model.layout());
  const int T = config->context;
  std::vector<int32_t> tokens(static_cast<size_t>(batch) * T), targets(tokens.size());
  Rng rng(11);
  for (int s = 0; s < steps; ++s) {
    for (auto& t : tokens) t = static_cast<int32_t>(rng.Below(config->vocab));
    for (auto& t : targets) t = static_cast<int32_t>(rng.Below(config->vocab));
    targets[5] = -1;
    model.ZeroGrad();
    model.Forward(tokens.data(), targets.data(), batch, T);
    model.Backward();
    std::span<float> p = lora ? model.lora_params() : model.params();
    std::span<float> g = lora ? model.lora_grads() : model.grads();
    ClipGradientNorm(g, 1.0);
    opt.Step(p, g, 1e-3f);
  }
  return Fnv1a(lora ? model.lora_params() : model.params());
}

class TrainingBitsTest : public testing::Test {
 protected:
  void SetUp() override {
    const std::string core = openblas_get_corename();
    if (core != kRecordedCore) {
      GTEST_SKIP() << "hashes were recorded with OpenBLAS core " << kRecordedCore << ", this is "
                   << core;
    }
  }
};

TEST_F(TrainingBitsTest, SlmMicroMatchesRecordedBits) {
  const uint64_t h = TrainAndHash("slm-micro", 4, 5, false);
  std::printf("slm-micro: %016llx\n", static_cast<unsigned long long>(h));
  EXPECT_EQ(h, 0x7dd885a8d7114662ull);
}

TEST_F(TrainingBitsTest, SlmTinyMatchesRecordedBits) {
  const uint64_t h = TrainAndHash("slm-tiny", 4, 3, false);
  std::printf("slm-tiny: %016llx\n", static_cast<unsigned long long>(h));
  EXPECT_EQ(h, 0xfeb5d3fea91b7474ull);
}

TEST_F(TrainingBitsTest, SlmMicroLoraMatchesRecordedBits) {
  const uint64_t h = TrainAndHash("slm-micro", 4, 4, true);
  std::printf("slm-micro lora: %016llx\n", static_cast<unsigned long long>(h));
  EXPECT_EQ(h, 0x4efa4fc43be36225ull);
}

}  // namespace
}  // namespace tandem

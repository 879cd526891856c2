// Loading a checkpoint refuses weights that are not finite: a NaN in a model once made `tandem
// eval` print "-nan" and exit 0. LoadGpt and LoadLora name the file and the tensor, and a refused
// adapter file leaves the model as it was.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"
#include "tests/temp_dir.h"

namespace tandem {
namespace {

using CheckpointFiniteTest = testing::TempDirTest;

ModelConfig Small() { return ModelConfig{256, 16, 32, 2, 4}; }

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

// `value` written into element `element` of `tensor` of a fresh model, saved to `path`.
void SaveModelWith(const std::string& path, const std::string& tensor, size_t element,
                   float value) {
  Gpt model(Small());
  model.InitWeights(3);
  const TensorSpec* spec = model.layout().Find(tensor);
  ASSERT_NE(spec, nullptr) << tensor;
  ASSERT_LT(element, spec->size);
  model.params()[spec->offset + element] = value;
  ASSERT_TRUE(SaveGpt(path, model).ok());
}

TEST_F(CheckpointFiniteTest, NanWeightInACheckpointIsRefusedNamingFileAndTensor) {
  const std::string path = Path("nan.safetensors");
  SaveModelWith(path, "h.1.mlp.c_fc.weight", 17, std::numeric_limits<float>::quiet_NaN());
  StatusOr<std::unique_ptr<Gpt>> loaded = LoadGpt(path);
  ASSERT_FALSE(loaded.ok()) << "a checkpoint holding NaN was loaded";
  EXPECT_TRUE(Contains(loaded.status(), path)) << loaded.status().message();
  EXPECT_TRUE(Contains(loaded.status(), "'h.1.mlp.c_fc.weight'")) << loaded.status().message();
  EXPECT_TRUE(Contains(loaded.status(), "NaN")) << loaded.status().message();
  EXPECT_TRUE(Contains(loaded.status(), "element 17")) << loaded.status().message();
}

TEST_F(CheckpointFiniteTest, InfiniteWeightInACheckpointIsRefused) {
  const std::string path = Path("inf.safetensors");
  SaveModelWith(path, "ln_f.bias", 0, -std::numeric_limits<float>::infinity());
  StatusOr<std::unique_ptr<Gpt>> loaded = LoadGpt(path);
  ASSERT_FALSE(loaded.ok()) << "a checkpoint holding an infinity was loaded";
  EXPECT_TRUE(Contains(loaded.status(), "'ln_f.bias'")) << loaded.status().message();
  EXPECT_TRUE(Contains(loaded.status(), "infinity")) << loaded.status().message();
}

// Hugging Face files prefix the tensors with "transformer."; the error names the file's tensor.
TEST_F(CheckpointFiniteTest, NanInAHuggingFaceNamedFileNamesItsTensor) {
  const std::string plain = Path("plain.safetensors");
  SaveModelWith(plain, "wpe.weight", 5, std::numeric_limits<float>::quiet_NaN());
  StatusOr<SafetensorsFile> file = ReadSafetensors(plain);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  std::vector<TensorToWrite> renamed;
  for (const auto& [name, t] : file->tensors) {
    renamed.push_back({"transformer." + name, t.dtype, t.shape, t.bytes.data()});
  }
  const std::string hf = Path("hf.safetensors");
  ASSERT_TRUE(WriteSafetensors(hf, renamed, {}).ok());
  StatusOr<std::unique_ptr<Gpt>> loaded = LoadGpt(hf);
  ASSERT_FALSE(loaded.ok());
  EXPECT_TRUE(Contains(loaded.status(), hf)) << loaded.status().message();
  EXPECT_TRUE(Contains(loaded.status(), "'transformer.wpe.weight'")) << loaded.status().message();
}

TEST_F(CheckpointFiniteTest, FiniteCheckpointStillLoads) {
  const std::string path = Path("fine.safetensors");
  SaveModelWith(path, "wte.weight", 0, 1e30f);  // large, but finite
  StatusOr<std::unique_ptr<Gpt>> loaded = LoadGpt(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->params()[0], 1e30f);
}

TEST_F(CheckpointFiniteTest, NanAdapterWeightIsRefusedAndLeavesTheModelAsItWas) {
  Gpt source(Small());
  source.InitWeights(4);
  LoraConfig lora;
  lora.rank = 2;
  ASSERT_TRUE(source.EnableLora(lora, 5).ok());
  const TensorSpec* spec = source.lora_layout().Find("h.0.attn.c_attn.lora_B");
  ASSERT_NE(spec, nullptr);
  source.lora_params()[spec->offset + 1] = std::numeric_limits<float>::quiet_NaN();
  const std::string path = Path("adapters.safetensors");
  ASSERT_TRUE(SaveLora(path, source).ok());

  Gpt fresh(Small());
  Status s = LoadLora(path, &fresh);
  ASSERT_FALSE(s.ok()) << "adapters holding NaN were loaded";
  EXPECT_TRUE(Contains(s, path)) << s.message();
  EXPECT_TRUE(Contains(s, "'h.0.attn.c_attn.lora_B'")) << s.message();
  EXPECT_FALSE(fresh.has_lora()) << "a refused adapter file left adapters enabled";

  // Into a model that already has adapters of the same shape: they stay as they were.
  Gpt adapted(Small());
  ASSERT_TRUE(adapted.EnableLora(lora, 6).ok());
  std::vector<float> before(adapted.lora_params().begin(), adapted.lora_params().end());
  ASSERT_FALSE(LoadLora(path, &adapted).ok());
  EXPECT_TRUE(std::equal(before.begin(), before.end(), adapted.lora_params().begin()));
}

}  // namespace
}  // namespace tandem

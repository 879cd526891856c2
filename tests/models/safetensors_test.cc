// Safetensors: round trips of models and adapters, Hugging Face naming, and rejection of
// malformed files without crashing.
#include <gtest/gtest.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/rng.h"
#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"
#include "tests/temp_dir.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

using SafetensorsTest = testing::TempDirTest;

ModelConfig Small() { return ModelConfig{256, 16, 32, 2, 4}; }

// Rewrites the float32 safetensors file `from` to `to` without the tensor `drop`.
Status CopyWithout(const std::string& from, const std::string& to, const std::string& drop) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(from));
  file.tensors.erase(drop);
  std::vector<TensorToWrite> keep;
  std::vector<std::vector<float>> values;
  values.reserve(file.tensors.size());
  for (const auto& [name, t] : file.tensors) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<float> v, t.ToFloat());
    values.push_back(std::move(v));
    keep.push_back({name, DType::kF32, t.shape, values.back().data()});
  }
  return WriteSafetensors(to, keep, file.metadata);
}

TEST_F(SafetensorsTest, ModelRoundTripIsExactAndUsesGpt2Names) {
  Gpt model(Small());
  model.InitWeights(5);
  ASSERT_TRUE(SaveGpt(Path("m.safetensors"), model).ok());
  auto file = ReadSafetensors(Path("m.safetensors"));
  ASSERT_TRUE(file.ok());
  for (const char* name : {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.1.attn.c_attn.weight",
                           "h.1.attn.c_proj.bias", "h.0.mlp.c_fc.weight", "h.1.mlp.c_proj.weight",
                           "ln_f.bias"}) {
    EXPECT_EQ(file->tensors.count(name), 1u) << name;
  }
  // Conv1D layout: c_attn is stored [in, out] = [C, 3C].
  EXPECT_EQ(file->tensors.at("h.0.attn.c_attn.weight").shape, (std::vector<int64_t>{32, 96}));
  EXPECT_EQ(file->metadata.at("n_embd"), "32");
  EXPECT_EQ(file->metadata.at("n_head"), "4");
  auto loaded = LoadGpt(Path("m.safetensors"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->config(), model.config());
  ASSERT_EQ((*loaded)->params().size(), model.params().size());
  EXPECT_EQ(std::memcmp((*loaded)->params().data(), model.params().data(),
                        model.params().size() * sizeof(float)), 0);
}

// A pruned model's per-block shapes travel in the metadata and come back; a GPT-2-shaped model's
// file carries none of those keys (files written before they existed look the same and load).
TEST_F(SafetensorsTest, NonUniformModelRoundTripsItsShapes) {
  ModelConfig c = Small();
  c.n_layer = 3;
  c.d_head = 6;
  c.layer_n_head = {4, 1, 2};
  c.layer_d_mlp = {128, 24, 40};
  Gpt model(c);
  model.InitWeights(6);
  ASSERT_TRUE(SaveGpt(Path("p.safetensors"), model).ok());
  auto file = ReadSafetensors(Path("p.safetensors"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->metadata.at("layer_n_head"), "4,1,2");
  EXPECT_EQ(file->metadata.at("layer_n_inner"), "128,24,40");
  EXPECT_EQ(file->metadata.at("head_dim"), "6");
  EXPECT_EQ(file->tensors.at("h.1.attn.c_attn.weight").shape, (std::vector<int64_t>{32, 18}));
  EXPECT_EQ(file->tensors.at("h.2.mlp.c_proj.weight").shape, (std::vector<int64_t>{40, 32}));
  auto loaded = LoadGpt(Path("p.safetensors"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->config(), c);
  EXPECT_EQ((*loaded)->config().ToString(), c.ToString());
  EXPECT_EQ(std::memcmp((*loaded)->params().data(), model.params().data(),
                        model.params().size() * sizeof(float)), 0);

  // Without the per-block keys (a stale or hand-edited header) the shapes no longer match.
  SafetensorsFile bare = *file;
  bare.metadata.erase("layer_n_head");
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<float>> values;
  values.reserve(bare.tensors.size());
  for (const auto& [name, t] : bare.tensors) {
    values.push_back(*t.ToFloat());
    tensors.push_back({name, DType::kF32, t.shape, values.back().data()});
  }
  ASSERT_TRUE(WriteSafetensors(Path("stale.safetensors"), tensors, bare.metadata).ok());
  auto stale = LoadGpt(Path("stale.safetensors"));
  ASSERT_FALSE(stale.ok());
  EXPECT_NE(stale.status().message().find("h.1.attn.c_attn.weight"), std::string::npos)
      << stale.status().message();

  Gpt plain(Small());
  ASSERT_TRUE(SaveGpt(Path("plain.safetensors"), plain).ok());
  auto plain_file = ReadSafetensors(Path("plain.safetensors"));
  ASSERT_TRUE(plain_file.ok());
  for (const char* key : {"n_inner", "head_dim", "layer_n_head", "layer_n_inner"}) {
    EXPECT_EQ(plain_file->metadata.count(key), 0u) << key;
  }
}

TEST_F(SafetensorsTest, LoraRoundTrip) {
  Gpt model(Small());
  model.InitWeights(6);
  LoraConfig lora;
  lora.rank = 3;
  lora.targets = {"attn.c_attn", "mlp.c_fc"};
  ASSERT_TRUE(model.EnableLora(lora, 1).ok());
  Rng rng(2);
  for (float& p : model.lora_params()) p = static_cast<float>(rng.Normal());
  ASSERT_TRUE(SaveLora(Path("a.safetensors"), model).ok());
  Gpt other(Small());
  ASSERT_TRUE(LoadLora(Path("a.safetensors"), &other).ok());
  EXPECT_EQ(other.lora_config().rank, 3);
  EXPECT_EQ(other.lora_config().targets, lora.targets);
  EXPECT_EQ(std::memcmp(other.lora_params().data(), model.lora_params().data(),
                        model.lora_params().size() * sizeof(float)), 0);
}

TEST_F(SafetensorsTest, LoraOnSomeLayersRoundTrips) {
  Gpt model(Small());
  model.InitWeights(6);
  LoraConfig lora;
  lora.rank = 2;
  lora.layers = {1};
  ASSERT_TRUE(model.EnableLora(lora, 1).ok());
  Rng rng(3);
  for (float& p : model.lora_params()) p = static_cast<float>(rng.Normal());
  ASSERT_TRUE(SaveLora(Path("some.safetensors"), model).ok());
  Gpt other(Small());
  ASSERT_TRUE(LoadLora(Path("some.safetensors"), &other).ok());
  EXPECT_EQ(other.lora_config().layers, std::vector<int>{1});
  ASSERT_EQ(other.lora_params().size(), model.lora_params().size());
  EXPECT_EQ(std::memcmp(other.lora_params().data(), model.lora_params().data(),
                        model.lora_params().size() * sizeof(float)), 0);
  // Adapters on every block do not load over adapters on block 1 alone.
  Gpt every(Small());
  LoraConfig all = lora;
  all.layers.clear();
  ASSERT_TRUE(every.EnableLora(all, 1).ok());
  EXPECT_FALSE(LoadLora(Path("some.safetensors"), &every).ok());
  // Files of adapters on every block carry no lora_layers key.
  ASSERT_TRUE(SaveLora(Path("every.safetensors"), every).ok());
  auto file = ReadSafetensors(Path("every.safetensors"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->metadata.count("lora_layers"), 0u);
}

TEST_F(SafetensorsTest, SavingAMergedModelStoresTheBase) {
  Gpt model(Small());
  model.InitWeights(7);
  std::vector<float> base(model.params().begin(), model.params().end());
  ASSERT_TRUE(model.EnableLora(LoraConfig{}, 1).ok());
  for (float& p : model.lora_params()) p = 0.5f;
  model.MergeLora();
  ASSERT_TRUE(SaveGpt(Path("b.safetensors"), model).ok());
  auto loaded = LoadGpt(Path("b.safetensors"));
  ASSERT_TRUE(loaded.ok());
  for (size_t i = 0; i < base.size(); ++i) ASSERT_NEAR((*loaded)->params()[i], base[i], 1e-5);
}

TEST_F(SafetensorsTest, HuggingFaceStyleFileLoadsWithoutMetadata) {
  // A GPT2LMHeadModel-like file: "transformer." prefix, F16 weights, mask buffers, lm_head.
  Gpt model(ModelConfig{256, 16, 64, 1, 1});
  model.InitWeights(8);
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<uint16_t>> halves;
  halves.reserve(model.layout().tensors().size());
  for (const auto& t : model.layout().tensors()) {
    std::vector<uint16_t> h(t.size);
    for (size_t i = 0; i < t.size; ++i) {
      float f = model.params()[t.offset + i];
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      h[i] = static_cast<uint16_t>(bits >> 16);  // bf16 by truncation
    }
    halves.push_back(std::move(h));
    tensors.push_back({"transformer." + t.name, DType::kBF16, t.shape, halves.back().data()});
  }
  std::vector<float> mask(16 * 16, 1.0f);
  tensors.push_back({"transformer.h.0.attn.bias", DType::kF32, {1, 1, 16, 16}, mask.data()});
  ASSERT_TRUE(WriteSafetensors(Path("hf.safetensors"), tensors, {{"format", "pt"}}).ok());
  auto loaded = LoadGpt(Path("hf.safetensors"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->config().n_layer, 1);
  EXPECT_EQ((*loaded)->config().d_model, 64);
  EXPECT_EQ((*loaded)->config().n_head, 1);  // GPT-2 head size 64
  for (size_t i = 0; i < model.params().size(); i += 97) {
    EXPECT_NEAR((*loaded)->params()[i], model.params()[i], std::abs(model.params()[i]) * 1e-2 + 1e-6);
  }
}

TEST_F(SafetensorsTest, MalformedFilesAreRejectedWithReasons) {
  Gpt model(Small());
  model.InitWeights(9);
  ASSERT_TRUE(SaveGpt(Path("good.safetensors"), model).ok());
  std::ifstream in(Path("good.safetensors"), std::ios::binary);
  std::vector<uint8_t> good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  // Truncated data section.
  std::vector<uint8_t> truncated(good.begin(), good.end() - 100);
  auto r = ParseSafetensors(truncated, "t");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("outside"), std::string::npos) << r.status().message();
  // Header length pointing past the end.
  std::vector<uint8_t> huge = good;
  huge[7] = 0x7f;
  EXPECT_FALSE(ParseSafetensors(huge, "h").ok());
  // Shorter than the length prefix.
  EXPECT_FALSE(ParseSafetensors({1, 2, 3}, "s").ok());
  // Header that is not JSON.
  std::vector<uint8_t> notjson = good;
  notjson[8] = '!';
  EXPECT_FALSE(ParseSafetensors(notjson, "j").ok());
  // A shape that disagrees with the byte range.
  std::string json = R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})";
  std::vector<uint8_t> img(8);
  img[0] = static_cast<uint8_t>(json.size());
  img.insert(img.end(), json.begin(), json.end());
  img.resize(img.size() + 8);
  r = ParseSafetensors(img, "shape");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("need 12"), std::string::npos) << r.status().message();
  // Missing file.
  EXPECT_EQ(ReadSafetensors(Path("nope")).status().code(), StatusCode::kNotFound);
  // A valid file of the wrong shape for the model.
  Gpt other(ModelConfig{256, 16, 48, 2, 4});
  other.InitWeights(1);
  ASSERT_TRUE(SaveGpt(Path("other.safetensors"), other).ok());
  // Remove one tensor: loading must name it.
  ASSERT_TRUE(CopyWithout(Path("other.safetensors"), Path("missing.safetensors"),
                          "h.1.mlp.c_fc.bias").ok());
  auto m = LoadGpt(Path("missing.safetensors"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("h.1.mlp.c_fc.bias"), std::string::npos);
}

TEST_F(SafetensorsTest, FailedWriteLeavesThePreviousFileIntact) {
  Gpt model(Small());
  model.InitWeights(10);
  ASSERT_TRUE(SaveGpt(Path("keep.safetensors"), model).ok());
  // Writing into a directory that does not exist fails and touches nothing else.
  EXPECT_FALSE(SaveGpt(Path("no/such/dir/keep.safetensors"), model).ok());
  EXPECT_TRUE(LoadGpt(Path("keep.safetensors")).ok());
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "temporary file left behind";
  }
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// A forged header describing a huge model must be refused before anything is allocated for it.
TEST(SafetensorsHostileTest, HugeModelInMetadataIsRefusedCheaply) {
  const std::string path = ::testing::TempDir() + "/forged.safetensors";
  std::vector<float> tiny(4, 0.0f);
  ASSERT_TRUE(WriteSafetensors(path, {{"wte.weight", DType::kF32, {2, 2}, tiny.data()}},
                               {{"vocab_size", "256"}, {"n_positions", "1024"},
                                {"n_embd", "8192"}, {"n_layer", "256"}, {"n_head", "64"}})
                  .ok());
  auto m = LoadGpt(path);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("needs more parameters"), std::string::npos)
      << m.status().message();
}

// Many header entries pointing at one byte range are rejected without copying them all.
TEST(SafetensorsHostileTest, OverlappingRangesAreRejected) {
  std::string json = "{";
  for (int i = 0; i < 50; ++i) {
    json += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
            "\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}";
  }
  json += "}";
  std::vector<uint8_t> img(8);
  for (int i = 0; i < 8; ++i) img[i] = static_cast<uint8_t>(json.size() >> (8 * i));
  img.insert(img.end(), json.begin(), json.end());
  img.resize(img.size() + 16);
  auto r = ParseSafetensors(img, "overlap");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("overlap"), std::string::npos);
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

using LoraLoadTest = testing::TempDirTest;

// An adapter file that fails part-way must leave the model exactly as it was, and adapters that
// do not match the model's (alpha included) are refused.
TEST_F(LoraLoadTest, FailedLoadLeavesTheModelUnchanged) {
  Gpt source(ModelConfig{256, 16, 32, 2, 4});
  source.InitWeights(1);
  LoraConfig lora;
  lora.rank = 2;
  ASSERT_TRUE(source.EnableLora(lora, 3).ok());
  ASSERT_TRUE(SaveLora(Path("a.safetensors"), source).ok());
  // Drop one adapter tensor from the file.
  ASSERT_TRUE(CopyWithout(Path("a.safetensors"), Path("broken.safetensors"),
                          "h.1.mlp.c_fc.lora_B").ok());

  Gpt fresh(ModelConfig{256, 16, 32, 2, 4});
  Status s = LoadLora(Path("broken.safetensors"), &fresh);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("h.1.mlp.c_fc.lora_B"), std::string::npos) << s.message();
  EXPECT_FALSE(fresh.has_lora()) << "a failed load left adapters enabled";

  Gpt adapted(ModelConfig{256, 16, 32, 2, 4});
  LoraConfig other = lora;
  other.alpha = 4.0f;
  ASSERT_TRUE(adapted.EnableLora(other, 3).ok());
  std::vector<float> before(adapted.lora_params().begin(), adapted.lora_params().end());
  EXPECT_FALSE(LoadLora(Path("a.safetensors"), &adapted).ok()) << "alpha mismatch accepted";
  EXPECT_TRUE(std::equal(before.begin(), before.end(), adapted.lora_params().begin()));
}

}  // namespace
}  // namespace tandem

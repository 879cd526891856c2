// Whole-model checks: finite-difference gradients of the GPT (and of its LoRA adapters), and that
// training overfits one batch.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/rng.h"
#include "models/adamw.h"
#include "models/gpt.h"
#include "tests/models/grad_check.h"

namespace tandem {
namespace {

ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab = 256;
  c.context = 8;
  c.d_model = 16;
  c.n_layer = 2;
  c.n_head = 2;
  return c;
}

// A pruned-looking model: blocks with different head counts and MLP widths, and heads whose
// total width differs from d_model.
ModelConfig NonUniformConfig() {
  ModelConfig c = TinyConfig();
  c.n_layer = 3;
  c.d_head = 6;
  c.layer_n_head = {3, 1, 2};
  c.layer_d_mlp = {40, 24, 12};
  return c;
}

struct Batch {
  int B = 2, T = 7;
  std::vector<int32_t> tokens, targets;
};

Batch RandomBatch(uint64_t seed, int vocab) {
  Rng rng(seed);
  Batch b;
  for (int i = 0; i < b.B * b.T; ++i) {
    b.tokens.push_back(static_cast<int32_t>(rng.Below(vocab)));
    b.targets.push_back(static_cast<int32_t>(rng.Below(vocab)));
  }
  b.targets[3] = -1;  // an ignored position
  return b;
}

// Checks the gradient of every tensor of `layout` at a few indices.
void CheckAllTensors(Gpt& model, const ParamLayout& layout, float* values, const float* grads,
                     const Batch& batch) {
  auto loss = [&] {
    return static_cast<double>(model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T));
  };
  for (const auto& t : layout.tensors()) {
    std::vector<size_t> idx;
    for (size_t i : testing::SpreadIndices(t.size, 6, t.offset)) idx.push_back(t.offset + i);
    // The embedding rows that the batch uses carry the gradient; check some of those too.
    if (t.name == "wte.weight") {
      for (int k = 0; k < 4; ++k) idx.push_back(t.offset + batch.tokens[k] * t.shape[1] + k);
    }
    // The floor absorbs finite-difference noise of a float32 loss (~2e-5 at eps 1e-2); the
    // PyTorch conformance test checks the same gradients to 1e-6 relative.
    auto r = testing::CheckGradient(values, idx, grads, loss, 1e-2, 5e-3);
    EXPECT_LT(r.max_rel_error, 2e-2) << t.name << " max abs error " << r.max_abs_error;
  }
}

TEST(GptGradTest, EveryParameterMatchesFiniteDifferences) {
  Gpt model(TinyConfig());
  model.InitWeights(42);
  // Larger weights than the GPT-2 init make every path carry a visible gradient.
  Rng rng(7);
  for (float& p : model.params()) p += static_cast<float>(rng.Normal()) * 0.1f;
  const Batch batch = RandomBatch(1, 256);
  model.ZeroGrad();
  model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  model.Backward();
  std::vector<float> grads(model.grads().begin(), model.grads().end());
  CheckAllTensors(model, model.layout(), model.params().data(), grads.data(), batch);
}

TEST(GptGradTest, NonUniformModelMatchesFiniteDifferences) {
  Gpt model(NonUniformConfig());
  ASSERT_EQ(model.layout().Find("h.1.attn.c_attn.weight")->shape, (std::vector<int64_t>{16, 18}));
  ASSERT_EQ(model.layout().Find("h.2.mlp.c_proj.weight")->shape, (std::vector<int64_t>{12, 16}));
  model.InitWeights(45);
  Rng rng(9);
  for (float& p : model.params()) p += static_cast<float>(rng.Normal()) * 0.1f;
  const Batch batch = RandomBatch(5, 256);
  model.ZeroGrad();
  model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  model.Backward();
  std::vector<float> grads(model.grads().begin(), model.grads().end());
  CheckAllTensors(model, model.layout(), model.params().data(), grads.data(), batch);
}

TEST(GptGradTest, NonUniformLoraAdaptersMatchFiniteDifferences) {
  Gpt model(NonUniformConfig());
  model.InitWeights(46);
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4.0f;
  ASSERT_TRUE(model.EnableLora(lora, 6).ok());
  EXPECT_EQ(model.lora_layout().Find("h.0.attn.c_proj.lora_A")->shape,
            (std::vector<int64_t>{18, 2}));
  Rng rng(10);
  for (float& p : model.lora_params()) p += static_cast<float>(rng.Normal()) * 0.2f;
  const Batch batch = RandomBatch(6, 256);
  model.ZeroGrad();
  model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  model.Backward();
  std::vector<float> grads(model.lora_grads().begin(), model.lora_grads().end());
  CheckAllTensors(model, model.lora_layout(), model.lora_params().data(), grads.data(), batch);
}

TEST(GptGradTest, LoraAdaptersMatchFiniteDifferencesAndBaseIsFrozen) {
  Gpt model(TinyConfig());
  model.InitWeights(43);
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4.0f;
  ASSERT_TRUE(model.EnableLora(lora, 5).ok());
  Rng rng(8);
  for (float& p : model.lora_params()) p += static_cast<float>(rng.Normal()) * 0.2f;  // B != 0
  const Batch batch = RandomBatch(2, 256);
  model.ZeroGrad();
  model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  model.Backward();
  for (float g : model.grads()) ASSERT_EQ(g, 0.0f) << "frozen base received a gradient";
  std::vector<float> grads(model.lora_grads().begin(), model.lora_grads().end());
  CheckAllTensors(model, model.lora_layout(), model.lora_params().data(), grads.data(), batch);
}

// Adapters on some blocks only (offsite's adapter blocks): the other blocks have none, the
// gradients still match, and merging changes only the adapted blocks' weights.
TEST(GptGradTest, LoraOnSomeLayersMatchesFiniteDifferencesAndMergesOnlyThere) {
  Gpt model(NonUniformConfig());
  model.InitWeights(47);
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4.0f;
  lora.layers = {0, 2};
  ASSERT_TRUE(model.EnableLora(lora, 7).ok());
  EXPECT_NE(model.lora_layout().Find("h.0.attn.c_attn.lora_A"), nullptr);
  EXPECT_EQ(model.lora_layout().Find("h.1.attn.c_attn.lora_A"), nullptr);
  EXPECT_NE(model.lora_layout().Find("h.2.mlp.c_proj.lora_B"), nullptr);
  EXPECT_EQ(model.weights().lora_a_offset(1, GptWeights::kFc), SIZE_MAX);
  // 4 linears of blocks 0 and 2: A (in,2) and B (2,out) each.
  size_t expected = 0;
  for (int l : {0, 2}) {
    for (int k = 0; k < GptWeights::kNumLinear; ++k) {
      expected += 2 * (model.weights().linear_in(l, k) + model.weights().linear_out(l, k));
    }
  }
  EXPECT_EQ(model.lora_params().size(), expected);
  Rng rng(11);
  for (float& p : model.lora_params()) p += static_cast<float>(rng.Normal()) * 0.2f;
  const Batch batch = RandomBatch(7, 256);
  model.ZeroGrad();
  model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  model.Backward();
  std::vector<float> grads(model.lora_grads().begin(), model.lora_grads().end());
  CheckAllTensors(model, model.lora_layout(), model.lora_params().data(), grads.data(), batch);

  const std::vector<float> base(model.params().begin(), model.params().end());
  const float adapted = model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  model.MergeLora();
  EXPECT_NEAR(model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T), adapted,
              1e-5);
  for (const auto& t : model.layout().tensors()) {
    const bool same = std::memcmp(model.params().data() + t.offset, base.data() + t.offset,
                                  t.size * sizeof(float)) == 0;
    const bool adapted_weight = t.name.rfind("h.1.", 0) != 0 && t.name.rfind("h.", 0) == 0 &&
                                t.name.find("c_") != std::string::npos &&
                                t.name.find(".weight") != std::string::npos;
    EXPECT_EQ(same, !adapted_weight) << t.name;
  }
}

TEST(GptGradTest, LoraLayersAreChecked) {
  Gpt model(TinyConfig());
  LoraConfig lora;
  lora.layers = {1, 0};
  EXPECT_FALSE(model.EnableLora(lora, 1).ok()) << "descending layers accepted";
  lora.layers = {0, 2};
  Status beyond = model.EnableLora(lora, 1);
  ASSERT_FALSE(beyond.ok()) << "a block beyond n_layer accepted";
  EXPECT_NE(beyond.message().find("lora layer 2"), std::string::npos) << beyond.message();
  EXPECT_FALSE(model.has_lora());
}

TEST(GptGradTest, FreshLoraChangesNothingAndMergeMatches) {
  Gpt model(TinyConfig());
  model.InitWeights(44);
  const Batch batch = RandomBatch(3, 256);
  const float before = model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  ASSERT_TRUE(model.EnableLora(LoraConfig{}, 9).ok());
  EXPECT_FLOAT_EQ(model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T), before);
  Rng rng(10);
  for (float& p : model.lora_params()) p += static_cast<float>(rng.Normal()) * 0.1f;
  const float adapted = model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  EXPECT_NE(adapted, before);
  model.MergeLora();
  EXPECT_NEAR(model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T), adapted, 1e-5);
  model.UnmergeLora();
  EXPECT_NEAR(model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T), adapted, 1e-5);
}

TEST(GptTrainTest, OverfitsOneBatch) {
  ModelConfig c = TinyConfig();
  c.d_model = 32;
  Gpt model(c);
  model.InitWeights(1);
  const Batch batch = RandomBatch(4, 256);
  AdamWConfig opt_config;
  opt_config.weight_decay = 0.0f;
  AdamW opt(opt_config, model.layout());
  float first = 0.0f, last = 0.0f;
  for (int step = 0; step < 150; ++step) {
    model.ZeroGrad();
    last = model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    if (step == 0) first = last;
    model.Backward();
    ClipGradientNorm(model.grads(), 1.0);
    opt.Step(model.params(), model.grads(), 1e-2f);
  }
  EXPECT_NEAR(first, std::log(256.0f), 0.3f);  // random init predicts nearly uniformly
  EXPECT_LT(last, 0.1f) << "training did not memorise a single batch";
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// Threads split the batch; whatever the scheduling and whatever ran before, the same batch must
// give the same gradient to the last bit (resume and reproducibility depend on it). Batches
// alternate so that stale activations or scratch from a previous step would show.
TEST(GptDeterminismTest, SameBatchGivesBitIdenticalGradientsWhateverRanBefore) {
  ModelConfig c{256, 32, 64, 2, 4};
  Gpt model(c);
  model.InitWeights(12);
  const int B = 6, T = 32;
  Rng rng(13);
  std::vector<int32_t> tokens[2], targets[2];
  for (int k = 0; k < 2; ++k) {
    for (int i = 0; i < B * T; ++i) {
      tokens[k].push_back(static_cast<int32_t>(rng.Below(256)));
      targets[k].push_back(static_cast<int32_t>(rng.Below(256)));
    }
  }
  std::vector<float> first;
  float first_loss = 0.0f;
  for (int rep = 0; rep < 30; ++rep) {
    const int k = rep % 3 == 0 ? 0 : 1;  // batch 0 after batch 1, or after itself
    model.ZeroGrad();
    const float loss = model.Forward(tokens[k].data(), targets[k].data(), B, T);
    if (rep % 5 == 4) continue;  // a forward without backward, as an evaluation does
    model.Backward();
    if (k != 0) continue;
    if (first.empty()) {
      first.assign(model.grads().begin(), model.grads().end());
      first_loss = loss;
      continue;
    }
    ASSERT_EQ(loss, first_loss) << "rep " << rep;
    ASSERT_EQ(std::memcmp(first.data(), model.grads().data(), first.size() * sizeof(float)), 0)
        << "gradients differ at rep " << rep;
  }
}

}  // namespace
}  // namespace tandem

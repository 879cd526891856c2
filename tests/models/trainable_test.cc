// Trainable ranges: what Backward computes gradients for and what AdamW updates. Training with
// only the top block trainable must move the top block alone; a frozen tensor must receive no
// gradient; the trainable tensors' gradients must be those of full training, to the bit.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "models/adamw.h"
#include "models/gpt.h"

namespace tandem {
namespace {

ModelConfig SmallConfig() {
  ModelConfig c;
  c.vocab = 64;
  c.context = 16;
  c.d_model = 32;
  c.n_layer = 3;
  c.n_head = 4;
  return c;
}

struct Batch {
  int B = 4, T = 16;
  std::vector<int32_t> tokens, targets;
};

Batch RandomBatch(uint64_t seed, int vocab) {
  Rng rng(seed);
  Batch b;
  for (int i = 0; i < b.B * b.T; ++i) {
    b.tokens.push_back(static_cast<int32_t>(rng.Below(vocab)));
    b.targets.push_back(static_cast<int32_t>(rng.Below(vocab)));
  }
  return b;
}

bool InTopBlock(const std::string& name, int n_layer) {
  return name.rfind("h." + std::to_string(n_layer - 1) + ".", 0) == 0;
}

TEST(TrainableTest, BuildersSelectTheirTensors) {
  const ModelConfig c = SmallConfig();
  Gpt model(c);
  const ParamLayout& layout = model.layout();
  const Trainable all = Trainable::All(layout);
  ASSERT_EQ(all.ranges().size(), 1u);
  EXPECT_EQ(all.ranges()[0], (ParamRange{0, layout.total()}));
  EXPECT_TRUE(all.adapters());

  const Trainable adapters = Trainable::AdaptersOnly();
  EXPECT_FALSE(adapters.any_base());
  EXPECT_TRUE(adapters.adapters());

  // Bottom and top blocks: two ranges, one per contiguous group of blocks.
  const Trainable ends = Trainable::Blocks(c, layout, 1, 1);
  ASSERT_EQ(ends.ranges().size(), 2u);
  EXPECT_EQ(ends.ranges()[0].begin, layout.Find("h.0.ln_1.weight")->offset);
  EXPECT_EQ(ends.ranges()[0].end, layout.Find("h.1.ln_1.weight")->offset);
  EXPECT_EQ(ends.ranges()[1].begin, layout.Find("h.2.ln_1.weight")->offset);
  EXPECT_EQ(ends.ranges()[1].end, layout.Find("ln_f.weight")->offset);
  EXPECT_FALSE(ends.adapters());

  auto named = Trainable::Tensors(layout, {"ln_f.weight", "ln_f.bias"});
  ASSERT_TRUE(named.ok());
  Trainable top = Trainable::Blocks(c, layout, 0, 1);
  top.Add(*named);
  ASSERT_EQ(top.ranges().size(), 1u);  // h.2.* and ln_f are neighbours: one range
  EXPECT_EQ(top.ranges()[0], (ParamRange{layout.Find("h.2.ln_1.weight")->offset,
                                         layout.total()}));

  auto unknown = Trainable::Tensors(layout, {"h.7.ln_1.weight"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("h.7.ln_1.weight"), std::string::npos);
}

TEST(TrainableTest, TopBlockTrainingChangesOnlyTheTopBlock) {
  const ModelConfig c = SmallConfig();
  Gpt model(c);
  model.InitWeights(5);
  const std::vector<float> before(model.params().begin(), model.params().end());
  const Trainable top = Trainable::Blocks(c, model.layout(), 0, 1);
  model.set_trainable(top);
  AdamW opt(AdamWConfig{}, model.layout());  // weight decay 0.1: frozen weights must not decay
  for (int step = 0; step < 5; ++step) {
    const Batch batch = RandomBatch(100 + step, c.vocab);
    model.ZeroGrad();
    model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    model.Backward();
    for (const auto& t : model.layout().tensors()) {
      if (InTopBlock(t.name, c.n_layer)) continue;
      for (size_t i = 0; i < t.size; ++i) {
        ASSERT_EQ(model.grads()[t.offset + i], 0.0f) << "frozen " << t.name << " got a gradient";
      }
    }
    ClipGradientNorm(model.grads(), 1.0);
    opt.Step(model.params(), model.grads(), 1e-2f, model.trainable().ranges());
  }
  for (const auto& t : model.layout().tensors()) {
    const bool same = std::memcmp(before.data() + t.offset, model.params().data() + t.offset,
                                  t.size * sizeof(float)) == 0;
    if (InTopBlock(t.name, c.n_layer)) {
      EXPECT_FALSE(same) << t.name << " is trainable but did not change";
    } else {
      EXPECT_TRUE(same) << t.name << " is frozen but changed";
    }
  }
}

// Freezing must not change the gradients of what trains: the top block's gradient with
// everything below frozen (and the backward pass stopping early) equals full training's.
TEST(TrainableTest, TrainableGradientsEqualFullTrainingBitForBit) {
  const ModelConfig c = SmallConfig();
  Gpt full(c);
  full.InitWeights(6);
  Gpt partial(full);
  const Batch batch = RandomBatch(7, c.vocab);
  auto named = Trainable::Tensors(partial.layout(), {"h.1.mlp.c_fc.weight", "ln_f.bias"});
  ASSERT_TRUE(named.ok());
  Trainable trainable = Trainable::Blocks(c, partial.layout(), 0, 1);
  trainable.Add(*named);
  partial.set_trainable(trainable);
  for (Gpt* m : {&full, &partial}) {
    m->ZeroGrad();
    m->Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    m->Backward();
  }
  for (size_t i = 0; i < partial.layout().tensors().size(); ++i) {
    const TensorSpec& t = partial.layout().tensors()[i];
    const float* g = partial.grads().data() + t.offset;
    if (trainable.tensor(i)) {
      EXPECT_EQ(std::memcmp(g, full.grads().data() + t.offset, t.size * sizeof(float)), 0)
          << t.name;
    } else {
      for (size_t j = 0; j < t.size; ++j) ASSERT_EQ(g[j], 0.0f) << t.name;
    }
  }
}

TEST(TrainableTest, AdamWOverAllRangesEqualsPlainStep) {
  Gpt model(SmallConfig());
  model.InitWeights(8);
  Rng rng(9);
  std::vector<float> g(model.params().size());
  for (float& x : g) x = static_cast<float>(rng.Normal());
  std::vector<float> a(model.params().begin(), model.params().end()), b = a;
  AdamW opt_a(AdamWConfig{}, model.layout()), opt_b(AdamWConfig{}, model.layout());
  const Trainable all = Trainable::All(model.layout());
  for (int i = 0; i < 3; ++i) {
    opt_a.Step(a, g, 1e-2f);
    opt_b.Step(b, g, 1e-2f, all.ranges());
  }
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

TEST(TrainableTest, FrozenAdaptersStillPassGradientToTheBase) {
  // With adapters enabled but frozen and the base trainable, the base gradient must include the
  // adapters' path: compare against finite differences of one weight feeding an adapter.
  ModelConfig c = SmallConfig();
  c.n_layer = 1;
  Gpt model(c);
  model.InitWeights(10);
  LoraConfig lora;
  lora.rank = 2;
  ASSERT_TRUE(model.EnableLora(lora, 11).ok());
  Rng rng(12);
  for (float& p : model.lora_params()) p += static_cast<float>(rng.Normal()) * 0.3f;
  model.set_trainable(Trainable::All(model.layout()).set_adapters(false));
  const Batch batch = RandomBatch(13, c.vocab);
  model.ZeroGrad();
  model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  model.Backward();
  for (float g : model.lora_grads()) ASSERT_EQ(g, 0.0f) << "frozen adapter got a gradient";
  float* w = model.param("h.0.ln_1.weight");
  const float analytic = model.grad("h.0.ln_1.weight")[3];
  const float saved = w[3];
  const float eps = 1e-2f;
  w[3] = saved + eps;
  const double lp = model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  w[3] = saved - eps;
  const double lm = model.Forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
  w[3] = saved;
  EXPECT_NEAR(analytic, (lp - lm) / (2 * eps), 2e-2 * std::abs(analytic) + 1e-3);
}

}  // namespace
}  // namespace tandem

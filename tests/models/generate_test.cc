// Generation: the KV-cache path must produce the same logits as the full forward pass, and the
// samplers must respect temperature 0 and top-k.
#include <gtest/gtest.h>

#include <set>

#include "models/generate.h"
#include "models/gpt.h"

namespace tandem {
namespace {

TEST(GenerateTest, CachedLogitsMatchFullForward) {
  ModelConfig c{256, 24, 32, 2, 4};
  Gpt model(c);
  model.InitWeights(3);
  Rng rng(1);
  for (float& p : model.params()) p += 0.05f * static_cast<float>(rng.Normal());
  std::vector<int32_t> seq;
  for (int i = 0; i < 20; ++i) seq.push_back(static_cast<int32_t>(rng.Below(256)));
  model.Forward(seq.data(), nullptr, 1, static_cast<int>(seq.size()));
  std::vector<float> full(model.logits(), model.logits() + seq.size() * 256);
  Generator gen(model);
  for (size_t t = 0; t < seq.size(); ++t) {
    const float* l = gen.Feed(seq[t]);
    for (int v = 0; v < 256; ++v) ASSERT_NEAR(l[v], full[t * 256 + v], 2e-4) << "t=" << t;
  }
}

TEST(GenerateTest, ContextOverflowKeepsGenerating) {
  ModelConfig c{256, 8, 16, 1, 2};
  Gpt model(c);
  model.InitWeights(4);
  Generator gen(model);
  Rng rng(2);
  SamplingConfig s;
  auto out = gen.Generate({65, 66}, 30, s, rng);
  EXPECT_GE(out.size(), 1u);
  EXPECT_LE(gen.position(), c.context);
}

TEST(GenerateTest, GreedyIsArgmaxAndTopKRestricts) {
  std::vector<float> logits(10, 0.0f);
  logits[3] = 5.0f;
  logits[7] = 4.9f;
  logits[1] = 4.8f;
  Rng rng(5);
  SamplingConfig greedy;
  greedy.temperature = 0.0f;
  EXPECT_EQ(SampleToken(logits.data(), 10, greedy, rng), 3);
  SamplingConfig top2;
  top2.top_k = 2;
  std::set<int32_t> seen;
  for (int i = 0; i < 500; ++i) seen.insert(SampleToken(logits.data(), 10, top2, rng));
  EXPECT_EQ(seen, (std::set<int32_t>{3, 7}));
  SamplingConfig bad;
  bad.temperature = -1.0f;
  EXPECT_FALSE(bad.Validate().ok());
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

TEST(GenerateTest, ContextOfOneKeepsGenerating) {
  Gpt model(ModelConfig{256, 1, 16, 1, 2});
  model.InitWeights(5);
  Generator gen(model);
  Rng rng(3);
  SamplingConfig s;
  s.temperature = 0.0f;
  auto out = gen.Generate({65, 66, 67}, 5, s, rng);
  EXPECT_GE(out.size(), 1u);
}

}  // namespace
}  // namespace tandem

// Generation: the KV-cache path (GptWorkspace::Decode, one token or k tokens per call) must
// produce the logits of the full forward pass, truncating the cache must equal never having fed
// what was truncated, and the samplers must respect temperature 0 and top-k.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <string>

#include "models/generate.h"
#include "models/gpt.h"
#include "models/gpt_workspace.h"

namespace tandem {
namespace {

// Within 1e-5 of each other, relative to the logits' scale (which these tests keep near 1).
void ExpectClose(const float* got, const float* want, int n, const std::string& what) {
  float worst = 0.0f;
  for (int i = 0; i < n; ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  EXPECT_LE(worst, 1e-5f) << what;
}

// A perturbed model, uniform or with per-block head counts and MLP widths.
std::unique_ptr<Gpt> TestModel(bool uniform, int context = 24) {
  ModelConfig c{256, context, 32, 3, 4};
  if (!uniform) {
    c.d_head = 6;
    c.layer_n_head = {4, 1, 3};
    c.layer_d_mlp = {128, 40, 72};
  }
  auto model = std::make_unique<Gpt>(c);
  model->InitWeights(3);
  Rng rng(1);
  for (float& p : model->params()) p += 0.05f * static_cast<float>(rng.Normal());
  return model;
}

std::vector<int32_t> RandomTokens(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> seq;
  for (int i = 0; i < n; ++i) seq.push_back(static_cast<int32_t>(rng.Below(256)));
  return seq;
}

class DecodeTest : public testing::TestWithParam<bool> {};

// Feeding 1, 3 or 7 tokens per call (the last call shorter), every row of logits equals the full
// forward pass's row at that position.
TEST_P(DecodeTest, CachedDecodingMatchesFullForward) {
  auto model = TestModel(GetParam());
  const std::vector<int32_t> seq = RandomTokens(20, 2);
  const int T = static_cast<int>(seq.size());
  model->Forward(seq.data(), nullptr, 1, T);
  std::vector<float> full(model->logits(), model->logits() + T * 256);
  for (int k : {1, 3, 7}) {
    GptWorkspace ws(model->shared_weights());
    for (int t = 0; t < T; t += k) {
      const int n = std::min(k, T - t);
      const float* l = ws.Decode(seq.data() + t, n);
      for (int i = 0; i < n; ++i) {
        ExpectClose(l + i * 256, full.data() + (t + i) * 256, 256,
                    "k=" + std::to_string(k) + " t=" + std::to_string(t + i));
      }
    }
    EXPECT_EQ(ws.position(), T);
  }
}

// Rolling back rejected drafts: feed a prefix and a draft, truncate the draft, feed something
// else; the result is bit for bit what a cache that never saw the draft gives.
TEST_P(DecodeTest, TruncateThenRefeedEqualsNeverFeeding) {
  auto model = TestModel(GetParam());
  const std::vector<int32_t> prefix = RandomTokens(9, 3), draft = RandomTokens(5, 4),
                             other = RandomTokens(4, 5);
  GptWorkspace rolled(model->shared_weights()), clean(model->shared_weights());
  rolled.Decode(prefix.data(), 6);
  rolled.Decode(prefix.data() + 6, 3);
  rolled.Decode(draft.data(), 5);
  rolled.Truncate(9);
  EXPECT_EQ(rolled.position(), 9);
  const float* got = rolled.Decode(other.data(), 4);
  std::vector<float> a(got, got + 4 * 256);
  clean.Decode(prefix.data(), 6);
  clean.Decode(prefix.data() + 6, 3);
  const float* want = clean.Decode(other.data(), 4);
  EXPECT_EQ(std::memcmp(a.data(), want, a.size() * sizeof(float)), 0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, DecodeTest, testing::Values(true, false),
                         [](const auto& info) { return info.param ? "Uniform" : "NonUniform"; });

// When the context is full the generator keeps the most recent context/2 tokens and rebuilds
// the cache for them; its logits then equal a full forward pass over the kept tokens.
TEST(GenerateTest, RebuiltCacheMatchesFullForwardOverKeptTokens) {
  auto model = TestModel(false, /*context=*/8);
  const std::vector<int32_t> seq = RandomTokens(13, 6);
  Generator gen(*model);
  std::vector<int32_t> history;
  for (size_t i = 0; i < seq.size(); ++i) {
    const float* l = gen.Feed(seq[i]);
    history.push_back(seq[i]);
    if (static_cast<int>(history.size()) > 8) {
      // The generator kept the last 4 tokens before this one.
      history.erase(history.begin(), history.end() - 5);
    }
    ASSERT_EQ(gen.position(), static_cast<int>(history.size())) << "i=" << i;
    const int T = static_cast<int>(history.size());
    model->Forward(history.data(), nullptr, 1, T);
    ExpectClose(l, model->logits() + (T - 1) * 256, 256, "i=" + std::to_string(i));
  }
}

TEST(GenerateTest, FeedManyReturnsOneRowPerToken) {
  auto model = TestModel(true);
  const std::vector<int32_t> seq = RandomTokens(10, 7);
  Generator many(*model), one(*model);
  const float* l = many.FeedMany(seq.data(), 10);
  std::vector<float> rows(l, l + 10 * 256);
  for (int i = 0; i < 10; ++i) {
    ExpectClose(rows.data() + i * 256, one.Feed(seq[i]), 256, "row " + std::to_string(i));
  }
  many.Truncate(4);
  EXPECT_EQ(many.position(), 4);
  ExpectClose(many.Feed(seq[4]), rows.data() + 4 * 256, 256, "after truncation");
}

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
    for (int v = 0; v < 256; ++v) ASSERT_NEAR(l[v], full[t * 256 + v], 1e-5) << "t=" << t;
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

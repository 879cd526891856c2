// Proxy-tuning as an evaluation: with no steering it is the large model; steering a model by its
// own difference from a tuned model turns it into the tuned model; the loss matches an
// independent double-precision log-softmax of the combined logits; vocabularies must agree.
#include "train/proxy_tune.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "models/model_config.h"
#include "data/batcher.h"

namespace tandem {
namespace {

std::unique_ptr<Gpt> Model(uint64_t seed, int d_model = 32, int vocab = 256) {
  ModelConfig c;
  c.vocab = vocab;
  c.context = 16;
  c.d_model = d_model;
  c.n_layer = 1;
  c.n_head = 2;
  auto m = std::make_unique<Gpt>(c);
  m->InitWeights(seed);
  return m;
}

std::vector<Record> Text() {
  return {{"The quick brown fox jumps over the lazy dog.", "a"},
          {"Pack my box with five dozen liquor jugs!", "b"},
          {"How vexingly quick daft zebras jump.", "a"}};
}

TEST(ProxyTuneTest, WithoutSteeringItIsTheLargeModel) {
  auto large = Model(1, 48), tuned = Model(2), base = Model(3);
  StatusOr<LossResult> alone = EvaluateLoss(*large, Text(), 4);
  ASSERT_TRUE(alone.ok()) << alone.status().ToString();
  ProxyTuneOptions o;
  o.batch = 4;
  o.alpha = 0.0;
  StatusOr<LossResult> proxied = EvaluateProxyTuned(*large, *tuned, *base, Text(), o);
  ASSERT_TRUE(proxied.ok()) << proxied.status().ToString();
  // The same logits; the mean is summed in another order than the model's sharded forward.
  EXPECT_NEAR(proxied->loss, alone->loss, 1e-6 * alone->loss);
  EXPECT_EQ(proxied->tokens, alone->tokens);
  // A tuned model identical to its base steers nothing either: L + (S − S) = L exactly.
  auto twin = Model(3);
  o.alpha = 1.0;
  proxied = EvaluateProxyTuned(*large, *twin, *base, Text(), o);
  ASSERT_TRUE(proxied.ok());
  EXPECT_NEAR(proxied->loss, alone->loss, 1e-6 * alone->loss);
}

TEST(ProxyTuneTest, SteeringAModelByItselfGivesTheTunedModel) {
  // large == base: L + (S_tuned − L) = S_tuned, up to float rounding.
  auto large = Model(5), tuned = Model(6), base = Model(5);
  StatusOr<LossResult> target = EvaluateLoss(*tuned, Text(), 4);
  ASSERT_TRUE(target.ok());
  ProxyTuneOptions o;
  o.batch = 4;
  StatusOr<LossResult> proxied = EvaluateProxyTuned(*large, *tuned, *base, Text(), o);
  ASSERT_TRUE(proxied.ok());
  EXPECT_NEAR(proxied->loss, target->loss, 1e-5);
  StatusOr<LossResult> original = EvaluateLoss(*large, Text(), 4);
  ASSERT_TRUE(original.ok());
  EXPECT_GT(std::fabs(original->loss - target->loss), 1e-3) << "the test needs different models";
}

TEST(ProxyTuneTest, MatchesAnIndependentLogSoftmaxOfTheCombinedLogits) {
  auto large = Model(7, 48), tuned = Model(8), base = Model(9);
  const double alpha = 0.7;
  // The first evaluation window, as the evaluation walks it; every model sees the same tokens.
  const int T = 16;
  StatusOr<EvalWindows> windows = EvalWindows::Create(TokenDataset::FromRecords(Text()), 1, T);
  ASSERT_TRUE(windows.ok());
  std::vector<int32_t> tokens(T), next(T);
  ASSERT_GT(windows->Next(tokens.data(), next.data()), 0);
  std::vector<std::vector<float>> logits;
  for (Gpt* m : {large.get(), tuned.get(), base.get()}) {
    m->Forward(tokens.data(), nullptr, 1, T);
    logits.emplace_back(m->logits(), m->logits() + T * 256);
  }
  double expected = 0.0;
  for (int t = 0; t < T; ++t) {
    std::vector<double> z(256);
    double peak = -1e300;
    for (int v = 0; v < 256; ++v) {
      const size_t i = static_cast<size_t>(t) * 256 + v;
      z[v] = logits[0][i] + alpha * (double(logits[1][i]) - logits[2][i]);
      peak = std::max(peak, z[v]);
    }
    double sum = 0.0;
    for (double x : z) sum += std::exp(x - peak);
    ASSERT_GE(next[t], 0);
    expected += -(z[next[t]] - peak - std::log(sum));
  }
  expected /= T;
  ProxyTuneOptions o;
  o.batch = 1;
  o.alpha = alpha;
  o.max_tokens = T;  // the first window only
  StatusOr<LossResult> proxied =
      EvaluateProxyTuned(*large, *tuned, *base, Text(), o);
  ASSERT_TRUE(proxied.ok());
  ASSERT_EQ(proxied->tokens, T);
  EXPECT_NEAR(proxied->loss, expected, 1e-5 * expected);
}

TEST(ProxyTuneTest, RefusesModelsThatDoNotShareAVocabulary) {
  auto large = Model(1), tuned = Model(2, 32, 128), base = Model(3);
  StatusOr<LossResult> r = EvaluateProxyTuned(*large, *tuned, *base, Text());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("vocabulary"), std::string::npos);
  ProxyTuneOptions o;
  o.alpha = std::nan("");
  EXPECT_FALSE(EvaluateProxyTuned(*large, *base, *base, Text(), o).ok());
}

}  // namespace
}  // namespace tandem

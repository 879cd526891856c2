// Speculative decoding (route/speculative.h): its outputs follow the cloud's sampling
// distribution (a χ² test on the joint distribution of the first two generated tokens against
// probabilities computed exactly from the cloud model), greedy mode reproduces the cloud's own
// greedy decoding, a device equal to the cloud has every draft accepted, and bad drafts are
// refused. Also the sampling distributions of route/sampling.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <vector>

#include "core/threads.h"
#include "models/generate.h"
#include "models/gpt.h"
#include "models/gpt_workspace.h"
#include "route/sampling.h"
#include "route/speculative.h"

namespace tandem {
namespace {

// Tiny models: OpenMP's start-up and barriers would cost more than the work, and far more on a
// loaded machine.
class OneThread : public testing::Environment {
  void SetUp() override { SetComputeThreads(1); }
};
testing::Environment* const kOneThread = testing::AddGlobalTestEnvironment(new OneThread);

// A random model whose next-token distributions are far from uniform (weights perturbed by
// `noise`), so device and cloud disagree and the χ² test has power.
std::shared_ptr<Gpt> RandomModel(int vocab, int context, int d_model, int n_layer, uint64_t seed,
                                 float noise) {
  auto model = std::make_shared<Gpt>(ModelConfig{vocab, context, d_model, n_layer, 2});
  model->InitWeights(seed);
  Rng rng(seed * 7 + 1);
  for (float& p : model->params()) p += noise * static_cast<float>(rng.Normal());
  return model;
}

// The χ² statistic's upper (1 − α) quantile by Wilson–Hilferty (accurate to a few percent of
// the statistic for df >= 10, ample for a threshold).
double ChiSquareQuantile(int df, double z) {
  const double h = 2.0 / (9.0 * df);
  return df * std::pow(1.0 - h + z * std::sqrt(h), 3.0);
}
// z of the standard normal's upper 1e-4 tail: each χ² test below fails by chance once in 10⁴
// runs with a fresh seed (its seeds are fixed, so it is deterministic).
constexpr double kZ1e4 = 3.719;

struct ChiSquare {
  double statistic = 0.0;
  int df = 0;
};

// Pearson's χ² of `counts` against `probs` (same keys) over n draws; cells expected below 5 are
// pooled into one.
ChiSquare Pearson(const std::vector<int64_t>& counts, const std::vector<double>& probs,
                  int64_t n) {
  ChiSquare out;
  double pooled_expected = 0.0, pooled_count = 0.0;
  int cells = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    const double e = probs[i] * n;
    if (e < 5.0) {
      pooled_expected += e;
      pooled_count += counts[i];
      continue;
    }
    out.statistic += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  if (pooled_expected > 0.0) {
    // An expected count of 0 with draws in it is an impossible outcome: make it fail loudly.
    const double e = std::max(pooled_expected, 1e-9);
    out.statistic += (pooled_count - e) * (pooled_count - e) / e;
    ++cells;
  }
  out.df = cells - 1;
  return out;
}

// P(first two new tokens = (a, b)) under `model`'s sampling distribution, index a·V + b; a first
// token 0 is end-of-text, where generation stops: its cell is index 0.
std::vector<double> ExactPairProbs(const Gpt& model, const std::vector<int32_t>& prompt,
                                   const SamplingOptions& sampling) {
  const int V = model.config().vocab, P = static_cast<int>(prompt.size());
  GptWorkspace ws(model.shared_weights());
  std::vector<float> first(V), second(V);
  const float* logits = ws.Decode(prompt.data(), P) + static_cast<size_t>(P - 1) * V;
  SamplingProbs(logits, V, sampling, first.data());
  std::vector<double> out(static_cast<size_t>(V) * V, 0.0);
  out[0] = first[0];
  for (int32_t a = 1; a < V; ++a) {
    if (first[a] == 0.0f) continue;
    ws.Truncate(P);
    SamplingProbs(ws.Decode(&a, 1), V, sampling, second.data());
    for (int b = 0; b < V; ++b) out[a * V + b] = static_cast<double>(first[a]) * second[b];
  }
  return out;
}

TEST(SamplingTest, ProbsFollowTemperatureTopKAndTopP) {
  const float logits[] = {1.0f, 3.0f, 2.0f, 0.0f, 3.0f};
  float p[5];
  SamplingProbs(logits, 5, {0.0f, 0, 1.0f}, p);
  EXPECT_EQ(std::vector<float>(p, p + 5), (std::vector<float>{0, 1, 0, 0, 0}));  // ties: lower id

  SamplingProbs(logits, 5, {1.0f, 0, 1.0f}, p);
  double z = 0.0;
  for (float l : logits) z += std::exp(l);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(p[i], std::exp(logits[i]) / z, 1e-6);

  // Top-2 at temperature 0.5: tokens 1 and 4 (equal logits), half each.
  SamplingProbs(logits, 5, {0.5f, 2, 1.0f}, p);
  EXPECT_EQ(std::vector<float>(p, p + 5), (std::vector<float>{0, 0.5f, 0, 0, 0.5f}));

  // Top-p: the softmax sorted is {.392 (token 1), .392 (token 4), .144 (2), .053, .019}; the
  // smallest prefix with mass >= 0.85 is tokens 1, 4, 2, renormalised among themselves.
  SamplingProbs(logits, 5, {1.0f, 0, 0.85f}, p);
  const double k = 2 * std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(p[1], std::exp(3.0) / k, 1e-6);
  EXPECT_NEAR(p[4], std::exp(3.0) / k, 1e-6);
  EXPECT_NEAR(p[2], std::exp(2.0) / k, 1e-6);
  EXPECT_EQ(p[0], 0.0f);
  EXPECT_EQ(p[3], 0.0f);

  EXPECT_FALSE((SamplingOptions{-1.0f, 0, 1.0f}).Validate().ok());
  EXPECT_FALSE((SamplingOptions{1.0f, -2, 1.0f}).Validate().ok());
  EXPECT_FALSE((SamplingOptions{1.0f, 0, 0.0f}).Validate().ok());
  EXPECT_FALSE((SamplingOptions{1.0f, 0, 1.5f}).Validate().ok());
}

// The rejection rule alone, with made-up p and q: the first emitted token follows p.
TEST(SpeculativeAcceptTest, FirstTokenFollowsTargetDistribution) {
  const int V = 6, gamma = 2;
  const std::vector<float> q = {0.5f, 0.2f, 0.1f, 0.1f, 0.1f, 0.0f,   // row 0
                                0.1f, 0.1f, 0.2f, 0.2f, 0.2f, 0.2f};  // row 1
  const std::vector<float> p = {0.1f, 0.3f, 0.0f, 0.2f, 0.1f, 0.3f,
                                0.2f, 0.2f, 0.2f, 0.2f, 0.1f, 0.1f,
                                1.0f / 6, 1.0f / 6, 1.0f / 6, 1.0f / 6, 1.0f / 6, 1.0f / 6};
  Rng rng(11), device(12);
  const int64_t n = 40000;
  std::vector<int64_t> counts(V, 0);
  for (int64_t s = 0; s < n; ++s) {
    int32_t draft[gamma];
    for (int i = 0; i < gamma; ++i) {
      draft[i] = SampleFromProbs(std::span<const float>(q.data() + i * V, V), device);
    }
    const Verdict v = SpeculativeAccept(draft, q, p, V, rng);
    ASSERT_GE(v.accepted, 0);
    ASSERT_LE(v.accepted, gamma);
    ++counts[v.accepted > 0 ? draft[0] : v.next];
  }
  std::vector<double> want(p.begin(), p.begin() + V);
  const ChiSquare c = Pearson(counts, want, n);
  EXPECT_EQ(counts[2], 0) << "a token with p = 0 was emitted";
  EXPECT_LT(c.statistic, ChiSquareQuantile(c.df, kZ1e4)) << "df " << c.df;
}

struct ChiCase {
  SamplingOptions sampling;
  int gamma;
};

class SpeculativeChiSquareTest : public testing::TestWithParam<ChiCase> {};

// The joint distribution of the first two generated tokens, from 6000 speculative runs with
// tiny models (vocabulary 8: 64 cells), against the cloud's exact probabilities; and the same
// counts against the device's own distribution must fail, or the test had no power.
TEST_P(SpeculativeChiSquareTest, FirstTwoTokensFollowTheCloud) {
  const ChiCase& tc = GetParam();
  const int V = 8;
  auto cloud = RandomModel(V, 16, 16, 2, 21, 0.3f);
  auto device = RandomModel(V, 16, 16, 1, 22, 0.3f);
  const std::vector<int32_t> prompt = {1, 5, 2};
  const std::vector<double> want = ExactPairProbs(*cloud, prompt, tc.sampling);
  const std::vector<double> device_probs = ExactPairProbs(*device, prompt, tc.sampling);

  LocalVerifier verifier(cloud->shared_weights(), tc.sampling, 31);
  SpeculativeDecoder decoder(device->shared_weights(), &verifier, {tc.gamma, tc.sampling});
  Rng rng(32);
  const int64_t n = 6000;
  std::vector<int64_t> counts(V * V, 0);
  for (int64_t s = 0; s < n; ++s) {
    // Four new tokens: the first two come out of drafts, rejections and residual draws alike.
    auto out = decoder.Generate(prompt, 4, rng);
    ASSERT_TRUE(out.ok()) << out.status().message();
    ASSERT_FALSE(out->empty());
    ++counts[(*out)[0] == 0 ? 0 : (*out)[0] * V + (*out)[1]];
  }
  const ChiSquare c = Pearson(counts, want, n);
  const double limit = ChiSquareQuantile(c.df, kZ1e4);
  EXPECT_LT(c.statistic, limit) << "df " << c.df;
  const ChiSquare wrong = Pearson(counts, device_probs, n);
  EXPECT_GT(wrong.statistic, ChiSquareQuantile(wrong.df, kZ1e4)) << "df " << wrong.df;
  const SpeculativeStats& st = decoder.stats();
  EXPECT_GT(st.accepted, 0);
  EXPECT_LT(st.accepted, st.drafted);
  std::printf("chi2 %.1f (df %d, limit %.1f); against the device %.1f; acceptance %.3f, "
              "%.2f tokens per call\n",
              c.statistic, c.df, limit, wrong.statistic, st.acceptance_rate(),
              st.tokens_per_call());
}

INSTANTIATE_TEST_SUITE_P(
    Sampling, SpeculativeChiSquareTest,
    testing::Values(ChiCase{{1.0f, 0, 1.0f}, 3}, ChiCase{{0.8f, 5, 1.0f}, 2},
                    ChiCase{{1.3f, 0, 0.8f}, 3}, ChiCase{{1.0f, 4, 0.9f}, 1}));

TEST(SpeculativeTest, GreedyEqualsTheCloudsGreedyDecoding) {
  auto cloud = RandomModel(256, 64, 32, 2, 41, 0.1f);
  auto device = RandomModel(256, 64, 16, 1, 42, 0.1f);
  const SamplingOptions greedy{0.0f, 0, 1.0f};
  SamplingConfig greedy_config;
  greedy_config.temperature = 0.0f;
  for (int gamma : {1, 2, 4, 8}) {
    LocalVerifier verifier(cloud->shared_weights(), greedy, 1);
    SpeculativeDecoder decoder(device->shared_weights(), &verifier, {gamma, greedy});
    for (uint64_t seed : {1, 2, 3}) {
      std::vector<int32_t> prompt;
      Rng prompt_rng(seed);
      for (int i = 0; i < 5; ++i) prompt.push_back(1 + static_cast<int32_t>(prompt_rng.Below(255)));
      Generator reference(*cloud);
      Rng rng(seed);
      const std::vector<int32_t> want = reference.Generate(prompt, 40, greedy_config, rng);
      auto got = decoder.Generate(prompt, 40, rng);
      ASSERT_TRUE(got.ok()) << got.status().message();
      EXPECT_EQ(*got, want) << "gamma " << gamma << " seed " << seed;
    }
    EXPECT_LE(decoder.stats().tokens_per_call(), gamma + 1.0);
  }
}

TEST(SpeculativeTest, EveryDraftAcceptedWhenTheDeviceIsTheCloud) {
  auto cloud = RandomModel(256, 64, 32, 2, 51, 0.1f);
  for (const SamplingOptions& sampling :
       {SamplingOptions{1.0f, 0, 1.0f}, SamplingOptions{0.7f, 20, 0.9f}}) {
    LocalVerifier verifier(cloud->shared_weights(), sampling, 2);
    SpeculativeDecoder decoder(cloud->shared_weights(), &verifier, {4, sampling});
    Rng rng(3);
    const std::vector<int32_t> prompt = {10, 20, 30};
    for (int r = 0; r < 5; ++r) {
      auto out = decoder.Generate(prompt, 41, rng, /*stop_token=*/-2);
      ASSERT_TRUE(out.ok()) << out.status().message();
    }
    const SpeculativeStats& st = decoder.stats();
    EXPECT_GT(st.drafted, 0);
    EXPECT_EQ(st.accepted, st.drafted);
    EXPECT_DOUBLE_EQ(st.acceptance_rate(), 1.0);
  }
}

TEST(SpeculativeTest, StopsAtTheVerifiersContext) {
  auto cloud = RandomModel(256, 12, 16, 1, 61, 0.1f);
  auto device = RandomModel(256, 64, 16, 1, 62, 0.1f);
  LocalVerifier verifier(cloud->shared_weights(), {1.0f, 0, 1.0f}, 1);
  SpeculativeDecoder decoder(device->shared_weights(), &verifier, {4, {1.0f, 0, 1.0f}});
  Rng rng(1);
  const std::vector<int32_t> prompt = {65, 66, 67};
  auto out = decoder.Generate(prompt, 100, rng, -2);
  ASSERT_TRUE(out.ok()) << out.status().message();
  // Without an end-of-text drawn, the sequence fills the context of 12 (or ends at one).
  const bool ended = !out->empty() && out->back() == 0;
  if (!ended) {
    EXPECT_EQ(prompt.size() + out->size(), 12u);
  }
  EXPECT_LE(prompt.size() + out->size(), 12u);
}

TEST(SpeculativeTest, RefusesBadDraftsAndChangesNothing) {
  auto cloud = RandomModel(8, 16, 16, 1, 71, 0.3f);
  const SamplingOptions sampling{1.0f, 0, 1.0f};
  LocalVerifier verifier(cloud->shared_weights(), sampling, 5);
  LocalVerifier twin(cloud->shared_weights(), sampling, 5);
  const std::vector<int32_t> ctx = {1, 2};
  std::vector<float> q(2 * 8, 1.0f / 8);
  const std::vector<int32_t> draft = {3, 4};
  // Each bad request fails with a message, and the verifier then answers as its untouched twin.
  std::vector<float> negative = q;
  negative[3] = -0.1f;
  negative[4] += 0.1f;
  std::vector<float> zero_at_draft = q;
  zero_at_draft[3] = 0.0f;
  zero_at_draft[4] += 1.0f / 8;
  EXPECT_FALSE(verifier.Verify({}, draft, q).ok());
  EXPECT_FALSE(verifier.Verify(ctx, draft, std::vector<float>(8, 1.0f / 8)).ok());
  EXPECT_FALSE(verifier.Verify(std::vector<int32_t>{1, 9}, draft, q).ok());
  EXPECT_FALSE(verifier.Verify(ctx, std::vector<int32_t>{3, -1}, q).ok());
  EXPECT_FALSE(verifier.Verify(ctx, draft, negative).ok());
  EXPECT_FALSE(verifier.Verify(ctx, draft, zero_at_draft).ok());
  EXPECT_FALSE(verifier.Verify(std::vector<int32_t>(15, 1), draft, q).ok());
  std::vector<float> nan_q = q;
  nan_q[0] = NAN;
  EXPECT_FALSE(verifier.Verify(ctx, draft, nan_q).ok());
  for (int r = 0; r < 20; ++r) {
    auto a = verifier.Verify(ctx, draft, q);
    auto b = twin.Verify(ctx, draft, q);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->accepted, b->accepted);
    EXPECT_EQ(a->next, b->next);
  }
  // A device of another vocabulary is refused.
  auto other = RandomModel(16, 16, 16, 1, 72, 0.1f);
  SpeculativeDecoder decoder(other->shared_weights(), &verifier, {2, sampling});
  Rng rng(1);
  EXPECT_FALSE(decoder.Generate(ctx, 4, rng).ok());
  SpeculativeDecoder bad_gamma(cloud->shared_weights(), &verifier, {0, sampling});
  EXPECT_FALSE(bad_gamma.Generate(ctx, 4, rng).ok());
}

}  // namespace
}  // namespace tandem

// The policy-gradient term (route/policy_gradient.h): its gradient against central finite
// differences, on logits and through a GPT; the group advantages; and GAPG's estimator is
// unbiased on a toy bandit: the mean of many estimates matches the exact gradient of the
// expected reward within the estimator's standard error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "core/threads.h"
#include "models/cross_entropy.h"
#include "models/gpt.h"
#include "route/sampling.h"
#include "train/local_trainer.h"
#include "route/policy_gradient.h"
#include "tests/models/grad_check.h"

namespace tandem {
namespace {

class OneThread : public ::testing::Environment {
  void SetUp() override { SetComputeThreads(1); }
};
::testing::Environment* const kOneThread = ::testing::AddGlobalTestEnvironment(new OneThread);

TEST(GroupAdvantagesTest, GapgAndGrpo) {
  const std::vector<double> r = {1.0, 0.5, 0.0, 0.5};  // mean 0.5, sample sd sqrt(1/6)
  PolicyGradientOptions gapg;
  const auto a = GroupAdvantages(r, gapg);
  EXPECT_DOUBLE_EQ(a[0], 0.5 / 3);
  EXPECT_DOUBLE_EQ(a[1], 0.0);
  EXPECT_DOUBLE_EQ(a[2], -0.5 / 3);
  PolicyGradientOptions grpo;
  grpo.mode = AdvantageMode::kGrpo;
  grpo.grpo_epsilon = 1e-4;
  const auto g = GroupAdvantages(r, grpo);
  EXPECT_NEAR(g[0], 0.5 / ((std::sqrt(1.0 / 6) + 1e-4) * 4), 1e-12);
  EXPECT_NEAR(g[2], -g[0], 1e-12);
  // All equal: nothing to learn in either mode.
  for (double x : GroupAdvantages(std::vector<double>{0.5, 0.5, 0.5}, grpo)) EXPECT_EQ(x, 0.0);
  for (double x : GroupAdvantages(std::vector<double>{1, 1}, gapg)) EXPECT_EQ(x, 0.0);
  grpo.grpo_epsilon = 0.0;
  EXPECT_FALSE(grpo.Validate().ok());
}

TEST(PolicyGradientTest, LogitGradientMatchesFiniteDifferences) {
  const int N = 6, V = 9;
  Rng rng(3);
  std::vector<float> logits(N * V), coef(N), d(N * V);
  std::vector<int32_t> targets(N);
  for (float& x : logits) x = 2.0f * static_cast<float>(rng.Normal());
  for (int n = 0; n < N; ++n) {
    targets[n] = n == 2 ? kIgnoreTarget : static_cast<int32_t>(rng.Below(V));
    coef[n] = static_cast<float>(rng.Normal());
  }
  PolicyGradientBackward(d.data(), logits.data(), targets.data(), coef.data(), N, V, 0.5f);
  for (int v = 0; v < V; ++v) EXPECT_EQ(d[2 * V + v], 0.0f);  // an ignored row
  const auto r = testing::CheckGradient(
      logits.data(), testing::SpreadIndices(logits.size(), logits.size()), d.data(),
      [&] { return 0.5 * PolicyGradientForward(logits.data(), targets.data(), coef.data(), N, V); },
      1e-3, 1e-4);
  EXPECT_LT(r.max_rel_error, 1e-2) << "abs " << r.max_abs_error;
}

// Two prompts with groups of three completions of different lengths, rewards with ties.
std::vector<Rollout> FixedRollouts() {
  std::vector<Rollout> out(2);
  out[0].prompt = {0, 3, 4};
  out[0].completions = {{5, 6, 7}, {8}, {5, 9}};
  out[0].rewards = {1.0, 0.0, 0.5};
  out[1].prompt = {0, 1};
  out[1].completions = {{2, 2, 2, 2}, {3, 1}, {15}};
  out[1].rewards = {0.5, 0.5, 0.0};
  return out;
}

class PolicyGradientTermTest : public ::testing::TestWithParam<AdvantageMode> {};

TEST_P(PolicyGradientTermTest, ModelGradientMatchesFiniteDifferences) {
  Gpt model(ModelConfig{16, 16, 16, 2, 2});
  model.InitWeights(5);
  Rng init(6);
  for (float& p : model.params()) p += 0.2f * static_cast<float>(init.Normal());
  PolicyGradientOptions options;
  options.mode = GetParam();
  const std::vector<Rollout> rollouts = FixedRollouts();
  PolicyGradientTerm term([&](Gpt&, int64_t, Rng&) -> StatusOr<std::vector<Rollout>> {
    return rollouts;
  }, options, 1.5f);
  Rng rng(1);
  model.ZeroGrad();
  auto l = term.Accumulate(model, 0, rng);
  ASSERT_TRUE(l.ok()) << l.status().message();
  const std::vector<float> analytic(model.grads().begin(), model.grads().end());
  EXPECT_NEAR(term.last_mean_reward(), 2.5 / 6, 1e-12);
  auto loss = [&] {
    auto out = term.Accumulate(model, 0, rng);
    return out.ok() ? out->loss : NAN;
  };
  // Every tensor gets probed: embeddings, both blocks, the final LayerNorm.
  const auto r = testing::CheckGradient(model.params().data(),
                                        testing::SpreadIndices(model.params().size(), 300),
                                        analytic.data(), loss, 1e-2, 1e-3);
  EXPECT_LT(r.max_rel_error, 2e-2) << "abs " << r.max_abs_error << " over " << r.checked;
  double norm = 0.0;
  for (float g : analytic) norm += g * g;
  EXPECT_GT(norm, 1e-8);  // not vacuously zero
}

// End to end through the local trainer: a one-token "answer" after a fixed prompt, reward 1 for
// token 3, 0.5 for token 5, 0 otherwise. On-policy GAPG steps raise the expected reward under
// the model's own distribution (and GRPO's too), far beyond where it starts (about 1.5/8).
TEST_P(PolicyGradientTermTest, OnPolicyStepsRaiseTheExpectedReward) {
  Gpt model(ModelConfig{8, 8, 16, 1, 2});
  model.InitWeights(9);
  const std::vector<int32_t> prompt = {0, 1};
  auto next_probs = [&](Gpt& m) {
    GptWorkspace ws(m.shared_weights());
    const float* logits = ws.Decode(prompt.data(), 2) + 8;
    std::vector<float> p(8);
    SamplingProbs(logits, 8, {1.0f, 0, 1.0f}, p.data());
    return p;
  };
  auto reward = [](int32_t t) { return t == 3 ? 1.0 : t == 5 ? 0.5 : 0.0; };
  auto expected = [&](Gpt& m) {
    const auto p = next_probs(m);
    double e = 0.0;
    for (int t = 0; t < 8; ++t) e += p[t] * reward(t);
    return e;
  };
  PolicyGradientOptions options;
  options.mode = GetParam();
  PolicyGradientTerm term([&](Gpt& m, int64_t, Rng& rng) -> StatusOr<std::vector<Rollout>> {
    const auto p = next_probs(m);
    Rollout r;
    r.prompt = prompt;
    for (int i = 0; i < 8; ++i) {
      const int32_t t = SampleFromProbs(p, rng);
      r.completions.push_back({t});
      r.rewards.push_back(reward(t));
    }
    return std::vector<Rollout>{r};
  }, options);
  LocalTrainer trainer(&model, TrainerOptions{});
  Rng rng(10);
  const double before = expected(model);
  auto report = trainer.Run({&term}, 60, 2e-2f, rng);
  ASSERT_TRUE(report.ok()) << report.status().message();
  const double after = expected(model);
  EXPECT_LT(before, 0.35);
  EXPECT_GT(after, 0.8) << "from " << before;
  std::printf("expected reward %.3f -> %.3f after 60 steps\n", before, after);
}

INSTANTIATE_TEST_SUITE_P(Modes, PolicyGradientTermTest,
                         ::testing::Values(AdvantageMode::kGapg, AdvantageMode::kGrpo));

TEST(PolicyGradientTest, RejectsBadRollouts) {
  Gpt model(ModelConfig{16, 8, 16, 1, 2});
  model.InitWeights(1);
  Rng rng(1);
  auto run = [&](Rollout r) {
    PolicyGradientTerm term([r](Gpt&, int64_t, Rng&) -> StatusOr<std::vector<Rollout>> {
      return std::vector<Rollout>{r};
    }, {});
    return term.Accumulate(model, 0, rng).status();
  };
  Rollout good{{0, 1}, {{2}, {3}}, {1.0, 0.0}};
  EXPECT_TRUE(run(good).ok());
  Rollout one = good;
  one.completions.pop_back();
  one.rewards.pop_back();
  EXPECT_FALSE(run(one).ok());
  Rollout range = good;
  range.completions[0] = {16};
  EXPECT_FALSE(run(range).ok());
  Rollout rewards = good;
  rewards.rewards = {1.0};
  EXPECT_FALSE(run(rewards).ok());
  Rollout nan = good;
  nan.rewards[0] = NAN;
  EXPECT_FALSE(run(nan).ok());
  Rollout long_one = good;
  long_one.completions[0] = std::vector<int32_t>(8, 1);
  EXPECT_FALSE(run(long_one).ok());
  Rollout empty = good;
  empty.completions[1].clear();
  EXPECT_FALSE(run(empty).ok());
}

// A K-armed bandit with a softmax policy on logits θ: arm a pays a_a = 1 with probability s_a,
// a_c = 0.4 with probability h_a, else 0. The exact gradient of the expected reward is
// ∂E[r]/∂θ_j = π_j (R_j − Σ_k π_k R_k). One GAPG estimate from a group of G pulls is minus the
// gradient of the surrogate, which PolicyGradientBackward gives in the logits (rows = pulls).
TEST(PolicyGradientTest, GapgIsUnbiasedOnABandit) {
  const int K = 5;
  const std::vector<float> theta = {0.3f, -0.5f, 1.0f, 0.0f, -1.2f};
  const std::vector<double> s = {0.9, 0.2, 0.5, 0.1, 0.6}, h = {0.05, 0.6, 0.3, 0.1, 0.3};
  std::vector<double> pi(K), R(K);
  double z = 0.0;
  for (int k = 0; k < K; ++k) z += std::exp(theta[k]);
  double ER = 0.0;
  for (int k = 0; k < K; ++k) {
    pi[k] = std::exp(theta[k]) / z;
    R[k] = 1.0 * s[k] + 0.4 * h[k];
    ER += pi[k] * R[k];
  }
  std::vector<double> exact(K);
  for (int k = 0; k < K; ++k) exact[k] = pi[k] * (R[k] - ER);

  for (int G : {2, 4, 8}) {
    Rng rng(100 + G);
    const int M = 40000;
    std::vector<double> sum(K, 0.0), sum_sq(K, 0.0);
    std::vector<float> logits(G * K), coef(G), d(G * K);
    std::vector<int32_t> arms(G);
    std::vector<double> rewards(G);
    for (int g = 0; g < G; ++g) std::copy(theta.begin(), theta.end(), logits.begin() + g * K);
    for (int m = 0; m < M; ++m) {
      for (int g = 0; g < G; ++g) {
        double u = rng.Uniform();
        int a = 0;
        while (a + 1 < K && u >= pi[a]) u -= pi[a++];
        arms[g] = a;
        const double v = rng.Uniform();
        rewards[g] = v < s[a] ? 1.0 : v < s[a] + h[a] ? 0.4 : 0.0;
      }
      const auto adv = GroupAdvantages(rewards, {});
      for (int g = 0; g < G; ++g) coef[g] = static_cast<float>(adv[g]);
      PolicyGradientBackward(d.data(), logits.data(), arms.data(), coef.data(), G, K);
      for (int k = 0; k < K; ++k) {
        double est = 0.0;  // −d(loss)/dθ_k: the rows share θ
        for (int g = 0; g < G; ++g) est -= d[g * K + k];
        sum[k] += est;
        sum_sq[k] += est * est;
      }
    }
    for (int k = 0; k < K; ++k) {
      const double mean = sum[k] / M;
      const double se = std::sqrt((sum_sq[k] / M - mean * mean) / (M - 1));
      // 4.4 standard errors: a chance failure about once in 10⁵ per component (5·3 compared).
      EXPECT_LT(std::abs(mean - exact[k]), 4.4 * se)
          << "G " << G << " arm " << k << ": mean " << mean << " exact " << exact[k] << " se "
          << se;
    }
  }
}

}  // namespace
}  // namespace tandem

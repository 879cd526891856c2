// Ensemble targets (distill/ensemble.h): identical members, probability vs logit averaging when
// members disagree, order independence, weights, the upload-and-sum path, and noisy means.
#include "distill/ensemble.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/rng.h"
#include "distill/kd_loss.h"

namespace tandem {
namespace {

std::vector<float> Random(size_t n, Rng& rng, float scale) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal()) * scale;
  return v;
}

// softmax(z/T) per row, in double.
std::vector<double> Softmax(const std::vector<float>& z, int N, int V, float T) {
  std::vector<double> p(z.size());
  for (int i = 0; i < N; ++i) {
    double mx = -1e300, sum = 0.0;
    for (int v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(z[i * V + v]) / T);
    for (int v = 0; v < V; ++v) sum += (p[i * V + v] = std::exp(z[i * V + v] / T - mx));
    for (int v = 0; v < V; ++v) p[i * V + v] /= sum;
  }
  return p;
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0.0;
  for (size_t j = 0; j < a.size(); ++j) d = std::max(d, std::abs(a[j] - b[j]));
  return d;
}

TEST(EnsembleTest, IdenticalMembersGiveTheMember) {
  const int N = 6, V = 40;
  const float T = 2.0f;
  Rng rng(1);
  auto z = Random(N * V, rng, 3.0f);
  const auto p = Softmax(z, N, V, T);
  for (EnsembleMode mode : {EnsembleMode::kMeanProbabilities, EnsembleMode::kMeanLogits}) {
    EnsembleAccumulator acc(N, V, T, mode);
    for (int m = 0; m < 4; ++m) acc.Add(z.data());
    EXPECT_EQ(acc.members(), 4);
    const auto mean = acc.Mean();
    const auto teacher = acc.TeacherLogits();
    if (mode == EnsembleMode::kMeanProbabilities) {
      for (size_t j = 0; j < p.size(); ++j) EXPECT_NEAR(mean[j], p[j], 1e-7);
    } else {
      for (size_t j = 0; j < z.size(); ++j) EXPECT_NEAR(mean[j], z[j], 1e-6);
    }
    // Either way the teacher's distribution at T is the member's.
    EXPECT_LT(MaxAbsDiff(Softmax(teacher, N, V, T), p), 1e-6);
    // And a student equal to the member has zero KD loss against it.
    EXPECT_NEAR(KdForward(z.data(), teacher.data(), nullptr, N, V, {T, 0.0f}).kl, 0.0, 1e-6);
  }
}

TEST(EnsembleTest, ProbabilityAndLogitAveragingDifferWhenMembersDisagree) {
  const int N = 1, V = 3;
  const float T = 1.0f;
  // Member a is sure of token 0 and rules out token 1; member b the reverse; both give token 2
  // a little mass.
  const std::vector<float> a = {4.0f, -8.0f, 0.0f}, b = {-8.0f, 4.0f, 0.0f};
  EnsembleAccumulator probs(N, V, T, EnsembleMode::kMeanProbabilities);
  EnsembleAccumulator logits(N, V, T, EnsembleMode::kMeanLogits);
  for (const auto* m : {&a, &b}) {
    probs.Add(m->data());
    logits.Add(m->data());
  }
  const auto pa = Softmax(a, N, V, T), pb = Softmax(b, N, V, T);
  const auto mix = Softmax(probs.TeacherLogits(), N, V, T);
  const auto geo = Softmax(logits.TeacherLogits(), N, V, T);
  // Mixture: exactly the mean of the members' distributions; tokens 0 and 1 keep ~half each.
  for (int v = 0; v < V; ++v) EXPECT_NEAR(mix[v], 0.5 * (pa[v] + pb[v]), 1e-7);
  EXPECT_GT(mix[0], 0.45);
  EXPECT_GT(mix[1], 0.45);
  // Logit mean: the normalised geometric mean sqrt(pa·pb). Each member's veto survives, so the
  // token neither member favoured becomes the ensemble's most likely one.
  double g[3], gs = 0.0;
  for (int v = 0; v < V; ++v) gs += (g[v] = std::sqrt(pa[v] * pb[v]));
  for (int v = 0; v < V; ++v) EXPECT_NEAR(geo[v], g[v] / gs, 1e-6);
  EXPECT_GT(geo[2], 0.7);
  EXPECT_LT(geo[0], 0.15);
  EXPECT_GT(MaxAbsDiff(mix, geo), 0.3);
}

TEST(EnsembleTest, OrderOfMembersDoesNotMatter) {
  const int N = 8, V = 64, M = 6;
  const float T = 1.5f;
  Rng rng(3);
  std::vector<std::vector<float>> members;
  for (int m = 0; m < M; ++m) members.push_back(Random(N * V, rng, 2.0f + m));
  for (EnsembleMode mode : {EnsembleMode::kMeanProbabilities, EnsembleMode::kMeanLogits}) {
    EnsembleAccumulator fwd(N, V, T, mode), rev(N, V, T, mode), shuffled(N, V, T, mode);
    for (int m = 0; m < M; ++m) fwd.Add(members[m].data(), 1.0 + m);
    for (int m = M - 1; m >= 0; --m) rev.Add(members[m].data(), 1.0 + m);
    for (int m : {3, 0, 5, 1, 4, 2}) shuffled.Add(members[m].data(), 1.0 + m);
    for (const auto* other : {&rev, &shuffled}) {
      // Relative to the value: the float result of a double sum may round either way.
      const auto a = fwd.Mean(), b = other->Mean();
      for (size_t j = 0; j < a.size(); ++j) {
        ASSERT_NEAR(a[j], b[j], 1e-6 * std::max(1.0f, std::abs(a[j])));
      }
      const auto pa = Softmax(fwd.TeacherLogits(), N, V, T);
      const auto pb = Softmax(other->TeacherLogits(), N, V, T);
      EXPECT_LT(MaxAbsDiff(pa, pb), 1e-6);
    }
  }
}

TEST(EnsembleTest, WeightCountsLikeRepeatedMembers) {
  const int N = 3, V = 10;
  Rng rng(4);
  auto a = Random(N * V, rng, 1.0f), b = Random(N * V, rng, 1.0f);
  EnsembleAccumulator weighted(N, V, 1.0f), repeated(N, V, 1.0f);
  weighted.Add(a.data(), 3.0);
  weighted.Add(b.data(), 1.0);
  for (int r = 0; r < 3; ++r) repeated.Add(a.data());
  repeated.Add(b.data());
  const auto x = weighted.Mean(), y = repeated.Mean();
  for (size_t j = 0; j < x.size(); ++j) EXPECT_NEAR(x[j], y[j], 1e-7);
  EXPECT_EQ(weighted.total_weight(), 4.0);
}

// What secure aggregation sees: each member uploads its contribution, the sum is divided by the
// member count, and teacher logits come from that mean — the same as the accumulator.
TEST(EnsembleTest, UploadedContributionsSumToTheAccumulatorsResult) {
  const int N = 5, V = 30, M = 4;
  const float T = 2.5f;
  Rng rng(5);
  for (EnsembleMode mode : {EnsembleMode::kMeanProbabilities, EnsembleMode::kMeanLogits}) {
    EnsembleAccumulator acc(N, V, T, mode);
    std::vector<float> sum(N * V, 0.0f), contribution(N * V);
    for (int m = 0; m < M; ++m) {
      auto z = Random(N * V, rng, 2.0f);
      acc.Add(z.data());
      EnsembleContribution(contribution.data(), z.data(), N, V, T, mode);
      for (int j = 0; j < N * V; ++j) sum[j] += contribution[j];
    }
    for (auto& x : sum) x /= M;
    std::vector<float> teacher(N * V);
    EnsembleTeacherLogits(teacher.data(), sum.data(), N, V, T, mode);
    const auto expected = acc.TeacherLogits();
    EXPECT_LT(MaxAbsDiff(Softmax(teacher, N, V, T), Softmax(expected, N, V, T)), 1e-6);
  }
}

// DP noise on a summed probability upload can leave entries at or below zero: the teacher stays
// finite and is a distribution.
TEST(EnsembleTest, NoisyMeanProbabilitiesStillGiveADistribution) {
  const int N = 2, V = 5;
  const float T = 1.0f;
  std::vector<float> mean = {0.5f, -0.1f, 0.0f, 0.4f, 0.3f, 0.2f, 0.2f, 0.2f, 0.2f, 0.2f};
  std::vector<float> teacher(N * V);
  EnsembleTeacherLogits(teacher.data(), mean.data(), N, V, T, EnsembleMode::kMeanProbabilities);
  for (float x : teacher) ASSERT_TRUE(std::isfinite(x));
  const auto p = Softmax(teacher, N, V, T);
  double s0 = 0.0;
  for (int v = 0; v < V; ++v) s0 += p[v];
  EXPECT_NEAR(s0, 1.0, 1e-9);
  EXPECT_NEAR(p[0], 0.5 / 1.2, 1e-6);  // renormalised over the clamped row
  EXPECT_LT(p[1], 1e-20);
  for (int v = 0; v < V; ++v) EXPECT_NEAR(p[V + v], 0.2, 1e-6);
}

}  // namespace
}  // namespace tandem

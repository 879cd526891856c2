// Confidence-weighted ensembles (distill/confidence.h) and confidence-weighted distillation
// (distill/kd_loss.h row weights, distill/kd_terms.h KdConfidence): the ensemble equals
// Σ w·p / Σ w computed independently in double; uploads are validated; a masked row gets no
// KD gradient and a weight scales it; the weighted loss's gradient matches finite differences.
#include "distill/confidence.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/rng.h"
#include "distill/ensemble.h"
#include "distill/kd_loss.h"
#include "distill/kd_terms.h"

namespace tandem {
namespace {

std::vector<float> Random(size_t n, Rng& rng, float scale) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal()) * scale;
  return v;
}

// softmax(z/T) of one row, in double.
std::vector<double> Softmax(const float* z, int V, double T) {
  std::vector<double> p(V);
  double mx = -1e300, sum = 0.0;
  for (int v = 0; v < V; ++v) mx = std::max(mx, z[v] / T);
  for (int v = 0; v < V; ++v) sum += (p[v] = std::exp(z[v] / T - mx));
  for (double& x : p) x /= sum;
  return p;
}

TEST(ConfidenceEnsembleTest, EqualsTheWeightedFormulaComputedIndependently) {
  const int N = 7, V = 33, M = 5;
  const float T = 2.0f;
  Rng rng(3);
  std::vector<std::vector<float>> logits;
  for (int m = 0; m < M; ++m) logits.push_back(Random(N * V, rng, 1.0f + m));  // sharper members
  std::vector<double> sum(ConfidenceContributionLength(N, V), 0.0);
  std::vector<float> upload(sum.size());
  for (const auto& z : logits) {
    ConfidenceContribution(upload.data(), z.data(), N, V, T);
    ASSERT_TRUE(CheckConfidenceContribution(upload, N, V).ok());
    for (size_t j = 0; j < sum.size(); ++j) sum[j] += upload[j];
  }
  std::vector<float> mean(sum.size());
  for (size_t j = 0; j < sum.size(); ++j) mean[j] = static_cast<float>(sum[j] / M);
  std::vector<float> ensemble(N * V);
  ConfidenceEnsemble(ensemble.data(), mean.data(), N, V);
  // Independently: w = max softmax(z) at T = 1, p = softmax(z/T), Σ w·p / Σ w in double.
  for (int i = 0; i < N; ++i) {
    std::vector<double> num(V, 0.0);
    double den = 0.0;
    for (const auto& z : logits) {
      const auto p1 = Softmax(z.data() + i * V, V, 1.0);
      const double w = *std::max_element(p1.begin(), p1.end());
      const auto pt = Softmax(z.data() + i * V, V, T);
      for (int v = 0; v < V; ++v) num[v] += w * pt[v];
      den += w;
    }
    double row = 0.0;
    for (int v = 0; v < V; ++v) {
      EXPECT_NEAR(ensemble[i * V + v], num[v] / den, 1e-6) << i << "," << v;
      row += ensemble[i * V + v];
    }
    EXPECT_NEAR(row, 1.0, 1e-5);
  }
  // The confident member pulls harder than in the plain mean: member 4 has the sharpest logits.
  EnsembleAccumulator plain(N, V, T);
  for (const auto& z : logits) plain.Add(z.data());
  const auto plain_mean = plain.Mean();
  std::vector<float> sharp(N * V);
  EnsembleContribution(sharp.data(), logits[4].data(), N, V, T, EnsembleMode::kMeanProbabilities);
  double d_weighted = 0.0, d_plain = 0.0;
  for (int j = 0; j < N * V; ++j) {
    d_weighted += std::fabs(ensemble[j] - sharp[j]);
    d_plain += std::fabs(plain_mean[j] - sharp[j]);
  }
  EXPECT_LT(d_weighted, d_plain);
}

TEST(ConfidenceEnsembleTest, AWeightSumNearZeroIsFlooredNotDividedBy) {
  const int N = 2, V = 3;
  // Row 0: Σw below the floor (DP noise took it there); row 1: negative.
  const std::vector<float> sum = {1e-9f, 2e-9f, 0.0f, 0.3f, 0.1f, 0.0f, 1e-9f, -0.2f};
  std::vector<float> p(N * V);
  ConfidenceEnsemble(p.data(), sum.data(), N, V);
  for (float x : p) EXPECT_TRUE(std::isfinite(x));
  EXPECT_FLOAT_EQ(p[0], static_cast<float>(1e-9 / kConfidenceWeightFloor));
  EXPECT_FLOAT_EQ(p[3], static_cast<float>(0.3 / kConfidenceWeightFloor));
  std::vector<float> teacher(N * V);
  EnsembleTeacherLogits(teacher.data(), p.data(), N, V, 1.0f, EnsembleMode::kMeanProbabilities);
  const auto q = Softmax(teacher.data() + V, V, 1.0);
  EXPECT_NEAR(q[0], 0.75, 1e-6);  // the renormalised row keeps its shape
}

TEST(ConfidenceEnsembleTest, UploadsThatAreNotConfidenceContributionsAreRefused) {
  const int N = 3, V = 8;
  Rng rng(9);
  const auto z = Random(N * V, rng, 2.0f);
  std::vector<float> good(ConfidenceContributionLength(N, V));
  ConfidenceContribution(good.data(), z.data(), N, V, 1.5f);
  ASSERT_TRUE(CheckConfidenceContribution(good, N, V).ok());
  EXPECT_FALSE(CheckConfidenceContribution(std::vector<float>(good.begin(), good.end() - 1), N, V).ok());
  auto bad = good;
  bad[N * V + 1] = 1.5f;  // a weight above 1 would outweigh the others
  EXPECT_FALSE(CheckConfidenceContribution(bad, N, V).ok());
  bad = good;
  for (int v = 0; v < V; ++v) bad[V + v] *= 2.0f;  // row 1 sums to 2w
  EXPECT_FALSE(CheckConfidenceContribution(bad, N, V).ok());
  bad = good;
  bad[0] = -0.01f;
  EXPECT_FALSE(CheckConfidenceContribution(bad, N, V).ok());
}

// Row weights in the dense KD loss: a row of weight 0 has no KD gradient (its CE stays), a weight
// r scales the row's KD gradient by r exactly, and null weights are the unweighted bits.
TEST(ConfidenceDistillTest, MaskedRowsGetNoKdGradientAndWeightsScaleIt) {
  const int N = 6, V = 11;
  Rng rng(4);
  const auto s = Random(N * V, rng, 1.0f), t = Random(N * V, rng, 2.0f);
  std::vector<int32_t> y(N);
  for (int i = 0; i < N; ++i) y[i] = static_cast<int32_t>(rng.Below(V));
  KdOptions opt{2.0f, 0.0f};
  std::vector<float> plain(N * V), weighted(N * V), ones(N, 1.0f);
  const KdLoss l0 = KdForward(s.data(), t.data(), y.data(), N, V, opt);
  KdBackward(plain.data(), s.data(), t.data(), y.data(), N, V, opt, l0.count);
  const KdLoss l1 = KdForward(s.data(), t.data(), y.data(), N, V, opt, ones.data());
  KdBackward(weighted.data(), s.data(), t.data(), y.data(), N, V, opt, l1.count, 1.0f, ones.data());
  EXPECT_EQ(l0.loss, l1.loss);
  EXPECT_EQ(plain, weighted) << "weights of 1 are the unweighted bits";
  const std::vector<float> r = {1.0f, 0.0f, 0.5f, 0.25f, 0.0f, 2.0f};
  KdBackward(weighted.data(), s.data(), t.data(), y.data(), N, V, opt, l0.count, 1.0f, r.data());
  for (int i = 0; i < N; ++i) {
    for (int v = 0; v < V; ++v) {
      EXPECT_NEAR(weighted[i * V + v], r[i] * plain[i * V + v], 1e-7) << i;
      if (r[i] == 0.0f) {
        EXPECT_EQ(weighted[i * V + v], 0.0f);
      }
    }
  }
  // With α > 0 a masked row keeps its CE gradient: the same as α·CE alone there.
  KdOptions mixed{2.0f, 0.4f};
  KdOptions ce_only{2.0f, 1.0f};
  std::vector<float> ce(N * V);
  KdBackward(weighted.data(), s.data(), t.data(), y.data(), N, V, mixed, N, 1.0f, r.data());
  KdBackward(ce.data(), s.data(), t.data(), y.data(), N, V, ce_only, N, 0.4f);
  for (int v = 0; v < V; ++v) EXPECT_NEAR(weighted[1 * V + v], ce[1 * V + v], 1e-7);
  // The loss: Σ r_i·kl_i / count.
  double expected = 0.0;
  for (int i = 0; i < N; ++i) {
    expected += r[i] * KdForward(s.data() + i * V, t.data() + i * V, y.data() + i, 1, V, opt).kl;
  }
  EXPECT_NEAR(KdForward(s.data(), t.data(), y.data(), N, V, opt, r.data()).kl, expected / N, 1e-9);
}

TEST(ConfidenceDistillTest, WeightedGradientMatchesFiniteDifferences) {
  const int N = 4, V = 7;
  Rng rng(12);
  auto s = Random(N * V, rng, 1.0f);
  const auto t = Random(N * V, rng, 1.5f);
  std::vector<int32_t> y = {1, kIgnoreTarget, 5, 2};
  const std::vector<float> r = {0.3f, 1.0f, 0.0f, 0.8f};
  const KdOptions opt{1.5f, 0.3f};
  const KdLoss l = KdForward(s.data(), t.data(), y.data(), N, V, opt, r.data());
  std::vector<float> d(N * V);
  KdBackward(d.data(), s.data(), t.data(), y.data(), N, V, opt, l.count, 1.0f, r.data());
  double worst = 0.0;
  for (size_t j = 0; j < s.size(); ++j) {
    const float saved = s[j];
    const float xp = saved + 1e-3f, xm = saved - 1e-3f;
    s[j] = xp;
    const double lp = KdForward(s.data(), t.data(), y.data(), N, V, opt, r.data()).loss;
    s[j] = xm;
    const double lm = KdForward(s.data(), t.data(), y.data(), N, V, opt, r.data()).loss;
    s[j] = saved;
    const double numeric = (lp - lm) / (static_cast<double>(xp) - xm);
    worst = std::max(worst, std::fabs(numeric - d[j]) / std::max(std::fabs(numeric) + std::fabs(d[j]), 1e-4));
  }
  EXPECT_LT(worst, 2e-3);
}

TEST(ConfidenceDistillTest, TheThresholdMasksPositionsWhoseTeacherIsUnsure) {
  const int V = 4;
  // Row 0: max-probability 0.7; row 1: uniform (0.25); row 2: 0.97.
  std::vector<float> t;
  for (const std::vector<double>& p : std::vector<std::vector<double>>{
           {0.7, 0.1, 0.1, 0.1}, {0.25, 0.25, 0.25, 0.25}, {0.97, 0.01, 0.01, 0.01}}) {
    for (double x : p) t.push_back(static_cast<float>(std::log(x)));  // logits at T = 1
  }
  std::vector<float> w(3);
  EXPECT_EQ(KdConfidenceWeights(w.data(), t.data(), 3, V, 1.0f, KdConfidence{0.5, false}), 1);
  EXPECT_EQ(w, (std::vector<float>{1.0f, 0.0f, 1.0f}));
  EXPECT_EQ(KdConfidenceWeights(w.data(), t.data(), 3, V, 1.0f, KdConfidence{0.8, true}), 2);
  EXPECT_FLOAT_EQ(w[2], 0.97f);
  EXPECT_EQ(w[0], 0.0f);
  EXPECT_EQ(KdConfidenceWeights(w.data(), t.data(), 3, V, 1.0f, KdConfidence{0.0, true}), 0);
  EXPECT_FLOAT_EQ(w[0], 0.7f);
  EXPECT_FLOAT_EQ(w[1], 0.25f);
  // At T = 2 the teacher is read at T: row 0's max-probability falls below 0.5.
  EXPECT_EQ(KdConfidenceWeights(w.data(), t.data(), 3, V, 2.0f, KdConfidence{0.5, false}), 2);
}

}  // namespace
}  // namespace tandem

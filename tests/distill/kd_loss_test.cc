// KD loss (distill/kd_loss.h): gradients against central finite differences for the dense and
// top-k forms, top-k with k = V against dense, the top-k loss against its explicit definition,
// ignored rows, sharded backward, numerical stability and argument checks.
#include "distill/kd_loss.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "distill/topk.h"

namespace tandem {
namespace {

std::vector<float> Random(size_t n, Rng& rng, float scale) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal()) * scale;
  return v;
}

std::vector<int32_t> RandomTargets(int N, int V, Rng& rng, int ignore_every = 4) {
  std::vector<int32_t> y(N);
  for (int i = 0; i < N; ++i) {
    y[i] = (i % ignore_every == ignore_every - 1) ? kIgnoreTarget : static_cast<int32_t>(rng.Below(V));
  }
  return y;
}

// Central differences in double over every entry of x; the step is the float-rounded one actually
// taken. Returns max |a − n| / max(|a| + |n|, floor).
double MaxRelError(std::vector<float>& x, const std::vector<float>& analytic,
                   const std::function<double()>& loss, double eps = 1e-3, double floor = 1e-4) {
  double worst = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float saved = x[i];
    const float xp = static_cast<float>(saved + eps), xm = static_cast<float>(saved - eps);
    x[i] = xp;
    const double lp = loss();
    x[i] = xm;
    const double lm = loss();
    x[i] = saved;
    const double numeric = (lp - lm) / (static_cast<double>(xp) - xm);
    const double err = std::abs(numeric - analytic[i]) /
                       std::max(std::abs(numeric) + std::abs(analytic[i]), floor);
    worst = std::max(worst, err);
  }
  return worst;
}

struct Case {
  float temperature, alpha;
};
const Case kCases[] = {{1.0f, 0.5f}, {2.0f, 0.3f}, {0.5f, 0.0f}, {4.0f, 1.0f}, {1.5f, 0.9f}};

TEST(KdLossTest, DenseGradientMatchesFiniteDifferences) {
  const int N = 6, V = 9;
  double worst = 0.0;
  for (const Case& c : kCases) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.temperature << " alpha=" << c.alpha);
    Rng rng(11);
    auto s = Random(N * V, rng, 2.0f), t = Random(N * V, rng, 2.0f);
    auto y = RandomTargets(N, V, rng);
    const KdOptions opt{c.temperature, c.alpha};
    const KdLoss l = KdForward(s.data(), t.data(), y.data(), N, V, opt);
    EXPECT_EQ(l.count, N - N / 4);
    EXPECT_GT(l.loss, 0.0);
    std::vector<float> ds(N * V);
    KdBackward(ds.data(), s.data(), t.data(), y.data(), N, V, opt, l.count);
    auto loss = [&] { return KdForward(s.data(), t.data(), y.data(), N, V, opt).loss; };
    const double err = MaxRelError(s, ds, loss);
    EXPECT_LT(err, 1e-3);
    worst = std::max(worst, err);
  }
  std::printf("dense KD: max relative error vs finite differences %.2e\n", worst);
}

TEST(KdLossTest, TopKGradientMatchesFiniteDifferences) {
  const int N = 6, V = 9;
  double worst = 0.0;
  for (int k : {1, 3, 8}) {
    for (const Case& c : kCases) {
      SCOPED_TRACE(::testing::Message() << "k=" << k << " T=" << c.temperature
                                        << " alpha=" << c.alpha);
      Rng rng(100 + k);
      auto s = Random(N * V, rng, 2.0f), t = Random(N * V, rng, 2.0f);
      auto y = RandomTargets(N, V, rng);
      const KdOptions opt{c.temperature, c.alpha};
      const TopKTargets teacher = TopKFromLogits(t.data(), N, V, k, c.temperature);
      const KdLoss l = KdTopKForward(s.data(), teacher, y.data(), N, V, opt);
      std::vector<float> ds(N * V);
      KdTopKBackward(ds.data(), s.data(), teacher, y.data(), N, V, opt, l.count);
      auto loss = [&] { return KdTopKForward(s.data(), teacher, y.data(), N, V, opt).loss; };
      const double err = MaxRelError(s, ds, loss);
      EXPECT_LT(err, 1e-3);
      worst = std::max(worst, err);
    }
  }
  std::printf("top-k KD: max relative error vs finite differences %.2e\n", worst);
}

// Hand-made targets with edge values: a zero probability, a zero tail with k < V, no CE.
TEST(KdLossTest, TopKGradientWithZeroProbabilityAndZeroTail) {
  const int N = 2, V = 5;
  Rng rng(7);
  auto s = Random(N * V, rng, 1.5f);
  TopKTargets t;
  t.rows = N;
  t.k = 3;
  t.vocab = V;
  t.temperature = 2.0f;
  t.indices = {4, 0, 2, /*row 1*/ 1, 3, 0};
  t.probs = {0.6f, 0.4f, 0.0f, /*row 1*/ 0.5f, 0.2f, 0.1f};
  t.tail = {0.0f, 0.2f};
  ASSERT_TRUE(ValidateTopK(t).ok());
  const KdOptions opt{2.0f, 0.0f};
  const KdLoss l = KdTopKForward(s.data(), t, nullptr, N, V, opt);
  EXPECT_EQ(l.count, N);
  EXPECT_TRUE(std::isfinite(l.loss));
  std::vector<float> ds(N * V);
  KdTopKBackward(ds.data(), s.data(), t, nullptr, N, V, opt, l.count);
  auto loss = [&] { return KdTopKForward(s.data(), t, nullptr, N, V, opt).loss; };
  EXPECT_LT(MaxRelError(s, ds, loss), 1e-3);
}

TEST(KdLossTest, TopKWithFullVocabularyEqualsDense) {
  const int N = 7, V = 16;
  for (const Case& c : kCases) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.temperature << " alpha=" << c.alpha);
    Rng rng(3);
    auto s = Random(N * V, rng, 3.0f), t = Random(N * V, rng, 3.0f);
    auto y = RandomTargets(N, V, rng, 3);
    const KdOptions opt{c.temperature, c.alpha};
    const TopKTargets teacher = TopKFromLogits(t.data(), N, V, V, c.temperature);
    const KdLoss dense = KdForward(s.data(), t.data(), y.data(), N, V, opt);
    const KdLoss sparse = KdTopKForward(s.data(), teacher, y.data(), N, V, opt);
    EXPECT_EQ(dense.count, sparse.count);
    EXPECT_NEAR(sparse.loss, dense.loss, 1e-6 * std::abs(dense.loss) + 1e-7);
    EXPECT_NEAR(sparse.kl, dense.kl, 1e-6 * std::abs(dense.kl) + 1e-7);
    EXPECT_NEAR(sparse.ce, dense.ce, 1e-12);
    std::vector<float> dd(N * V), dsp(N * V);
    KdBackward(dd.data(), s.data(), t.data(), y.data(), N, V, opt, dense.count);
    KdTopKBackward(dsp.data(), s.data(), teacher, y.data(), N, V, opt, sparse.count);
    float max_abs = 0.0f;
    for (float g : dd) max_abs = std::max(max_abs, std::abs(g));
    for (int j = 0; j < N * V; ++j) EXPECT_NEAR(dsp[j], dd[j], 1e-6f * max_abs) << j;
  }
}

// The sparse KL equals, computed independently in double, the KL to the completed teacher
// distribution (top-k probabilities, tail spread like the student's own tail), and is smaller
// than the KL to a uniformly spread tail (the completion it minimises over).
TEST(KdLossTest, TopKLossIsKlToStudentShapedCompletion) {
  const int N = 5, V = 12, k = 4;
  const float T = 1.7f;
  Rng rng(5);
  auto s = Random(N * V, rng, 2.0f), t = Random(N * V, rng, 2.0f);
  const TopKTargets teacher = TopKFromLogits(t.data(), N, V, k, T);
  const KdLoss l = KdTopKForward(s.data(), teacher, nullptr, N, V, {T, 0.0f});
  std::vector<float> uniform(N * V);
  DensifyTopK(uniform.data(), teacher);
  double expected = 0.0, to_uniform = 0.0;
  for (int i = 0; i < N; ++i) {
    std::vector<double> ps(V);
    double z = 0.0;
    for (int v = 0; v < V; ++v) z += (ps[v] = std::exp(static_cast<double>(s[i * V + v]) / T));
    for (auto& p : ps) p /= z;
    std::vector<double> pt(V, -1.0);
    for (int j = 0; j < k; ++j) pt[teacher.row_indices(i)[j]] = teacher.row_probs(i)[j];
    double m = 0.0;
    for (int v = 0; v < V; ++v) m += pt[v] < 0 ? ps[v] : 0.0;
    for (int v = 0; v < V; ++v) {
      if (pt[v] < 0) pt[v] = teacher.tail[i] * ps[v] / m;
      expected += pt[v] * std::log(pt[v] / ps[v]);
      to_uniform += uniform[i * V + v] * std::log(uniform[i * V + v] / ps[v]);
    }
  }
  expected /= N;
  to_uniform /= N;
  EXPECT_NEAR(l.kl, expected, 1e-9);
  EXPECT_NEAR(l.loss, static_cast<double>(T) * T * expected, 1e-8);
  EXPECT_LT(l.kl, to_uniform);
}

TEST(KdLossTest, IgnoredRowsContributeNothing) {
  const int N = 4, V = 6;
  Rng rng(9);
  auto s = Random(N * V, rng, 1.0f), t = Random(N * V, rng, 1.0f);
  std::vector<int32_t> y = {2, kIgnoreTarget, 5, kIgnoreTarget};
  const KdOptions opt{2.0f, 0.4f};
  const KdLoss full = KdForward(s.data(), t.data(), y.data(), N, V, opt);
  EXPECT_EQ(full.count, 2);
  // Changing an ignored row's logits changes neither the loss nor the other rows' gradients.
  std::vector<float> d1(N * V, 7.0f), d2(N * V);
  KdBackward(d1.data(), s.data(), t.data(), y.data(), N, V, opt, full.count);
  for (int v = 0; v < V; ++v) {
    s[1 * V + v] += 3.0f;
    t[3 * V + v] -= 2.0f;
  }
  const KdLoss changed = KdForward(s.data(), t.data(), y.data(), N, V, opt);
  EXPECT_NEAR(changed.loss, full.loss, 1e-12);
  KdBackward(d2.data(), s.data(), t.data(), y.data(), N, V, opt, full.count);
  EXPECT_EQ(d1, d2);
  for (int v = 0; v < V; ++v) {
    EXPECT_EQ(d1[1 * V + v], 0.0f);
    EXPECT_EQ(d1[3 * V + v], 0.0f);
  }
  // All ignored: zero loss, zero count, zero gradient (not NaN).
  std::vector<int32_t> none(N, kIgnoreTarget);
  const TopKTargets teacher = TopKFromLogits(t.data(), N, V, 2, 2.0f);
  const KdLoss empty = KdTopKForward(s.data(), teacher, none.data(), N, V, opt);
  EXPECT_EQ(empty.count, 0);
  EXPECT_EQ(empty.loss, 0.0);
  KdTopKBackward(d1.data(), s.data(), teacher, none.data(), N, V, opt, empty.count);
  for (float g : d1) EXPECT_EQ(g, 0.0f);
}

TEST(KdLossTest, LossSplitsIntoItsParts) {
  const int N = 5, V = 8;
  Rng rng(21);
  auto s = Random(N * V, rng, 1.0f), t = Random(N * V, rng, 1.0f);
  auto y = RandomTargets(N, V, rng, 100);
  const float T = 3.0f, a = 0.25f;
  const KdLoss l = KdForward(s.data(), t.data(), y.data(), N, V, {T, a});
  EXPECT_NEAR(l.loss, a * l.ce + (1 - a) * T * T * l.kl, 1e-12);
  EXPECT_GT(l.kl, 0.0);
  // The same student as teacher: KL 0 and, with α = 0, a zero gradient.
  const KdLoss self = KdForward(s.data(), s.data(), y.data(), N, V, {T, 0.0f});
  EXPECT_NEAR(self.kl, 0.0, 1e-12);
  std::vector<float> ds(N * V);
  KdBackward(ds.data(), s.data(), s.data(), y.data(), N, V, {T, 0.0f}, self.count);
  for (float g : ds) EXPECT_NEAR(g, 0.0f, 1e-8f);
}

// A batch split into shards, each given the whole batch's count, gives the whole batch's gradient.
TEST(KdLossTest, ShardedBackwardMatchesWhole) {
  const int N = 8, V = 10, half = 4;
  Rng rng(31);
  auto s = Random(N * V, rng, 1.0f), t = Random(N * V, rng, 1.0f);
  auto y = RandomTargets(N, V, rng, 3);
  const KdOptions opt{1.5f, 0.5f};
  const TopKTargets teacher = TopKFromLogits(t.data(), N, V, 3, 1.5f);
  const int count = KdTopKForward(s.data(), teacher, y.data(), N, V, opt).count;
  std::vector<float> whole(N * V), shards(N * V);
  KdTopKBackward(whole.data(), s.data(), teacher, y.data(), N, V, opt, count);
  for (int b = 0; b < N; b += half) {
    const TopKTargets part = SliceTopK(teacher, b, half);
    KdTopKBackward(shards.data() + b * V, s.data() + b * V, part, y.data() + b, half, V, opt, count);
  }
  EXPECT_EQ(whole, shards);
}

TEST(KdLossTest, StableForLargeLogitsAndSmallTemperature) {
  const int N = 3, V = 256;
  Rng rng(41);
  auto s = Random(N * V, rng, 500.0f), t = Random(N * V, rng, 500.0f);
  auto y = RandomTargets(N, V, rng, 100);
  const KdOptions opt{0.05f, 0.5f};
  const KdLoss dense = KdForward(s.data(), t.data(), y.data(), N, V, opt);
  const TopKTargets teacher = TopKFromLogits(t.data(), N, V, 16, opt.temperature);
  const KdLoss sparse = KdTopKForward(s.data(), teacher, y.data(), N, V, opt);
  EXPECT_TRUE(std::isfinite(dense.loss));
  EXPECT_TRUE(std::isfinite(sparse.loss));
  std::vector<float> d(N * V);
  KdBackward(d.data(), s.data(), t.data(), y.data(), N, V, opt, dense.count);
  for (float g : d) ASSERT_TRUE(std::isfinite(g));
  KdTopKBackward(d.data(), s.data(), teacher, y.data(), N, V, opt, sparse.count);
  for (float g : d) ASSERT_TRUE(std::isfinite(g));
}

TEST(KdLossDeathTest, RejectsBadArguments) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const int N = 2, V = 4;
  std::vector<float> s(N * V, 0.0f), t(N * V, 0.0f);
  std::vector<int32_t> y = {1, 2};
  EXPECT_DEATH(KdForward(s.data(), t.data(), y.data(), N, V, {0.0f, 0.5f}), "check failed");
  EXPECT_DEATH(KdForward(s.data(), t.data(), y.data(), N, V, {1.0f, 1.5f}), "check failed");
  EXPECT_DEATH(KdForward(s.data(), t.data(), nullptr, N, V, {1.0f, 0.5f}), "check failed");
  std::vector<int32_t> bad_y = {1, 4};
  EXPECT_DEATH(KdForward(s.data(), t.data(), bad_y.data(), N, V, {1.0f, 0.5f}), "check failed");
  TopKTargets teacher = TopKFromLogits(t.data(), N, V, 2, 1.0f);
  EXPECT_DEATH(KdTopKForward(s.data(), teacher, y.data(), N, V, {2.0f, 0.5f}), "check failed");
  teacher.indices[1] = teacher.indices[0];
  EXPECT_DEATH(KdTopKForward(s.data(), teacher, y.data(), N, V, {1.0f, 0.5f}), "check failed");
  teacher.indices[1] = V;
  EXPECT_DEATH(KdTopKForward(s.data(), teacher, y.data(), N, V, {1.0f, 0.5f}), "check failed");
  teacher = TopKFromLogits(t.data(), N, V, 2, 1.0f);
  teacher.tail[1] = -0.5f;
  EXPECT_DEATH(KdTopKForward(s.data(), teacher, y.data(), N, V, {1.0f, 0.5f}), "check failed");
}

}  // namespace
}  // namespace tandem

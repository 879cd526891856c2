// DP mechanisms: L2 clipping (exact bound, non-finite rejection, zero vector), adaptive clipping
// (the geometric update converges to the target quantile; Theorem 1's noise split), distributed
// noise whose sum carries the stated variance.
#include "privacy/dp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"

namespace tandem::privacy {
namespace {

double Norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

SecureRng TestRng(uint8_t b) {
  SecureRng::Key k;
  k.fill(b);
  return SecureRng(k);
}

TEST(ClipL2Test, ClipsToTheNormKeepingDirection) {
  std::vector<float> v = {3.0f, 4.0f, 0.0f};
  auto r = ClipL2(v, 1.0);
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->norm, 5.0);
  EXPECT_TRUE(r->clipped);
  EXPECT_NEAR(r->scale, 0.2, 1e-6);
  EXPECT_LE(Norm(v), 1.0);
  EXPECT_NEAR(Norm(v), 1.0, 1e-6);
  EXPECT_NEAR(v[0] / v[1], 0.75, 1e-7);
  EXPECT_EQ(v[2], 0.0f);
}

TEST(ClipL2Test, LeavesSmallAndZeroVectorsUntouched) {
  std::vector<float> v = {0.375f, -0.5f};  // norm 0.625, exactly representable
  const auto orig = v;
  auto r = ClipL2(v, 0.625);  // norm == clip: not clipped
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->clipped);
  EXPECT_EQ(r->scale, 1.0);
  EXPECT_EQ(v, orig);
  std::vector<float> zero(100, 0.0f);
  auto z = ClipL2(zero, 1.0);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ(z->norm, 0.0);
  EXPECT_FALSE(z->clipped);
  for (float x : zero) EXPECT_EQ(x, 0.0f);
  std::vector<float> empty;
  EXPECT_TRUE(ClipL2(empty, 1.0).ok());
}

// The sensitivity bound must hold exactly for the float vector that is sent, not just for the
// real-number scaling: the clipped norm (in double) never exceeds the clip norm.
TEST(ClipL2Test, ClippedNormNeverExceedsTheBound) {
  Rng rng(3);
  for (int trial = 0; trial < 3000; ++trial) {
    const size_t n = 1 + rng.Below(trial < 2900 ? 300 : 100000);
    std::vector<float> v(n);
    const double scale = std::exp(rng.Uniform() * 20 - 10);
    for (float& x : v) x = static_cast<float>(rng.Normal() * scale);
    const double clip = std::exp(rng.Uniform() * 20 - 10);
    const double before = Norm(v);
    auto r = ClipL2(v, clip);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->clipped, before > clip);
    ASSERT_LE(Norm(v), clip) << "n=" << n << " clip=" << clip;
    if (r->clipped) {
      ASSERT_GT(Norm(v), clip * (1 - 1e-6));
    }
  }
}

TEST(ClipL2Test, RejectsNonFiniteValuesBeforeTouchingAnything) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> v = {10.0f, 20.0f, bad, 30.0f};
    auto r = ClipL2(v, 1.0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("value 2"), std::string::npos) << r.status().message();
    EXPECT_EQ(v[0], 10.0f);
    EXPECT_EQ(v[1], 20.0f);
    EXPECT_EQ(v[3], 30.0f);
  }
  std::vector<float> v = {1.0f};
  for (double clip : {0.0, -1.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    EXPECT_FALSE(ClipL2(v, clip).ok()) << clip;
  }
  EXPECT_EQ(v[0], 1.0f);
}

TEST(AdaptiveClippingTest, GeometricUpdate) {
  EXPECT_DOUBLE_EQ(NextClipNorm(2.0, 0.5, 0.5, 0.2), 2.0);
  EXPECT_DOUBLE_EQ(NextClipNorm(2.0, 0.9, 0.5, 0.2), 2.0 * std::exp(-0.2 * 0.4));
  EXPECT_DOUBLE_EQ(NextClipNorm(2.0, 0.1, 0.5, 0.2), 2.0 * std::exp(0.2 * 0.4));
  EXPECT_GT(NextClipNorm(2.0, -0.1, 0.5, 0.2), 2.0);  // noise may push b̄ below 0
  EXPECT_DOUBLE_EQ(NextClipNorm(2.0, 0.9, 0.5, 0.0), 2.0);
}

// Andrew et al.'s update tracks the γ-quantile of the update norms: with norms uniform on
// [0, 10], γ = 0.5 and noisy bits (σ_b = m/20, their recommendation) it settles near 5.
TEST(AdaptiveClippingTest, ConvergesToTheTargetQuantile) {
  Rng rng(17);
  SecureRng noise = TestRng(9);
  const int m = 200;  // clients per round
  const double bit_sigma = m / 20.0;
  double clip = 0.1;  // the paper's suggested start, far from the answer
  for (double gamma : {0.5, 0.8}) {
    for (int round = 0; round < 400; ++round) {
      double unclipped = 0;
      for (int i = 0; i < m; ++i) unclipped += (rng.Uniform() * 10 <= clip) ? 1 : 0;
      const double b = (unclipped + bit_sigma * noise.Normal()) / m;
      clip = NextClipNorm(clip, b, gamma, 0.2);
    }
    EXPECT_NEAR(clip, 10 * gamma, 10 * 0.1) << "gamma " << gamma;
  }
}

TEST(AdaptiveClippingTest, UpdateNoiseMultiplierFollowsTheorem1) {
  // z = 1, σ_b = 5: (1 - 1/100)^(-1/2) = 1.00503782...
  auto z_delta = UpdateNoiseMultiplier(1.0, 5.0);
  ASSERT_TRUE(z_delta.ok());
  EXPECT_NEAR(*z_delta, 1.0050378152592121, 1e-12);
  for (double z : {0.5, 1.0, 3.0}) {
    for (double sb : {z * 0.51, z, 10 * z, 1e6}) {
      auto zd = UpdateNoiseMultiplier(z, sb);
      ASSERT_TRUE(zd.ok());
      EXPECT_GT(*zd, z);  // the update pays for the bits with more noise
      // Theorem 1 back: the pair composes to exactly z.
      EXPECT_NEAR(1 / std::sqrt(1 / (*zd * *zd) + 1 / (4 * sb * sb)), z, 1e-9 * z);
    }
  }
  auto too_small = UpdateNoiseMultiplier(1.0, 0.5);
  ASSERT_FALSE(too_small.ok());
  EXPECT_NE(too_small.status().message().find("half the noise multiplier"), std::string::npos);
  EXPECT_FALSE(UpdateNoiseMultiplier(1.0, 0.2).ok());
  EXPECT_FALSE(UpdateNoiseMultiplier(0.0, 5.0).ok());
  EXPECT_FALSE(UpdateNoiseMultiplier(std::nan(""), 5.0).ok());
  EXPECT_FALSE(UpdateNoiseMultiplier(1.0, std::nan("")).ok());
  EXPECT_DOUBLE_EQ(*UpdateNoiseMultiplier(1.0, std::numeric_limits<double>::infinity()), 1.0);
}

TEST(GaussianNoiseTest, ZeroStddevDrawsNothing) {
  SecureRng a = TestRng(1), b = TestRng(1);
  std::vector<float> v = {1.0f, 2.0f};
  AddGaussianNoise(v, 0.0, a);
  EXPECT_EQ(v, (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(a.NextU64(), b.NextU64());
}

// Each of K clients adds N(0, (σC/√K)²); the sum of their vectors must carry variance (σC)².
// Deterministic key, 5-standard-error bounds: the failure probability of a correct implementation
// on a random key would be below 1e-6; on this fixed key the outcome never changes.
TEST(GaussianNoiseTest, DistributedNoiseSumsToTheCentralVariance) {
  const double sigma = 1.1, clip = 0.7;
  const int k = 10, m = 50000;
  const double stddev = DistributedNoiseStddev(sigma, clip, k);
  EXPECT_DOUBLE_EQ(stddev, sigma * clip / std::sqrt(10.0));
  SecureRng rng = TestRng(23);
  std::vector<double> sum(m, 0.0);
  for (int c = 0; c < k; ++c) {
    std::vector<float> update(m, 0.25f);
    AddGaussianNoise(update, stddev, rng);
    for (int i = 0; i < m; ++i) sum[i] += update[i];
  }
  double s = 0, s2 = 0;
  for (double x : sum) {
    s += x;
    s2 += x * x;
  }
  const double mean = s / m, var = s2 / m - mean * mean;
  const double target = sigma * clip * sigma * clip;
  EXPECT_NEAR(mean, k * 0.25, 5 * std::sqrt(target / m));
  EXPECT_NEAR(var, target, 5 * target * std::sqrt(2.0 / m));
  EXPECT_DOUBLE_EQ(DistributedNoiseStddev(2.0, 1.0, 1), 2.0);
}

}  // namespace
}  // namespace tandem::privacy

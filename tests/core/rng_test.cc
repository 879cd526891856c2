#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"

namespace tandem {
namespace {

TEST(RngTest, SameSeedSameStreamDifferentSeedDifferent) {
  Rng a(5), b(5), c(6);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.NextU64();
    EXPECT_EQ(x, b.NextU64());
    differs |= x != c.NextU64();
  }
  EXPECT_TRUE(differs);
}

TEST(RngTest, SaveAndLoadStateResumesExactly) {
  Rng a(9);
  for (int i = 0; i < 7; ++i) a.Normal();  // leaves a cached normal
  const std::string state = a.SaveState();
  Rng b(0);
  ASSERT_TRUE(b.LoadState(state).ok());
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.Normal(), b.Normal());
  EXPECT_FALSE(b.LoadState("garbage").ok());
}

TEST(RngTest, NormalHasUnitMomentsAndBelowIsInRange) {
  Rng r(1);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = r.Normal();
    s += x;
    s2 += x * x;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.02);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) {
    const uint64_t v = r.Below(7);
    ASSERT_LT(v, 7u);
    ++counts[v];
  }
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
}

TEST(RngTest, GammaMeanEqualsShape) {
  Rng r(2);
  for (double shape : {0.3, 1.0, 4.5}) {
    double s = 0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) s += r.Gamma(shape);
    EXPECT_NEAR(s / n, shape, 0.03 * shape + 0.01) << shape;
  }
}

TEST(RngTest, ForkedStreamsDiffer) {
  Rng r(3);
  Rng a = r.Fork(1), b = r.Fork(2);
  EXPECT_NE(a.NextU64(), b.NextU64());
}

}  // namespace
}  // namespace tandem

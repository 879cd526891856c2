// SecureRng: a known AES-256-CTR answer, reproducibility under an explicit key, uniform and normal
// moments, and a Kolmogorov–Smirnov test of normality on a fixed key (deterministic: no flakes).
#include "privacy/secure_rng.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace tandem::privacy {
namespace {

static_assert(!std::is_copy_constructible_v<SecureRng>);
static_assert(!std::is_copy_assignable_v<SecureRng>);
static_assert(std::is_move_constructible_v<SecureRng>);

SecureRng::Key KeyOf(uint8_t b) {
  SecureRng::Key k;
  k.fill(b);
  return k;
}

// AES-256 of the zero block under the zero key is dc95c078a2408989ad48a21492842087 (the classic
// all-zero known answer); CTR mode with a zero IV emits exactly that as its first 16 bytes.
TEST(SecureRngTest, StreamIsAes256CtrKeystream) {
  SecureRng rng(KeyOf(0));
  EXPECT_EQ(rng.NextU64(), 0x898940a278c095dcULL);  // bytes dc 95 c0 78 a2 40 89 89, little-endian
  EXPECT_EQ(rng.NextU64(), 0x8720849214a248adULL);
  SecureRng again(KeyOf(0));
  std::vector<uint8_t> bytes(16);
  again.Fill(bytes);
  const std::vector<uint8_t> expected = {0xdc, 0x95, 0xc0, 0x78, 0xa2, 0x40, 0x89, 0x89,
                                         0xad, 0x48, 0xa2, 0x14, 0x92, 0x84, 0x20, 0x87};
  EXPECT_EQ(bytes, expected);
}

TEST(SecureRngTest, SameKeySameStreamAcrossRefills) {
  SecureRng a(KeyOf(7)), b(KeyOf(7)), c(KeyOf(8));
  bool differs = false;
  for (int i = 0; i < 5000; ++i) {  // several 512-word refills
    const uint64_t x = a.NextU64();
    EXPECT_EQ(x, b.NextU64());
    differs |= x != c.NextU64();
  }
  EXPECT_TRUE(differs);
}

TEST(SecureRngTest, FillConsumesWholeWords) {
  SecureRng a(KeyOf(3)), b(KeyOf(3));
  std::vector<uint8_t> three(3);
  a.Fill(three);  // takes word 0 (3 bytes used)
  const uint64_t w0 = b.NextU64();
  for (int k = 0; k < 3; ++k) EXPECT_EQ(three[k], static_cast<uint8_t>(w0 >> (8 * k)));
  EXPECT_EQ(a.NextU64(), b.NextU64());  // word 1 for both: no byte reused
  std::vector<uint8_t> big(10000);
  a.Fill(big);
  for (size_t k = 0; k + 8 <= big.size(); k += 8) {
    const uint64_t w = b.NextU64();
    for (int j = 0; j < 8; ++j) ASSERT_EQ(big[k + j], static_cast<uint8_t>(w >> (8 * j)));
  }
}

TEST(SecureRngTest, SystemSeededGeneratorsDiffer) {
  auto a = SecureRng::Create();
  auto b = SecureRng::Create();
  ASSERT_TRUE(a.ok() && b.ok());
  SecureRng c;  // the default constructor seeds from RAND_bytes too
  const uint64_t xa = a->NextU64(), xb = b->NextU64(), xc = c.NextU64();
  EXPECT_NE(xa, xb);
  EXPECT_NE(xa, xc);
  EXPECT_NE(xb, xc);
}

TEST(SecureRngTest, MoveContinuesTheStreamAndLeavesNoCopy) {
  SecureRng a(KeyOf(5)), ref(KeyOf(5));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.NextU64(), ref.NextU64());
  SecureRng b(std::move(a));
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(b.NextU64(), ref.NextU64());
  EXPECT_DEATH(a.NextU64(), "ctx_");  // NOLINT(bugprone-use-after-move): moved-from must not draw
}

TEST(SecureRngTest, UniformIsOpenIntervalWithUniformMoments) {
  SecureRng rng(KeyOf(11));
  const int n = 400000;
  double s = 0, s2 = 0, lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    const double u = rng.Uniform();
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
    s += u;
    s2 += u * u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  const double mean = s / n, var = s2 / n - mean * mean;
  EXPECT_NEAR(mean, 0.5, 5 * std::sqrt(1.0 / 12 / n));
  EXPECT_NEAR(var, 1.0 / 12, 0.002);
  EXPECT_LT(lo, 1e-4);
  EXPECT_GT(hi, 1 - 1e-4);
}

double NormalCdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

TEST(SecureRngTest, NormalHasStandardMomentsAndPassesKolmogorovSmirnov) {
  SecureRng rng(KeyOf(42));
  const int n = 200000;
  std::vector<double> x(n);
  double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
  for (double& v : x) {
    v = rng.Normal();
    s1 += v;
    s2 += v * v;
    s3 += v * v * v;
    s4 += v * v * v * v;
  }
  const double mean = s1 / n, var = s2 / n - mean * mean;
  // Standard errors: mean 1/√n, variance √(2/n), skewness √(6/n), kurtosis √(24/n); 5 of each.
  EXPECT_NEAR(mean, 0.0, 5 / std::sqrt(n));
  EXPECT_NEAR(var, 1.0, 5 * std::sqrt(2.0 / n));
  EXPECT_NEAR(s3 / n, 0.0, 5 * std::sqrt(6.0 / n));
  EXPECT_NEAR(s4 / n, 3.0, 5 * std::sqrt(24.0 / n));
  // Kolmogorov–Smirnov: sup |F_n - Φ| against the 1% critical value 1.628/√n.
  std::sort(x.begin(), x.end());
  double d = 0;
  for (int i = 0; i < n; ++i) {
    const double f = NormalCdf(x[i]);
    d = std::max({d, f - static_cast<double>(i) / n, static_cast<double>(i + 1) / n - f});
  }
  EXPECT_LT(d, 1.628 / std::sqrt(n)) << "KS statistic " << d;
  // The tails are where Box–Muller goes wrong first: P(|Z| > 3) = 0.0027.
  const double tail = static_cast<double>(
      std::count_if(x.begin(), x.end(), [](double v) { return std::abs(v) > 3; })) / n;
  EXPECT_NEAR(tail, 0.0026998, 5 * std::sqrt(0.0027 / n));
}

}  // namespace
}  // namespace tandem::privacy

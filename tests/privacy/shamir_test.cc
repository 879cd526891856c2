// Tests of privacy/shamir: reconstruction from every t-subset (and failure from t - 1), the
// rejection sampler, the field arithmetic, and strict parsing of the share wire form.
#include "privacy/shamir.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

namespace tandem::privacy {
namespace {

Bytes TestSecret(size_t n, uint8_t salt) {
  Bytes s(n);
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<uint8_t>(i * 37 + salt);
  return s;
}

std::vector<uint32_t> Points(size_t n) {
  std::vector<uint32_t> xs(n);
  std::iota(xs.begin(), xs.end(), 1u);
  return xs;
}

TEST(ShamirTest, FieldArithmetic) {
  using namespace detail;
  const uint64_t p = kShamirPrime;
  EXPECT_EQ(FieldMul(p - 1, p - 1), 1u);  // (-1)^2
  EXPECT_EQ(FieldAdd(p - 1, 1), 0u);
  EXPECT_EQ(FieldSub(0, 1), p - 1);
  EXPECT_EQ(FieldMul(uint64_t{1} << 60, 2), 1u);  // 2^61 = 1 mod p
  std::mt19937_64 gen(7);
  for (int i = 0; i < 1000; ++i) {
    const uint64_t a = gen() % (p - 1) + 1;
    const uint64_t b = gen() % p;
    EXPECT_EQ(FieldMul(a, FieldInverse(a)), 1u) << a;
    const unsigned __int128 prod = static_cast<unsigned __int128>(a) * b;
    EXPECT_EQ(FieldMul(a, b), static_cast<uint64_t>(prod % p));
  }
}

TEST(ShamirTest, RejectionSamplerRejectsOnlyThePrime) {
  using detail::ReduceDrawToField;
  EXPECT_FALSE(ReduceDrawToField(~uint64_t{0}).has_value());  // low 61 bits = p
  EXPECT_FALSE(ReduceDrawToField(kShamirPrime).has_value());
  EXPECT_FALSE(ReduceDrawToField(kShamirPrime | (uint64_t{5} << 61)).has_value());
  EXPECT_EQ(ReduceDrawToField(kShamirPrime - 1), kShamirPrime - 1);
  EXPECT_EQ(ReduceDrawToField((uint64_t{7} << 61) | 5), 5u);
  EXPECT_EQ(ReduceDrawToField(0), 0u);
}

TEST(ShamirTest, RandomFieldElementsAreInRangeAndUseAllBits) {
  std::vector<uint64_t> draws(1 << 20);
  ASSERT_TRUE(detail::FillRandomField(draws).ok());
  uint64_t max = 0;
  long double mean = 0;
  for (uint64_t v : draws) {
    ASSERT_LT(v, kShamirPrime);
    max = std::max(max, v);
    mean += static_cast<long double>(v);
  }
  mean /= draws.size();
  // A sampler that kept fewer bits (or reduced mod something smaller) fails these.
  EXPECT_GT(max, kShamirPrime - (kShamirPrime >> 10));
  EXPECT_NEAR(static_cast<double>(mean / kShamirPrime), 0.5, 0.002);
  auto one = detail::RandomFieldElement();
  ASSERT_TRUE(one.ok());
  EXPECT_LT(*one, kShamirPrime);
}

TEST(ShamirTest, EverySubsetOfThresholdSizeReconstructs) {
  const Bytes secret = TestSecret(32, 3);
  for (size_t n = 1; n <= 6; ++n) {
    for (int t = 1; t <= static_cast<int>(n); ++t) {
      auto shares = ShamirSplit(secret, t, Points(n));
      ASSERT_TRUE(shares.ok()) << shares.status().ToString();
      ASSERT_EQ(shares->size(), n);
      for (uint32_t subset = 0; subset < (1u << n); ++subset) {
        std::vector<ShamirShare> chosen;
        for (size_t i = 0; i < n; ++i) {
          if (subset & (1u << i)) chosen.push_back((*shares)[i]);
        }
        if (chosen.size() < static_cast<size_t>(t)) {
          if (chosen.empty()) continue;
          // Too few shares for t: refused outright...
          EXPECT_FALSE(ShamirCombine(chosen, t, secret.size()).ok());
          // ...and interpolating them as if t were smaller does not give the secret.
          auto wrong = ShamirCombine(chosen, static_cast<int>(chosen.size()), secret.size());
          EXPECT_TRUE(!wrong.ok() || *wrong != secret) << "n " << n << " t " << t;
          continue;
        }
        std::reverse(chosen.begin(), chosen.end());  // order must not matter
        auto got = ShamirCombine(chosen, t, secret.size());
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        EXPECT_EQ(*got, secret) << "n " << n << " t " << t << " subset " << subset;
      }
    }
  }
}

TEST(ShamirTest, RandomSubsetsOfManySharesReconstruct) {
  const Bytes secret = TestSecret(32, 91);
  std::mt19937 gen(42);
  // Sparse, large evaluation points as well as 1..n.
  std::vector<uint32_t> xs(100);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = 0xFFFFFFFFu - static_cast<uint32_t>(i * 977);
  for (int t : {2, 34, 67, 100}) {
    auto shares = ShamirSplit(secret, t, xs);
    ASSERT_TRUE(shares.ok());
    for (int trial = 0; trial < 10; ++trial) {
      std::vector<ShamirShare> shuffled = *shares;
      std::shuffle(shuffled.begin(), shuffled.end(), gen);
      auto got = ShamirCombine(shuffled, t, secret.size());
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, secret) << "t " << t;
      if (t > 1) {
        std::vector<ShamirShare> fewer(shuffled.begin(), shuffled.begin() + (t - 1));
        auto wrong = ShamirCombine(fewer, t - 1, secret.size());
        EXPECT_TRUE(!wrong.ok() || *wrong != secret) << "t " << t;
      }
    }
  }
}

TEST(ShamirTest, ThresholdOneSharesAreTheSecretItself) {
  const Bytes secret = TestSecret(14, 5);
  auto shares = ShamirSplit(secret, 1, Points(4));
  ASSERT_TRUE(shares.ok());
  for (const ShamirShare& s : *shares) {
    ASSERT_EQ(s.y.size(), 2u);
    EXPECT_EQ(s.y, (*shares)[0].y);
    auto got = ShamirCombine(std::span(&s, 1), 1, secret.size());
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, secret);
  }
}

TEST(ShamirTest, ThresholdNNeedsEveryShare) {
  const Bytes secret = TestSecret(32, 17);
  auto shares = ShamirSplit(secret, 7, Points(7));
  ASSERT_TRUE(shares.ok());
  auto all = ShamirCombine(*shares, 7, secret.size());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, secret);
  EXPECT_EQ(ShamirCombine(std::span(*shares).first(6), 7, secret.size()).status().code(),
            StatusCode::kInvalidArgument);
  // Extra shares beyond the threshold are ignored, even a corrupted one.
  auto five = ShamirSplit(secret, 5, Points(7));
  ASSERT_TRUE(five.ok());
  (*five)[6].y[0] = 12345;
  auto got = ShamirCombine(*five, 5, secret.size());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, secret);
}

TEST(ShamirTest, SecretsOfManyLengths) {
  for (size_t len : {0, 1, 6, 7, 8, 13, 14, 15, 32, 100}) {
    const Bytes secret = TestSecret(len, static_cast<uint8_t>(len));
    auto shares = ShamirSplit(secret, 3, Points(5));
    ASSERT_TRUE(shares.ok());
    EXPECT_EQ((*shares)[0].y.size(), ShamirChunkCount(len));
    std::vector<ShamirShare> last3(shares->begin() + 2, shares->end());
    auto got = ShamirCombine(last3, 3, len);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, secret) << len;
  }
  // All-0xff secrets exercise the largest chunk value, 2^56 - 1.
  const Bytes ones(32, 0xff);
  auto shares = ShamirSplit(ones, 2, Points(3));
  ASSERT_TRUE(shares.ok());
  auto got = ShamirCombine(*shares, 2, ones.size());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, ones);
}

TEST(ShamirTest, SplitRejectsBadArguments) {
  const Bytes secret = TestSecret(32, 1);
  EXPECT_FALSE(ShamirSplit(secret, 0, Points(3)).ok());
  EXPECT_FALSE(ShamirSplit(secret, 4, Points(3)).ok());
  const std::vector<uint32_t> dup = {1, 2, 2};
  EXPECT_EQ(ShamirSplit(secret, 2, dup).status().code(), StatusCode::kInvalidArgument);
  const std::vector<uint32_t> zero = {3, 0, 1};
  EXPECT_EQ(ShamirSplit(secret, 2, zero).status().code(), StatusCode::kInvalidArgument);
}

TEST(ShamirTest, CombineRejectsBadShares) {
  const Bytes secret = TestSecret(32, 2);
  auto shares = ShamirSplit(secret, 3, Points(4));
  ASSERT_TRUE(shares.ok());
  auto code = [&](std::vector<ShamirShare> s, size_t bytes) {
    return ShamirCombine(s, 3, bytes).status().code();
  };
  std::vector<ShamirShare> s = *shares;
  s[1].x = s[0].x;
  EXPECT_EQ(code(s, 32), StatusCode::kInvalidArgument);  // duplicate x
  s = *shares;
  s[2].x = 0;
  EXPECT_EQ(code(s, 32), StatusCode::kInvalidArgument);
  s = *shares;
  s[0].y[3] = kShamirPrime;
  EXPECT_EQ(code(s, 32), StatusCode::kInvalidArgument);
  s = *shares;
  s[1].y.pop_back();
  EXPECT_EQ(code(s, 32), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(*shares, 36), StatusCode::kInvalidArgument);  // 6 chunks, shares hold 5
  EXPECT_EQ(code(*shares, 28), StatusCode::kInvalidArgument);  // 4 chunks
  EXPECT_EQ(ShamirCombine(*shares, 0, 32).status().code(), StatusCode::kInvalidArgument);
  // 29 bytes also take 5 chunks; the shorter length is caught because the secret's last chunk
  // (32 = 4*7 + 4 bytes) carries bytes beyond the claimed one.
  EXPECT_EQ(code(*shares, 29), StatusCode::kCorruption);
}

TEST(ShamirTest, MixedSecretsAreDetectedOrWrong) {
  auto a = ShamirSplit(TestSecret(32, 1), 3, Points(3));
  auto b = ShamirSplit(TestSecret(32, 2), 3, Points(3));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<ShamirShare> mixed = {(*a)[0], (*a)[1], (*b)[2]};
  auto got = ShamirCombine(mixed, 3, 32);
  EXPECT_TRUE(!got.ok() || (*got != TestSecret(32, 1) && *got != TestSecret(32, 2)));
}

TEST(ShamirTest, SerializeParseRoundTrip) {
  auto shares = ShamirSplit(TestSecret(32, 9), 2, std::vector<uint32_t>{1, 0xFFFFFFFFu});
  ASSERT_TRUE(shares.ok());
  for (const ShamirShare& s : *shares) {
    Bytes wire = SerializeShare(s);
    EXPECT_EQ(wire.size(), 8 + 8 * s.y.size());
    auto back = ParseShare(wire);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->x, s.x);
    EXPECT_EQ(back->y, s.y);
  }
  ShamirShare empty;
  empty.x = 3;
  auto back = ParseShare(SerializeShare(empty));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->y.empty());
}

TEST(ShamirTest, ParseRejectsMalformedBytes) {
  auto shares = ShamirSplit(TestSecret(32, 9), 2, Points(2));
  ASSERT_TRUE(shares.ok());
  const Bytes good = SerializeShare((*shares)[0]);
  auto rejects = [](const Bytes& b, const char* what) {
    auto r = ParseShare(b);
    EXPECT_FALSE(r.ok()) << what;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << what;
    }
  };
  rejects({}, "empty");
  rejects(Bytes(good.begin(), good.begin() + 7), "short header");
  rejects(Bytes(good.begin(), good.end() - 1), "missing byte");
  Bytes extra = good;
  extra.push_back(0);
  rejects(extra, "extra byte");
  Bytes huge_count = good;
  huge_count[7] = 0xff;  // count ~ 2^31: must not allocate or read past the end
  rejects(huge_count, "count beyond the data");
  Bytes zero_x = good;
  std::fill(zero_x.begin(), zero_x.begin() + 4, 0);
  rejects(zero_x, "x = 0");
  Bytes at_prime = good;
  // y[0] = p = 2^61 - 1, little-endian.
  for (size_t i = 0; i < 8; ++i) at_prime[8 + i] = static_cast<uint8_t>(kShamirPrime >> (8 * i));
  rejects(at_prime, "y = p");
  Bytes all_ones = good;
  std::fill(all_ones.end() - 8, all_ones.end(), 0xff);
  rejects(all_ones, "y = 2^64 - 1");
}

}  // namespace
}  // namespace tandem::privacy

// Tests of privacy/fixed_point: round trips, clamping, wrap-free sums in Z / 2^32 and Z / 2^64,
// the validation boundary, and bit-for-bit agreement with round-half-even at k = 64, f = 32.
#include "privacy/fixed_point.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

namespace tandem::privacy {
namespace {

// Round half to even written out, independent of the FPU rounding mode std::nearbyint uses.
int64_t RoundHalfEven(double v) {
  const double r = std::floor(v);
  const double diff = v - r;
  int64_t i = static_cast<int64_t>(r);
  if (diff > 0.5 || (diff == 0.5 && (i & 1) != 0)) ++i;
  return i;
}

TEST(FixedPointTest, RoundTripWithinHalfAStep) {
  std::mt19937_64 gen(1);
  for (FixedPointFormat f : {FixedPointFormat{64, 32, 65536.0}, FixedPointFormat{32, 16, 100.0},
                             FixedPointFormat{16, 8, 10.0}, FixedPointFormat{8, 0, 50.0}}) {
    std::uniform_real_distribution<double> dist(-f.clip, f.clip);
    const double tolerance = std::ldexp(1.0, -(f.fraction_bits + 1));
    for (int i = 0; i < 10000; ++i) {
      const double x = dist(gen);
      const uint64_t e = EncodeFixedPointScalar(x, f);
      if (f.modulus_bits < 64) {
        ASSERT_LT(e, uint64_t{1} << f.modulus_bits);
      }
      ASSERT_LE(std::abs(DecodeFixedPoint(e, f) - x), tolerance)
          << "k " << f.modulus_bits << " f " << f.fraction_bits << " x " << x;
    }
  }
}

TEST(FixedPointTest, NegativeValuesAreTwosComplement) {
  const FixedPointFormat f{32, 16, 100.0};
  EXPECT_EQ(EncodeFixedPointScalar(-1.5, f), (uint64_t{1} << 32) - 3 * (uint64_t{1} << 15));
  EXPECT_EQ(DecodeFixedPoint(EncodeFixedPointScalar(-1.5, f), f), -1.5);
  EXPECT_EQ(EncodeFixedPointScalar(-std::ldexp(1.0, -16), f), 0xFFFFFFFFu);
  const FixedPointFormat g{64, 32, 65536.0};
  EXPECT_EQ(EncodeFixedPointScalar(-1.0, g), ~uint64_t{0} - 0xFFFFFFFFu);
  EXPECT_EQ(DecodeFixedPoint(~uint64_t{0}, g), -std::ldexp(1.0, -32));
  // Bits above the ring are ignored on decode.
  EXPECT_EQ(DecodeFixedPoint((uint64_t{1} << 40) | 0x10000u, f), 1.0);
}

TEST(FixedPointTest, ClampingIsCounted) {
  const FixedPointFormat f{32, 16, 4.0};
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> values = {0.5f,    4.0f, -4.0f, 4.5f,
                                     -100.0f, inf,  -inf,  std::numeric_limits<float>::quiet_NaN()};
  std::vector<uint64_t> out(values.size());
  EXPECT_EQ(EncodeFixedPoint(values, 1.0, f, out), 5u);  // ±clip itself is not clamped
  std::vector<float> back(values.size());
  DecodeFixedPoint(out, f, back);
  EXPECT_EQ(back[0], 0.5f);
  EXPECT_EQ(back[1], 4.0f);
  EXPECT_EQ(back[2], -4.0f);
  EXPECT_EQ(back[3], 4.0f);
  EXPECT_EQ(back[4], -4.0f);
  EXPECT_EQ(back[5], 4.0f);
  EXPECT_EQ(back[6], -4.0f);
  EXPECT_EQ(back[7], 0.0f);  // NaN encodes as 0
  // The weight is applied before the clamp.
  const std::vector<float> small = {1.0f, -1.0f, 0.25f};
  std::vector<uint64_t> weighted(small.size());
  EXPECT_EQ(EncodeFixedPoint(small, 8.0, f, weighted), 2u);
  EXPECT_EQ(DecodeFixedPoint(weighted[2], f), 2.0);
}

TEST(FixedPointTest, SumsDecodeToTheSum) {
  std::mt19937_64 gen(5);
  for (FixedPointFormat f : {FixedPointFormat{32, 16, 100.0}, FixedPointFormat{64, 32, 65536.0}}) {
    const int n = 300;
    ASSERT_TRUE(ValidateFixedPoint(f, n).ok());
    std::uniform_real_distribution<double> dist(-f.clip, f.clip);
    const size_t dim = 64;
    std::vector<uint64_t> acc(dim, 0);
    std::vector<int64_t> exact(dim, 0);  // sum of the rounded values, as integers
    std::vector<double> truth(dim, 0.0);
    for (int c = 0; c < n; ++c) {
      std::vector<float> x(dim);
      for (size_t i = 0; i < dim; ++i) {
        // Half the coordinates always ±clip: their sums run close to the ring's edge.
        x[i] = static_cast<float>(i % 2 ? dist(gen) : (i % 4 ? -f.clip : f.clip));
        truth[i] += x[i];
        exact[i] += RoundHalfEven(std::ldexp(static_cast<double>(x[i]), f.fraction_bits));
      }
      std::vector<uint64_t> e(dim);
      EncodeFixedPoint(x, 1.0, f, e);
      AddMod(e, f.modulus_bits, acc);
    }
    for (size_t i = 0; i < dim; ++i) {
      if (f.modulus_bits < 64) {
        ASSERT_LT(acc[i], uint64_t{1} << f.modulus_bits);
      }
      EXPECT_EQ(DecodeFixedPoint(acc[i], f),
                std::ldexp(static_cast<double>(exact[i]), -f.fraction_bits));
      EXPECT_NEAR(DecodeFixedPoint(acc[i], f), truth[i],
                  n * std::ldexp(1.0, -(f.fraction_bits + 1)) + 1e-9);
    }
  }
}

TEST(FixedPointTest, AddModWraps) {
  std::vector<uint64_t> acc = {0xFFFFFFFFu, 5, ~uint64_t{0}};
  const std::vector<uint64_t> in = {1, 0xFFFFFFFEu, 2};
  std::vector<uint64_t> a32 = acc;
  a32[2] &= 0xFFFFFFFFu;
  AddMod(in, 32, a32);
  EXPECT_EQ(a32, (std::vector<uint64_t>{0, 3, 1}));
  AddMod(in, 64, acc);
  EXPECT_EQ(acc, (std::vector<uint64_t>{0x100000000u, 0x100000003u, 1}));
}

TEST(FixedPointTest, ValidateAcceptsTheBoundaryAndRejectsBeyondIt) {
  // clip * 2^f = 2^16, 2^31 / 2^16 = 2^15: the largest fitting count is 2^15 - 1.
  const FixedPointFormat f{32, 16, 1.0};
  EXPECT_TRUE(ValidateFixedPoint(f, 32767).ok());
  Status s = ValidateFixedPoint(f, 32768);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("32767"), std::string::npos) << s.message();
  // The defaults (k 64, f 32, clip 2^16): the same 2^15 - 1.
  EXPECT_TRUE(ValidateFixedPoint(FixedPointFormat{}, 32767).ok());
  EXPECT_FALSE(ValidateFixedPoint(FixedPointFormat{}, 32768).ok());
  // A modulus too small for even a handful of clients.
  Status small = ValidateFixedPoint(FixedPointFormat{16, 8, 100.0}, 2);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.message().find("is 1"), std::string::npos) << small.message();
  Status none = ValidateFixedPoint(FixedPointFormat{16, 8, 200.0}, 1);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.message().find("not even one"), std::string::npos) << none.message();
  // A clip whose scaled value is not an integer: the rounded encoding can reach its ceiling.
  // clip * 2^f = 2.5 -> 3; 2^7 - 1 = 127 -> 42 summands fit (42 * 3 = 126).
  EXPECT_TRUE(ValidateFixedPoint(FixedPointFormat{8, 1, 1.25}, 42).ok());
  EXPECT_FALSE(ValidateFixedPoint(FixedPointFormat{8, 1, 1.25}, 43).ok());
}

TEST(FixedPointTest, ValidateRejectsBadFormats) {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (FixedPointFormat f :
       {FixedPointFormat{7, 2, 1.0}, FixedPointFormat{65, 2, 1.0}, FixedPointFormat{32, -1, 1.0},
        FixedPointFormat{32, 32, 1.0}, FixedPointFormat{32, 8, 0.0}, FixedPointFormat{32, 8, -1.0},
        FixedPointFormat{32, 8, inf}, FixedPointFormat{32, 8, nan}}) {
    EXPECT_EQ(ValidateFixedPoint(f, 1).code(), StatusCode::kInvalidArgument)
        << f.modulus_bits << " " << f.fraction_bits << " " << f.clip;
  }
  EXPECT_FALSE(ValidateFixedPoint(FixedPointFormat{}, 0).ok());
}

TEST(FixedPointTest, SixtyFourThirtyTwoIsRoundHalfEvenOfTheWeightedValue) {
  const FixedPointFormat f{64, 32, 65536.0};
  // Exact ties: w * x * 2^32 = m + 1/2.
  const std::vector<float> ties = {std::ldexp(1.0f, -33), std::ldexp(3.0f, -33),
                                   -std::ldexp(1.0f, -33), -std::ldexp(3.0f, -33),
                                   std::ldexp(5.0f, -33)};
  std::vector<uint64_t> out(ties.size());
  EncodeFixedPoint(ties, 1.0, f, out);
  EXPECT_EQ(out[0], 0u);
  EXPECT_EQ(out[1], 2u);
  EXPECT_EQ(out[2], 0u);
  EXPECT_EQ(out[3], ~uint64_t{0} - 1);  // -2
  EXPECT_EQ(out[4], 2u);
  std::mt19937_64 gen(9);
  std::normal_distribution<float> dist(0.0f, 0.01f);
  std::vector<float> x(20000);
  for (float& v : x) v = dist(gen);
  for (double w : {1.0, 0.37, 12.5}) {
    out.assign(x.size(), 0);
    EXPECT_EQ(EncodeFixedPoint(x, w, f, out), 0u);
    for (size_t i = 0; i < x.size(); ++i) {
      const double v = w * static_cast<double>(x[i]) * 4294967296.0;
      ASSERT_EQ(out[i], static_cast<uint64_t>(RoundHalfEven(v))) << i;
      ASSERT_EQ(out[i], static_cast<uint64_t>(std::llrint(v))) << i;
    }
  }
}

}  // namespace
}  // namespace tandem::privacy

// RunningSum: exactness against a long-double reference, bit-identical results under every
// arrival order, rejection without side effects, and overflow detection.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <random>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "coordinator/aggregator.h"
#include "core/rng.h"

namespace tandem {
namespace {

constexpr double kResolution = 1.0 / 4294967296.0;  // 2^-32

struct Contribution {
  std::vector<float> values;
  double weight;
};

// Values spanning several orders of magnitude and both signs, so float sums depend on order.
std::vector<Contribution> RandomContributions(Rng& rng, size_t count, size_t length) {
  std::vector<Contribution> out(count);
  for (auto& c : out) {
    c.values.resize(length);
    for (float& v : c.values) {
      v = static_cast<float>(rng.Normal() * std::pow(10.0, -4.0 + 5.0 * rng.Uniform()));
    }
    c.weight = 0.5 + 100.0 * rng.Uniform();
  }
  return out;
}

void Shuffle(Rng& rng, std::vector<size_t>& order) {
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.Below(i)]);
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Everything observable about a RunningSum, to check that a rejection changed nothing.
struct Snapshot {
  size_t count;
  double total_weight;
  std::vector<float> mean, sum;
  bool operator==(const Snapshot& o) const {
    return count == o.count && std::memcmp(&total_weight, &o.total_weight, sizeof(double)) == 0 &&
           SameBits(mean, o.mean) && SameBits(sum, o.sum);
  }
};
Snapshot Take(const RunningSum& s) {
  Snapshot snap{s.count(), s.total_weight(), std::vector<float>(s.length()),
                std::vector<float>(s.length())};
  EXPECT_TRUE(s.Mean(snap.mean).ok());
  EXPECT_TRUE(s.Sum(snap.sum).ok());
  return snap;
}

TEST(RunningSumTest, MatchesExactWeightedMeanWithinResolution) {
  Rng rng(11);
  const size_t kLength = 257, kCount = 37;
  auto contributions = RandomContributions(rng, kCount, kLength);
  RunningSum sum(kLength);
  for (const auto& c : contributions) ASSERT_TRUE(sum.Add(c.values, c.weight).ok());
  EXPECT_EQ(sum.count(), kCount);

  long double total_weight = 0;
  for (const auto& c : contributions) total_weight += c.weight;
  EXPECT_NEAR(sum.total_weight(), static_cast<double>(total_weight), kCount * kResolution);

  std::vector<float> mean(kLength), raw(kLength);
  ASSERT_TRUE(sum.Mean(mean).ok());
  ASSERT_TRUE(sum.Sum(raw).ok());
  for (size_t i = 0; i < kLength; ++i) {
    long double exact = 0;
    for (const auto& c : contributions) {
      exact += static_cast<long double>(c.weight) * static_cast<long double>(c.values[i]);
    }
    // Quantization: each term off by at most 2^-33, and Σw by as much; then one float rounding.
    const double exact_mean = static_cast<double>(exact / total_weight);
    const double quant = kCount * kResolution / 2 * (1 + std::fabs(exact_mean)) /
                         static_cast<double>(total_weight);
    // (1e-12 relative covers the double arithmetic around it.)
    EXPECT_LE(std::fabs(mean[i] - exact_mean),
              quant + std::ldexp(std::fabs(exact_mean), -24) + 1e-12 * std::fabs(exact_mean))
        << "coordinate " << i;
    const double exact_sum = static_cast<double>(exact);
    EXPECT_LE(std::fabs(raw[i] - exact_sum),
              kCount * kResolution / 2 + std::ldexp(std::fabs(exact_sum), -24) +
                  1e-12 * std::fabs(exact_sum))
        << "coordinate " << i;
  }
}

TEST(RunningSumTest, BitIdenticalUnderEveryArrivalOrder) {
  Rng rng(12);
  const size_t kLength = 64, kCount = 30;
  auto contributions = RandomContributions(rng, kCount, kLength);
  std::vector<size_t> order(kCount);
  std::iota(order.begin(), order.end(), 0);

  std::vector<float> first_mean, first_sum, first_naive;
  bool naive_ever_differs = false;
  RunningSum sum(kLength);
  for (int trial = 0; trial < 300; ++trial) {
    sum.Reset();
    std::vector<float> naive(kLength, 0.0f);
    for (size_t k : order) {
      ASSERT_TRUE(sum.Add(contributions[k].values, contributions[k].weight).ok());
      for (size_t i = 0; i < kLength; ++i) {
        naive[i] += static_cast<float>(contributions[k].weight) * contributions[k].values[i];
      }
    }
    std::vector<float> mean(kLength), raw(kLength);
    ASSERT_TRUE(sum.Mean(mean).ok());
    ASSERT_TRUE(sum.Sum(raw).ok());
    if (trial == 0) {
      first_mean = mean;
      first_sum = raw;
      first_naive = naive;
    } else {
      ASSERT_TRUE(SameBits(mean, first_mean)) << "mean differs in permutation " << trial;
      ASSERT_TRUE(SameBits(raw, first_sum)) << "sum differs in permutation " << trial;
      naive_ever_differs |= !SameBits(naive, first_naive);
    }
    Shuffle(rng, order);
  }
  // The data are such that plain float summation does depend on the order, so the test would
  // catch an implementation that sums floats.
  EXPECT_TRUE(naive_ever_differs);
}

TEST(RunningSumTest, RejectedContributionLeavesStateBitIdentical) {
  Rng rng(13);
  const size_t kLength = 16;
  auto contributions = RandomContributions(rng, 3, kLength);
  RunningSum sum(kLength);
  for (const auto& c : contributions) ASSERT_TRUE(sum.Add(c.values, c.weight).ok());
  const Snapshot before = Take(sum);

  const float kNan = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  std::vector<float> good = contributions[0].values;
  auto with = [&](size_t index, float value) {
    std::vector<float> v = good;
    v[index] = value;
    return v;
  };
  struct Bad {
    const char* what;
    std::vector<float> values;
    double weight;
  };
  const std::vector<Bad> bad = {
      {"NaN last", with(kLength - 1, kNan), 1.0},
      {"+Inf middle", with(kLength / 2, kInf), 1.0},
      {"-Inf first", with(0, -kInf), 1.0},
      {"too short", std::vector<float>(kLength - 1, 0.5f), 1.0},
      {"too long", std::vector<float>(kLength + 1, 0.5f), 1.0},
      {"empty", {}, 1.0},
      {"negative weight", good, -1.0},
      {"NaN weight", good, std::nan("")},
      {"infinite weight", good, std::numeric_limits<double>::infinity()},
      {"weight 2^30", std::vector<float>(kLength, 0.0f), 1073741824.0},
      {"|w*x| = 2^30 at the end", with(kLength - 1, 1073741824.0f), 1.0},
      {"|w*x| = 2^30 by weight", with(kLength - 1, -2.0f), 536870912.0},
      {"|w*x| > 2^30", with(3, 3e9f), 1.0},
  };
  for (const auto& b : bad) {
    Status st = sum.Add(b.values, b.weight);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << b.what << ": " << st.ToString();
    EXPECT_TRUE(Take(sum) == before) << b.what << " changed the state";
  }
  // Just below the limit is accepted.
  ASSERT_TRUE(sum.Add(with(0, 1073741760.0f), 1.0).ok());
  EXPECT_EQ(sum.count(), 4u);
}

TEST(RunningSumTest, EmptyOrWeightlessIsFailedPrecondition) {
  RunningSum sum(4);
  std::vector<float> out(4);
  EXPECT_EQ(sum.Mean(out).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sum.Sum(out).code(), StatusCode::kFailedPrecondition);

  const std::vector<float> values = {1.0f, -2.0f, 3.0f, 0.25f};
  ASSERT_TRUE(sum.Add(values, 0.0).ok());  // a zero weight is allowed, it just adds nothing
  EXPECT_EQ(sum.count(), 1u);
  EXPECT_EQ(sum.Mean(out).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(sum.Sum(out).ok());
  EXPECT_EQ(out, std::vector<float>(4, 0.0f));

  ASSERT_TRUE(sum.Add(values, 2.0).ok());
  ASSERT_TRUE(sum.Mean(out).ok());
  EXPECT_EQ(out, values);  // multiples of 2^-32: exact
  std::vector<float> wrong(3);
  EXPECT_EQ(sum.Mean(wrong).code(), StatusCode::kInvalidArgument);

  sum.Reset();
  EXPECT_EQ(sum.count(), 0u);
  EXPECT_EQ(sum.total_weight(), 0.0);
  EXPECT_EQ(sum.Mean(out).code(), StatusCode::kFailedPrecondition);
}

TEST(RunningSumTest, MeanInPlaceEqualsMeanWithoutASecondBuffer) {
  // Coordinator peak memory: aggregation must not need a model-sized mean beside the 2x sum.
  constexpr size_t kLength = 1001;  // odd: the last float lands in the middle of the buffer
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  RunningSum sum(kLength);
  for (int c = 0; c < 5; ++c) {
    std::vector<float> delta(kLength);
    for (float& v : delta) v = normal(rng);
    ASSERT_TRUE(sum.Add(delta, 1.0 + c).ok());
  }
  std::vector<float> expected(kLength);
  ASSERT_TRUE(sum.Mean(expected).ok());
  StatusOr<std::span<float>> mean = sum.MeanInPlace();
  ASSERT_TRUE(mean.ok()) << mean.status().ToString();
  ASSERT_EQ(mean->size(), kLength);
  for (size_t i = 0; i < kLength; ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>((*mean)[i]), std::bit_cast<uint32_t>(expected[i])) << i;
  }
  // Spent until Reset.
  std::vector<float> out(kLength);
  EXPECT_EQ(sum.Mean(out).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sum.Add(expected, 1.0).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sum.MeanInPlace().status().code(), StatusCode::kFailedPrecondition);
  sum.Reset();
  ASSERT_TRUE(sum.Add(expected, 2.0).ok());
  ASSERT_TRUE(sum.Mean(out).ok());
  // An empty sum is refused as Mean refuses it, and left as it was.
  RunningSum empty(3);
  EXPECT_EQ(empty.MeanInPlace().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(empty.Add(std::vector<float>{1.0f, 2.0f, 3.0f}, 1.0).ok());
}

TEST(RunningSumTest, QuantizesToTwoToTheMinus32) {
  RunningSum sum(4);
  // 2^-34 rounds to 0; ties go to the even multiple: 1.5·2^-32 and 2.5·2^-32 both to 2·2^-32;
  // -2^-32 is exact.
  const std::vector<float> values = {std::ldexp(1.0f, -34), std::ldexp(1.5f, -32),
                                     std::ldexp(2.5f, -32), std::ldexp(-1.0f, -32)};
  ASSERT_TRUE(sum.Add(values, 1.0).ok());
  std::vector<float> out(4);
  ASSERT_TRUE(sum.Sum(out).ok());
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], std::ldexp(2.0f, -32));
  EXPECT_EQ(out[2], std::ldexp(2.0f, -32));
  EXPECT_EQ(out[3], std::ldexp(-1.0f, -32));
}

TEST(RunningSumTest, DetectsPossibleOverflowOfTheFinalSum) {
  // 1e9 is a float; two of them (2e9 < 2^31) are summed exactly, a third may wrap int64.
  const std::vector<float> big = {1e9f, -5.0f};
  RunningSum sum(2);
  ASSERT_TRUE(sum.Add(big, 1.0).ok());
  ASSERT_TRUE(sum.Add(big, 1.0).ok());
  std::vector<float> out(2);
  ASSERT_TRUE(sum.Sum(out).ok());
  EXPECT_EQ(out[0], 2e9f);
  EXPECT_EQ(out[1], -10.0f);
  ASSERT_TRUE(sum.Mean(out).ok());
  EXPECT_EQ(out[0], 1e9f);

  ASSERT_TRUE(sum.Add(big, 1.0).ok());  // each term is in range: accepted
  Status st = sum.Sum(out);
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.ToString();
  EXPECT_NE(st.message().find("2^31"), std::string::npos) << st.message();
  EXPECT_EQ(sum.Mean(out).code(), StatusCode::kOutOfRange);

  // The total weight has the same limit.
  RunningSum weights(1);
  const std::vector<float> zero = {0.0f};
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(weights.Add(zero, 1073741823.0).ok());
  ASSERT_TRUE(weights.Sum(std::span<float>(out).first(1)).ok());
  ASSERT_TRUE(weights.Add(zero, 1073741823.0).ok());
  EXPECT_EQ(weights.Mean(std::span<float>(out).first(1)).code(), StatusCode::kOutOfRange);
}

// A streamed upload folds a contribution in chunk by chunk; the sum must not depend on whether
// a contribution came whole or in pieces, nor on how pieces of different contributions interleave.
TEST(RunningSumTest, PartsAreBitIdenticalToWholeContributions) {
  constexpr size_t kLength = 1003;
  Rng rng(11);
  const std::vector<Contribution> cs = RandomContributions(rng, 6, kLength);
  RunningSum whole(kLength);
  for (const auto& c : cs) ASSERT_TRUE(whole.Add(c.values, c.weight).ok());

  RunningSum streamed(kLength);
  // Contributions 0, 2, 4 whole; 1, 3, 5 in pieces of uneven sizes, interleaved with each other.
  std::vector<std::unique_ptr<RunningSum::Part>> parts;
  for (size_t k = 1; k < cs.size(); k += 2) {
    auto part = streamed.StartPart(cs[k].weight);
    ASSERT_TRUE(part.ok()) << part.status().ToString();
    parts.push_back(std::move(*part));
  }
  size_t done = 0, whole_added = 0;
  while (done < parts.size()) {
    for (size_t p = 0; p < parts.size(); ++p) {
      RunningSum::Part& part = *parts[p];
      if (!part.open()) continue;
      const size_t at = part.folded();
      const size_t n = std::min<size_t>(kLength - at, 1 + rng.Below(300));
      ASSERT_TRUE(part.Add(at, std::span<const float>(cs[2 * p + 1].values).subspan(at, n)).ok());
      if (part.folded() == kLength) {
        ASSERT_TRUE(part.Finish().ok());
        ++done;
      }
    }
    if (whole_added < 3) {
      ASSERT_TRUE(streamed.Add(cs[2 * whole_added].values, cs[2 * whole_added].weight).ok());
      ++whole_added;
    }
    // While a part holds some of its values the sum is not readable.
    std::vector<float> out(kLength);
    if (done < parts.size()) EXPECT_EQ(streamed.Mean(out).code(), StatusCode::kFailedPrecondition);
  }
  for (; whole_added < 3; ++whole_added) {
    ASSERT_TRUE(streamed.Add(cs[2 * whole_added].values, cs[2 * whole_added].weight).ok());
  }
  EXPECT_EQ(streamed.open_parts(), 0u);
  EXPECT_TRUE(Take(streamed) == Take(whole));
}

TEST(RunningSumTest, RejectedPieceFoldsNothing) {
  constexpr size_t kLength = 8;
  RunningSum sum(kLength);
  const std::vector<float> first = {1, 2, 3, 4, 5, 6, 7, 8};
  ASSERT_TRUE(sum.Add(first, 1.0).ok());
  const Snapshot before = Take(sum);
  auto part = sum.StartPart(2.0);
  ASSERT_TRUE(part.ok());
  const std::vector<float> good = {0.5f, 0.25f, 0.125f};
  std::vector<float> nan = good;
  nan[1] = std::numeric_limits<float>::quiet_NaN();
  // Wrong offset, a NaN, past the end, a term too large: each refused with nothing folded.
  EXPECT_EQ((*part)->Add(1, good).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*part)->Add(0, nan).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*part)->Add(0, std::vector<float>(kLength + 1, 0.0f)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*part)->Add(0, std::vector<float>{1e30f}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*part)->folded(), 0u);
  EXPECT_EQ(sum.open_parts(), 0u);
  EXPECT_EQ((*part)->Finish().code(), StatusCode::kFailedPrecondition);  // values missing
  // Abandoned with nothing folded: the sum is exactly as before.
  (*part)->Abandon();
  EXPECT_FALSE(sum.voided());
  EXPECT_TRUE(Take(sum) == before);
  // A piece refused after others were folded folds nothing either; the part goes on.
  auto second = sum.StartPart(2.0);
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE((*second)->Add(0, good).ok());
  EXPECT_EQ((*second)->Add(3, nan).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*second)->Add(4, good).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*second)->Add(3, std::vector<float>{1, 1, 1, 1, 1}).ok());
  ASSERT_TRUE((*second)->Finish().ok());
  RunningSum whole(kLength);
  ASSERT_TRUE(whole.Add(first, 1.0).ok());
  ASSERT_TRUE(whole.Add(std::vector<float>{0.5f, 0.25f, 0.125f, 1, 1, 1, 1, 1}, 2.0).ok());
  EXPECT_TRUE(Take(sum) == Take(whole));
  EXPECT_EQ((*part)->Add(0, good).code(), StatusCode::kFailedPrecondition);  // abandoned
  EXPECT_EQ(sum.StartPart(-1.0).status().code(), StatusCode::kInvalidArgument);
}

TEST(RunningSumTest, PartAbandonedAfterFoldingVoidsTheSum) {
  RunningSum sum(4);
  ASSERT_TRUE(sum.Add(std::vector<float>{1, 2, 3, 4}, 1.0).ok());
  auto part = sum.StartPart(1.0);
  ASSERT_TRUE(part.ok());
  ASSERT_TRUE((*part)->Add(0, std::vector<float>{9, 9}).ok());
  EXPECT_EQ(sum.open_parts(), 1u);
  (*part)->Abandon();
  EXPECT_TRUE(sum.voided());
  std::vector<float> out(4);
  EXPECT_EQ(sum.Mean(out).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sum.Sum(out).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sum.MeanInPlace().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sum.Add(std::vector<float>{1, 2, 3, 4}, 1.0).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(sum.StartPart(1.0).status().code(), StatusCode::kFailedPrecondition);
  sum.Reset();
  EXPECT_FALSE(sum.voided());
  ASSERT_TRUE(sum.Add(std::vector<float>{1, 2, 3, 4}, 1.0).ok());
  ASSERT_TRUE(sum.Mean(out).ok());
  EXPECT_EQ(out[3], 4.0f);
}

}  // namespace
}  // namespace tandem

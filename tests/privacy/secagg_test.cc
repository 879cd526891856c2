// Secure aggregation end to end (privacy/secagg.h, Bonawitz et al. 2017; SecAgg+ of Bell et al.
// 2020): whole rounds in-process with clients dropping at every step, too few survivors, SecAgg+
// over a sparse graph, and fresh keys every round.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "privacy/secagg.h"
#include "privacy/secagg_graph.h"
#include "tests/privacy/secagg_test_util.h"

namespace tandem::privacy {
namespace {

using namespace testing;

// ---- Whole rounds. ----

TEST(SecAggTest, AllSurviveGivesTheExactSum64) {
  Harness h(Params(3, 64), 6);
  auto sum = h.Run();
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(h.server().survivors().size(), 6u);
  EXPECT_TRUE(h.server().dropped().empty());
  EXPECT_EQ(*sum, h.ExpectedSum());
  EXPECT_EQ(h.server().step(), SecAggStep::kDone);
}

TEST(SecAggTest, AllSurviveGivesTheExactSum32) {
  Harness h(Params(3, 32), 5);
  auto sum = h.Run();
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, h.ExpectedSum());
  for (uint64_t v : *sum) EXPECT_LT(v, uint64_t{1} << 32);
}

TEST(SecAggTest, MaskedInputHidesTheInput) {
  Harness h(Params(2, 32, 64), 3);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  h.ShareKeys();
  ASSERT_TRUE(h.server().CloseShareKeys().ok());
  auto request = h.server().MaskedInputRequestFor(h.id(0));
  ASSERT_TRUE(request.ok());
  std::vector<uint64_t> y = h.input(0);
  ASSERT_TRUE(h.client(0).MaskInput(*request, y).ok());
  size_t equal = 0;
  for (size_t j = 0; j < y.size(); ++j) {
    EXPECT_LT(y[j], uint64_t{1} << 32);
    equal += y[j] == h.input(0)[j];
  }
  EXPECT_LE(equal, 1u);  // each word equal with probability 2^-32
}

TEST(SecAggTest, DropoutsAtEveryStepAboveThreshold) {
  // 10 clients, t = 4: 1 never advertises, 1 never shares, 2 never mask (recovered from their
  // shares), 2 never answer the unmask request.
  Drops d;
  d.before_advertise = {9};
  d.after_advertise = {0};
  d.after_share = {3, 7};
  d.after_mask = {1, 5};
  for (int bits : {32, 64}) {
    Harness h(Params(4, bits), 10, 11 + bits);
    auto sum = h.Run(d);
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(h.server().advertised().size(), 9u);
    EXPECT_EQ(h.server().share_senders().size(), 8u);
    EXPECT_EQ(h.server().survivors().size(), 6u);
    EXPECT_EQ(h.server().dropped(), (std::vector<std::string>{"client-03", "client-07"}));
    EXPECT_EQ(*sum, h.ExpectedSum());
  }
}

TEST(SecAggTest, DropoutAfterMaskingOnlyIsRecovered) {
  Drops d;
  d.after_share = {2};
  Harness h(Params(3), 5);
  auto sum = h.Run(d);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, h.ExpectedSum());
  EXPECT_EQ(h.server().survivors().size(), 4u);
}

// Fewer than t at a step: that step's close aborts, and every later call is refused.
void ExpectAborted(Harness& h, const StatusOr<std::vector<uint64_t>>& result) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kFailedPrecondition) << result.status().ToString();
  EXPECT_EQ(h.server().step(), SecAggStep::kAborted);
  EXPECT_FALSE(h.server().Finish().ok());
  EXPECT_FALSE(h.server().CloseMaskedInput().ok());
  EXPECT_FALSE(h.server().OnMaskedInput(h.id(0), h.input(0)).ok());
}

TEST(SecAggTest, TooFewAdvertisedAborts) {
  Drops d;
  d.before_advertise = Range(0, 3);
  Harness h(Params(3), 5);
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, TooFewShareSendersAborts) {
  Drops d;
  d.after_advertise = Range(1, 4);
  Harness h(Params(3), 5);
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, TooFewMaskedInputsAborts) {
  Drops d;
  d.after_share = Range(0, 3);
  Harness h(Params(3), 5);
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, TooFewUnmaskAnswersAbortsWithNothingUnmasked) {
  Drops d;
  d.after_mask = Range(0, 4);  // 1 of 5 answers, t = 3
  Harness h(Params(3), 5);
  auto result = h.Run(d);
  ExpectAborted(h, result);
  EXPECT_NE(result.status().message().find("unmask answers"), std::string::npos);
}

TEST(SecAggTest, TooFewAnswersAfterADropoutAborts) {
  // Complete graph, t = 3 of 5: client-00 drops after sharing keys; of the four survivors only
  // two answer the unmask request, so U4 = 2 < t: abort before any secret is combined.
  Drops d;
  d.after_share = {0};
  d.after_mask = {1, 2};
  Harness h(Params(3), 5);
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, SecAggPlusExactWithAndWithoutDropouts) {
  const SecAggParams params = Params(5, 64, 101, 8);
  {
    Harness h(params, 50, 3);
    auto sum = h.Run();
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(*sum, h.ExpectedSum());
    EXPECT_EQ(h.server().survivors().size(), 50u);
  }
  {
    Drops d;
    d.before_advertise = {49};
    d.after_advertise = {10};
    d.after_share = {3, 21, 40};
    d.after_mask = {7, 30};
    Harness h(params, 50, 4);
    auto sum = h.Run(d);
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(h.server().survivors().size(), 45u);
    EXPECT_EQ(*sum, h.ExpectedSum());
  }
  {
    Harness h(Params(5, 32, 101, 8), 50, 5);
    Drops d;
    d.after_share = {0, 1, 2};
    auto sum = h.Run(d);
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(*sum, h.ExpectedSum());
  }
}

TEST(SecAggTest, SecAggPlusKeyListsCarryOnlyNeighbours) {
  Harness h(Params(5, 64, 8, 8), 50, 6);
  h.Advertise();
  ASSERT_TRUE(h.server().CloseAdvertise().ok());
  for (int i = 0; i < 50; ++i) {
    auto list = h.server().KeyListFor(h.id(i));
    ASSERT_TRUE(list.ok());
    EXPECT_EQ(list->advertised.size(), 50u);
    EXPECT_EQ(list->neighbours.size(), 9u);
  }
}

// The neighbours of client `i` (U1 = everyone) under `params`, by index.
std::vector<int> NeighboursOf(const SecAggParams& params, int n, uint64_t seed, int i) {
  Harness probe(params, n, seed);
  probe.Advertise();
  EXPECT_TRUE(probe.server().CloseAdvertise().ok());
  auto list = probe.server().KeyListFor(probe.id(i));
  EXPECT_TRUE(list.ok());
  std::vector<int> out;
  for (const auto& p : list->neighbours) {
    if (p.id != probe.id(i)) out.push_back(probe.Index(p.id));
  }
  return out;
}

TEST(SecAggTest, SecAggPlusTooFewAnswersInOneNeighbourhoodAbortsBeforeReconstructing) {
  // k = 4, t = 3, everyone masks; client-00 and two of its four neighbours do not answer the
  // unmask request. 17 answers overall, but only 2 holders of client-00's self-mask seed.
  const SecAggParams params = Params(3, 64, 16, 4);
  const std::vector<int> nb = NeighboursOf(params, 20, 12, 0);
  ASSERT_EQ(nb.size(), 4u);
  Harness h(params, 20, 12);
  Drops d;
  d.after_mask = {0, nb[0], nb[1]};
  auto result = h.Run(d);
  ExpectAborted(h, result);
  EXPECT_NE(result.status().message().find("client-00's self-mask seed"), std::string::npos)
      << result.status().ToString();
}

TEST(SecAggTest, SecAggPlusNeighbourhoodBelowThresholdAborts) {
  // k = 4, t = 5: a client's whole neighbourhood must survive; drop one neighbour of client-00
  // after sharing keys and its self mask can no longer be recovered from t holders.
  const SecAggParams params = Params(5, 64, 16, 4);
  const std::vector<int> nb = NeighboursOf(params, 20, 8, 0);
  ASSERT_EQ(nb.size(), 4u);
  Harness h(params, 20, 8);
  Drops d;
  d.after_share = {nb[2]};
  ExpectAborted(h, h.Run(d));
}

TEST(SecAggTest, FreshKeysEveryRound) {
  auto a = SecAggClient::Create(Params(2), "client-00");
  auto b = SecAggClient::Create(Params(2), "client-00");
  ASSERT_TRUE(a.ok() && b.ok());
  auto ka = a->Advertise(), kb = b->Advertise();
  ASSERT_TRUE(ka.ok() && kb.ok());
  EXPECT_NE(ka->c_public, kb->c_public);
  EXPECT_NE(ka->s_public, kb->s_public);
  EXPECT_NE(ka->c_public, ka->s_public);
  EXPECT_FALSE(a->Advertise().ok());  // once per round
}

}  // namespace
}  // namespace tandem::privacy

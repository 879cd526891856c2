// The answer-or-hand-off format and its test-time cap (route/handoff.h): parsing, the budget's
// arithmetic, and a refused hand-off answered by the device with the marker banned.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>

#include "core/threads.h"
#include "models/gpt.h"
#include "models/tokenizer.h"
#include "route/handoff.h"

namespace tandem {
namespace {

TEST(HandOffFormatTest, ParsesAnswersAndHandOffs) {
  EXPECT_EQ(kHandOffMarker.size(), 1u);
  EXPECT_EQ(static_cast<int32_t>(kHandOffMarker[0]), kHandOffToken);
  // The marker survives the byte tokenizer both ways (only NUL is reserved there).
  EXPECT_EQ(ByteTokenizer::Encode(kHandOffCompletion), (std::vector<int32_t>{kHandOffToken, '\n'}));
  EXPECT_EQ(ByteTokenizer::Decode({kHandOffToken}), std::string(kHandOffMarker));

  auto answer = ParseCompletion("46\n12+3=");
  EXPECT_EQ(answer.kind, CompletionKind::kAnswer);
  EXPECT_EQ(answer.answer, "46");
  EXPECT_EQ(ParseCompletion(std::string("-7\0junk", 7)).answer, "-7");
  EXPECT_EQ(ParseCompletion("").kind, CompletionKind::kAnswer);
  EXPECT_EQ(ParseCompletion(kHandOffCompletion).kind, CompletionKind::kHandOff);
  EXPECT_EQ(ParseCompletion("\x05").kind, CompletionKind::kHandOff);
  EXPECT_EQ(ParseCompletion("4\x05" "6\n").kind, CompletionKind::kHandOff);
  EXPECT_TRUE(ParseCompletion(kHandOffCompletion).answer.empty());
  // A marker after the line's end is not part of this answer.
  auto later = ParseCompletion("46\n\x05\n");
  EXPECT_EQ(later.kind, CompletionKind::kAnswer);
  EXPECT_EQ(later.answer, "46");
}

TEST(HandOffCapTest, KeepsHandOffsWithinTheBudget) {
  EXPECT_FALSE((HandOffBudget{1.5, -1}).Validate().ok());
  EXPECT_FALSE((HandOffBudget{-0.1, -1}).Validate().ok());
  const ParsedCompletion handoff{CompletionKind::kHandOff, ""};
  const ParsedCompletion answer{CompletionKind::kAnswer, "3"};

  HandOffCap quarter({0.25, -1});
  for (int n = 1; n <= 40; ++n) {
    const RouteDecision d = quarter.Decide(handoff);
    // Granted exactly when one more stays within a quarter of the queries so far.
    EXPECT_EQ(d == RouteDecision::kHandOff, n % 4 == 0) << "query " << n;
    EXPECT_LE(quarter.handoffs(), quarter.queries() / 4);
  }
  EXPECT_EQ(quarter.handoffs(), 10);
  EXPECT_EQ(quarter.refused(), 30);
  // Answers count as queries and are never refused.
  EXPECT_EQ(quarter.Decide(answer), RouteDecision::kAnswer);
  EXPECT_EQ(quarter.queries(), 41);

  HandOffCap count({1.0, 3});
  int granted = 0;
  for (int n = 0; n < 10; ++n) granted += count.Decide(handoff) == RouteDecision::kHandOff;
  EXPECT_EQ(granted, 3);

  HandOffCap none({0.0, -1});
  EXPECT_EQ(none.Decide(handoff), RouteDecision::kHandOffRefused);
  EXPECT_STREQ(RouteDecisionName(RouteDecision::kHandOffRefused), "hand-off-refused");
}

// A model that emits the marker at every position: the final LayerNorm's gain is 0, so every
// position's hidden state is its bias, set along the marker's embedding.
std::shared_ptr<Gpt> MarkerModel() {
  auto model = std::make_shared<Gpt>(ModelConfig{256, 32, 16, 1, 2});
  model->InitWeights(3);
  const int C = 16;
  const float* wte = model->param("wte.weight");
  float* gain = model->param("ln_f.weight");
  float* bias = model->param("ln_f.bias");
  double norm2 = 0.0;
  for (int c = 0; c < C; ++c) norm2 += wte[kHandOffToken * C + c] * wte[kHandOffToken * C + c];
  for (int c = 0; c < C; ++c) {
    gain[c] = 0.0f;
    bias[c] = static_cast<float>(30.0 * wte[kHandOffToken * C + c] / norm2);  // its logit: 30
  }
  return model;
}

TEST(RankedHandOffGrantsTest, GrantsTheBudgetsShareOfTheHighestScores) {
  const std::vector<double> scores = {0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6, 0.05};
  const std::vector<bool> all(scores.size(), true);
  for (double f : {0.0, 0.1, 0.25, 0.3, 0.35, 0.5, 0.99, 1.0}) {
    auto g = RankedHandOffGrants(scores, all, f);
    ASSERT_TRUE(g.ok()) << g.status().message();
    const size_t quota = static_cast<size_t>(std::floor(f * scores.size() + 1e-9));
    size_t granted = 0;
    double lowest_granted = 2.0, highest_refused = -1.0;
    for (size_t i = 0; i < scores.size(); ++i) {
      granted += (*g)[i];
      if ((*g)[i]) lowest_granted = std::min(lowest_granted, scores[i]);
      else highest_refused = std::max(highest_refused, scores[i]);
    }
    EXPECT_EQ(granted, quota) << "budget " << f;  // exactly the budget, never more
    if (granted > 0 && granted < scores.size()) EXPECT_GT(lowest_granted, highest_refused);
  }
  // 30% of 10 is 3: the three highest scores, 0.9, 0.8 and 0.7.
  auto g = RankedHandOffGrants(scores, all, 0.3);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, (std::vector<bool>{true, false, false, true, false, false, true, false, false,
                                   false}));
}

TEST(RankedHandOffGrantsTest, OnlyQueriesThatAskAreGrantedAndTiesGoToTheEarlier) {
  // Half the budget of 6 is 3, but only two ask: both granted, the high scorers that do not ask
  // are not.
  const std::vector<double> scores = {5.0, 1.0, 4.0, 0.0, 3.0, 2.0};
  const std::vector<bool> asks = {false, true, false, true, false, false};
  auto g = RankedHandOffGrants(scores, asks, 0.5);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(*g, (std::vector<bool>{false, true, false, true, false, false}));
  // Equal scores: the earlier queries first.
  const std::vector<double> flat(5, 0.5);
  auto t = RankedHandOffGrants(flat, std::vector<bool>(5, true), 0.4);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, (std::vector<bool>{true, true, false, false, false}));
}

TEST(RankedHandOffGrantsTest, RejectsBadInput) {
  const std::vector<double> scores = {0.1, 0.2};
  const std::vector<bool> asks = {true, true};
  EXPECT_FALSE(RankedHandOffGrants(scores, std::vector<bool>{true}, 0.5).ok());
  EXPECT_FALSE(RankedHandOffGrants(scores, asks, 1.5).ok());
  EXPECT_FALSE(RankedHandOffGrants(scores, asks, -0.1).ok());
  const std::vector<double> nan = {0.1, std::nan("")};
  EXPECT_FALSE(RankedHandOffGrants(nan, asks, 0.5).ok());
  auto empty = RankedHandOffGrants({}, {}, 0.5);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(HandOffCapTest, RefusedHandOffIsAnsweredByTheDeviceWithoutTheMarker) {
  SetComputeThreads(1);
  auto device = MarkerModel();
  const SamplingOptions sampling{1.0f, 0, 1.0f};
  std::map<std::string, int> asked;
  const CloudAnswer cloud = [&](std::string_view prompt) -> StatusOr<std::string> {
    ++asked[std::string(prompt)];
    return std::string("cloud says 7");
  };
  Rng rng(1);
  HandOffCap open({1.0, -1});
  auto granted = AnswerQuery(device->shared_weights(), "3+4=", 6, sampling, rng, open, cloud);
  ASSERT_TRUE(granted.ok()) << granted.status().message();
  EXPECT_EQ(granted->decision, RouteDecision::kHandOff);
  EXPECT_EQ(granted->completion.substr(0, 1), std::string(kHandOffMarker));
  EXPECT_EQ(granted->answer, "cloud says 7");
  EXPECT_EQ(asked["3+4="], 1);

  HandOffCap closed({0.0, -1});
  for (int r = 0; r < 20; ++r) {
    auto refused = AnswerQuery(device->shared_weights(), "3+4=", 6, sampling, rng, closed, cloud);
    ASSERT_TRUE(refused.ok());
    EXPECT_EQ(refused->decision, RouteDecision::kHandOffRefused);
    EXPECT_EQ(refused->answer.find(kHandOffMarker), std::string::npos) << refused->answer;
  }
  EXPECT_EQ(asked["3+4="], 1);  // the cloud was not asked again
  EXPECT_EQ(closed.refused(), 20);

  // The banned token is never drawn even at high temperature.
  const std::vector<int32_t> prompt = {0, '1', '='};
  const int32_t banned[] = {kHandOffToken};
  for (int r = 0; r < 50; ++r) {
    for (int32_t t : DecodeLine(device->shared_weights(), prompt, 8, {3.0f, 0, 1.0f}, rng, banned)) {
      ASSERT_NE(t, kHandOffToken);
    }
  }
  EXPECT_FALSE(AnswerQuery(device->shared_weights(), std::string(40, '1'), 6, sampling, rng,
                           open, cloud).ok());
}

}  // namespace
}  // namespace tandem

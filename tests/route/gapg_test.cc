// GAPG's data side (route/gapg.h): the rewards a_a > a_c > 0, the cloud asked at most once per
// prompt, the adaptive prompt filter's ρ, and on-policy rollouts feeding the local trainer.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>

#include "core/threads.h"
#include "models/gpt.h"
#include "models/tokenizer.h"
#include "route/gapg.h"
#include "train/local_trainer.h"

namespace tandem {
namespace {

class OneThread : public testing::Environment {
  void SetUp() override { SetComputeThreads(1); }
};
testing::Environment* const kOneThread = testing::AddGlobalTestEnvironment(new OneThread);

std::vector<ArithmeticExample> Examples(int n) {
  auto ex = MakeArithmeticExamples(2, n, 7);
  EXPECT_TRUE(ex.ok());
  return *ex;
}

// A cloud that answers right on prompts whose index in `examples` is even, and counts questions.
struct CountingCloud {
  std::vector<ArithmeticExample> examples;
  std::map<std::string, int> asked;
  CloudAnswer Fn() {
    return [this](std::string_view prompt) -> StatusOr<std::string> {
      ++asked[std::string(prompt)];
      for (size_t i = 0; i < examples.size(); ++i) {
        if (examples[i].prompt == prompt) return i % 2 == 0 ? examples[i].answer : "wrong";
      }
      return Status::NotFound("unknown prompt");
    };
  }
};

TEST(GapgTest, RewardsOrderAnswersAndHandOffs) {
  EXPECT_TRUE(GapgRewards{}.Validate().ok());
  EXPECT_FALSE((GapgRewards{0.5, 0.5}).Validate().ok());
  EXPECT_FALSE((GapgRewards{1.0, 0.0}).Validate().ok());
  EXPECT_FALSE((GapgRewards{0.3, 0.5}).Validate().ok());
  CountingCloud cloud{Examples(4), {}};
  CloudOracle oracle(cloud.Fn());
  const GapgRewards rw{1.0, 0.3};
  const auto& right = cloud.examples[0];  // the cloud is right on it
  const auto& wrong = cloud.examples[1];  // and wrong on this one
  EXPECT_EQ(*GapgReward(ParseCompletion(right.answer + "\n"), right, oracle, rw), 1.0);
  EXPECT_EQ(*GapgReward(ParseCompletion("x\n"), right, oracle, rw), 0.0);
  EXPECT_EQ(oracle.queries(), 0);  // answers never ask the cloud
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(*GapgReward(ParseCompletion(kHandOffCompletion), right, oracle, rw), 0.3);
    EXPECT_EQ(*GapgReward(ParseCompletion(kHandOffCompletion), wrong, oracle, rw), 0.0);
  }
  EXPECT_EQ(oracle.queries(), 2);
  EXPECT_EQ(cloud.asked[right.prompt], 1);
  EXPECT_EQ(cloud.asked[wrong.prompt], 1);
}

TEST(GapgTest, FilterKeepsMixedPromptsAndAtMostRhoTimesAsManyCloudOnes) {
  // 0..9 mixed; 10..29 unsolved locally (the cloud right on even indices); 30..34 all solved.
  CountingCloud cloud{Examples(35), {}};
  std::vector<PromptOutcome> outcomes;
  for (int i = 0; i < 35; ++i) {
    outcomes.push_back({i < 10 ? 1 + i % 3 : i < 30 ? 0 : 4, 4});
  }
  CloudOracle oracle(cloud.Fn());
  for (double rho : {0.0, 0.25, 0.5, 1.0, 5.0}) {
    auto r = AdaptivePromptFilter(cloud.examples, outcomes, rho, oracle);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->mixed.size(), 10u);
    for (size_t i = 0; i < 10; ++i) EXPECT_EQ(r->mixed[i], i);
    // ⌊ρ·|D1|⌋, or every unsolved prompt the cloud gets right (10 of them) when fewer.
    EXPECT_EQ(r->cloud_only.size(), std::min<size_t>(10, static_cast<size_t>(rho * 10)))
        << "rho " << rho;
    for (size_t i : r->cloud_only) {
      EXPECT_GE(i, 10u);
      EXPECT_LT(i, 30u);
      EXPECT_EQ(i % 2, 0u);
    }
    EXPECT_EQ(r->Kept().size(), r->mixed.size() + r->cloud_only.size());
    if (rho == 0.0) {
      EXPECT_EQ(r->cloud_queries, 0);
    }
  }
  // Over all five calls each prompt was asked at most once, and only unsolved ones.
  for (const auto& [prompt, n] : cloud.asked) EXPECT_EQ(n, 1) << prompt;
  EXPECT_EQ(cloud.asked.size(), 20u);
  EXPECT_EQ(oracle.queries(), 20);
  // Asking again costs nothing.
  auto again = AdaptivePromptFilter(cloud.examples, outcomes, 5.0, oracle);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->cloud_queries, 0);

  EXPECT_FALSE(AdaptivePromptFilter(cloud.examples, outcomes, -1.0, oracle).ok());
  EXPECT_FALSE(AdaptivePromptFilter(cloud.examples, std::span(outcomes).first(3), 1.0, oracle).ok());
  auto bad = outcomes;
  bad[0] = {5, 4};
  EXPECT_FALSE(AdaptivePromptFilter(cloud.examples, bad, 1.0, oracle).ok());
}

TEST(GapgTest, RolloutsFeedTheLocalTrainer) {
  CountingCloud cloud{Examples(6), {}};
  CloudOracle oracle(cloud.Fn());
  Gpt model(ModelConfig{256, 32, 16, 1, 2});
  model.InitWeights(2);
  const SamplingOptions sampling{1.0f, 0, 1.0f};
  Rng rng(4);
  auto rollout = SampleGapgRollout(model.shared_weights(), cloud.examples[0], 4, 6, sampling,
                                   {1.0, 0.5}, oracle, rng);
  ASSERT_TRUE(rollout.ok()) << rollout.status().message();
  ASSERT_EQ(rollout->completions.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const auto& c = rollout->completions[i];
    EXPECT_GE(c.size(), 1u);
    EXPECT_LE(c.size(), 6u);
    const ParsedCompletion p = ParseCompletion(ByteTokenizer::Decode(c));
    const double want = p.kind == CompletionKind::kHandOff ? 0.5
                        : ExactMatch(p.answer, cloud.examples[0].answer) ? 1.0 : 0.0;
    EXPECT_EQ(rollout->rewards[i], want);
  }
  EXPECT_FALSE(SampleGapgRollout(model.shared_weights(), cloud.examples[0], 1, 6, sampling,
                                 {1.0, 0.5}, oracle, rng).ok());
  EXPECT_FALSE(SampleGapgRollout(model.shared_weights(), cloud.examples[0], 4, 40, sampling,
                                 {1.0, 0.5}, oracle, rng).ok());

  // A trainer step on GAPG's on-policy term runs (with a random model the groups' rewards are
  // mostly tied at 0, so the step's size is not asserted).
  PolicyGradientTerm term(GapgRolloutSource(cloud.examples, 2, 4, 6, sampling, {1.0, 0.5}, &oracle),
                          {});
  LocalTrainer trainer(&model, TrainerOptions{});
  auto losses = trainer.Step({&term}, 1e-3f, rng);
  ASSERT_TRUE(losses.ok()) << losses.status().message();
  EXPECT_TRUE(std::isfinite((*losses)[0].loss));
}

}  // namespace
}  // namespace tandem

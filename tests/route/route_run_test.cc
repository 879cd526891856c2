// The route commands' pieces: the [route] config and its errors, the held-out split, the router
// baseline's classifier and its budget threshold.
#include "route/route_run.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/rng.h"
#include "route/router.h"

namespace tandem {
namespace {

constexpr const char* kMinimal = R"(
[route]
device_checkpoint = "d.safetensors"
cloud_checkpoint = "c.safetensors"
)";

StatusOr<RouteConfig> Read(const std::string& extra, const std::string& base = kMinimal) {
  auto config = Config::Parse(base + extra);
  if (!config.ok()) return config.status();
  return RouteConfigFromConfig(*config);
}

void ExpectError(const std::string& extra, const std::string& needle,
                 const std::string& base = kMinimal) {
  auto r = Read(extra, base);
  ASSERT_FALSE(r.ok()) << "accepted: " << extra;
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
}

TEST(RouteConfigTest, DefaultsAndOverrides) {
  auto r = Read("mode = \"grpo\"\nbudget = 0.1\nlevels = [1, 2]\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->mode, "grpo");
  EXPECT_DOUBLE_EQ(r->budget, 0.1);
  EXPECT_EQ(r->levels, (std::vector<int>{1, 2}));
  EXPECT_EQ(r->baseline, "policy");
  EXPECT_EQ(RouteRunDirectory(*r), "runs/route");
}

TEST(RouteConfigTest, RejectsBadValues) {
  ExpectError("", "route.device_checkpoint", "[route]\ncloud_checkpoint = \"c\"\n");
  ExpectError("", "route.cloud_checkpoint", "[route]\ndevice_checkpoint = \"d\"\n");
  ExpectError("handoff_correct = 1.0\n", "route.handoff_correct");
  ExpectError("handoff_correct = 0.0\n", "route.handoff_correct");
  ExpectError("answer_correct = 0.4\n", "route.answer_correct");
  ExpectError("mode = \"ppo\"\n", "route.mode");
  ExpectError("baseline = \"best\"\n", "route.baseline");
  ExpectError("budget = 1.5\n", "route.budget");
  ExpectError("budget = -0.1\n", "route.budget");
  ExpectError("group_size = 1\n", "route.group_size");
  ExpectError("levels = [7]\n", "route.levels");
  ExpectError("levels = []\n", "route.levels");
  ExpectError("test_fraction = 1.0\n", "route.test_fraction");
  ExpectError("rho = -1.0\n", "route.rho");
  ExpectError("warm_start_handoff_fraction = 2.0\n", "route.warm_start_handoff_fraction");
  ExpectError("max_tokens = 0\n", "route.max_tokens");
  ExpectError("steps = -3\n", "route.steps");
  ExpectError("temprature = 1.0\n", "route.temprature");  // unknown key
  ExpectError("cap = \"fifo\"\n", "route.cap");
  ExpectError("trainable = \"bottom\"\n", "route.trainable");
  ExpectError("policy_answers = \"cloud\"\n", "route.policy_answers");
  ExpectError("task_data_examples_per_level = -1\n", "route.task_data_examples_per_level");
  ExpectError("task_data_seed = -2\n", "route.task_data_seed");
}

TEST(RoutePromptsTest, TrainAndTestAreDisjointAndCoverEveryPrompt) {
  auto r = Read("levels = [1, 2]\nexamples_per_level = 300\n");
  ASSERT_TRUE(r.ok());
  auto p = MakeRoutePrompts(*r);
  ASSERT_TRUE(p.ok()) << p.status().message();
  std::set<std::string> train, test;
  for (const auto& e : p->train) EXPECT_TRUE(train.insert(e.prompt).second) << e.prompt;
  for (const auto& e : p->test) {
    EXPECT_TRUE(test.insert(e.prompt).second) << e.prompt;
    EXPECT_EQ(train.count(e.prompt), 0u) << e.prompt << " is in both";
  }
  const double share = double(test.size()) / (train.size() + test.size());
  EXPECT_NEAR(share, 0.3, 0.08);
  // Another seed splits the same prompts differently.
  RouteConfig other = *r;
  other.seed = 2;
  auto q = MakeRoutePrompts(other);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->train.size() + q->test.size(), train.size() + test.size());
  size_t moved = 0;
  for (const auto& e : q->test) moved += train.count(e.prompt);
  EXPECT_GT(moved, 0u);
}

// With the task-tuning data named, no prompt that `tandem train` drew for it is a test prompt.
TEST(RoutePromptsTest, TaskTuningPromptsAreNeverTestPrompts) {
  auto r = Read("levels = [2]\nexamples_per_level = 2000\ntask_data_seed = 12\n"
                "task_data_examples_per_level = 3000\n");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->cap, "online");
  auto p = MakeRoutePrompts(*r);
  ASSERT_TRUE(p.ok()) << p.status().message();
  auto tuned = MakeArithmeticExamples(2, 3000, 12 * 1000 + 2);
  ASSERT_TRUE(tuned.ok());
  std::set<std::string> seen;
  for (const auto& e : *tuned) seen.insert(e.prompt);
  for (const auto& e : p->test) EXPECT_EQ(seen.count(e.prompt), 0u) << e.prompt;
  EXPECT_FALSE(p->test.empty());
  EXPECT_GT(p->excluded_from_test, 0);
  // Without the exclusion the same split would have held those prompts out: they moved to
  // training, nothing was lost.
  RouteConfig plain = *r;
  plain.task_data_examples_per_level = 0;
  auto q = MakeRoutePrompts(plain);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->excluded_from_test, 0);
  EXPECT_EQ(q->test.size(), p->test.size() + static_cast<size_t>(p->excluded_from_test));
  EXPECT_EQ(q->train.size() + q->test.size(), p->train.size() + p->test.size());
}

TEST(RoutePromptsTest, TooFewPromptsIsAnError) {
  auto r = Read("examples_per_level = 1\n");
  ASSERT_TRUE(r.ok());
  auto p = MakeRoutePrompts(*r);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("route.examples_per_level"), std::string::npos);
}

// A separable toy problem: the label is whether feature 0 + feature 2 > 0, feature 1 is noise.
TEST(LogisticRouterTest, LearnsASeparableProblem) {
  Rng rng(3);
  std::vector<RouterFeatureRow> x;
  std::vector<int> y;
  for (int i = 0; i < 400; ++i) {
    RouterFeatureRow row = {rng.Normal() * 2.0 + 5.0, rng.Normal(), rng.Normal() * 0.5 - 1.0};
    const double margin = (row[0] - 5.0) + 2.0 * (row[2] + 1.0);
    if (std::abs(margin) < 0.3) continue;  // a gap between the classes
    x.push_back(row);
    y.push_back(margin > 0);
  }
  auto router = LogisticRouter::Fit(x, y, LogisticOptions{});
  ASSERT_TRUE(router.ok()) << router.status().message();
  int right = 0;
  for (size_t i = 0; i < x.size(); ++i) right += (router->Probability(x[i]) > 0.5) == (y[i] == 1);
  EXPECT_GE(right, static_cast<int>(x.size()) - 2) << right << " of " << x.size();
  EXPECT_LT(router->training_loss(), 0.15);
  // The noise feature carries little weight against the two that decide.
  EXPECT_LT(std::abs(router->weights()[1]), 0.3 * std::abs(router->weights()[0]));
  EXPECT_GT(router->weights()[0], 0.0);
  EXPECT_GT(router->weights()[2], 0.0);
}

TEST(LogisticRouterTest, RejectsBadInput) {
  std::vector<RouterFeatureRow> x = {{1, 2, 3}, {2, 3, 4}};
  std::vector<int> y = {0, 1};
  EXPECT_FALSE(LogisticRouter::Fit(x, std::span<const int>(y).first(1), {}).ok());
  EXPECT_FALSE(LogisticRouter::Fit({}, {}, {}).ok());
  std::vector<int> bad = {0, 2};
  EXPECT_FALSE(LogisticRouter::Fit(x, bad, {}).ok());
  x[1][0] = std::nan("");
  EXPECT_FALSE(LogisticRouter::Fit(x, y, {}).ok());
  LogisticOptions o;
  o.lr = 0.0;
  EXPECT_FALSE(o.Validate().ok());
}

TEST(TopFractionThresholdTest, HandsOffTheBudgetsShare) {
  std::vector<double> s = {0.9, 0.1, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6, 0.0};
  auto above = [&](double t) {
    int n = 0;
    for (double v : s) n += v >= t;
    return n;
  };
  EXPECT_EQ(above(TopFractionThreshold(s, 0.3)), 3);
  EXPECT_EQ(above(TopFractionThreshold(s, 0.25)), 3);  // ⌈2.5⌉
  EXPECT_EQ(above(TopFractionThreshold(s, 1.0)), 10);
  EXPECT_EQ(above(TopFractionThreshold(s, 0.0)), 0);
}

}  // namespace
}  // namespace tandem

// distill-up's coordinator half: the task asks for predictions on windows drawn from (seed,
// round) as a protected contribution; uploads that are not distributions are refused and change
// nothing; the LLM moves towards the clients' ensemble (its KD loss on the round's windows falls)
// whether the ensemble comes from plain results or from the privacy pipeline's aggregate.
#include "algorithms/distill_down/distill_down.h"
#include "algorithms/distill_up/server.h"

#include <gtest/gtest.h>

#include "tests/coordinator/distill_fixtures.h"

#include <cmath>

#include "distill/ensemble.h"

namespace tandem {
namespace {

using testing::Corpus;
using testing::Micro;

std::unique_ptr<DistillUpServer> Make(bool client_eval = false) {
  auto llm = std::make_unique<Gpt>(Micro());
  llm->InitWeights(4);
  DistillUpConfig c;
  c.windows = 2;
  c.server_steps = 10;
  c.server_batch = 2;
  c.server_lr = 3e-3;
  c.alpha = 0.0;  // pure distillation, so the KD loss is what moves
  auto s = DistillUpServer::Create(c, LocalTrainConfig{}, std::move(llm), Micro(),
                                   Corpus("public", 30), Corpus("val", 4), 256, 7, {}, client_eval);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

// A sharp, made-up client distribution: most mass on token (row % 50) + 60.
std::vector<float> Predictions(size_t rows, int V) {
  std::vector<float> p(rows * V, 0.2f / (V - 1));
  for (size_t r = 0; r < rows; ++r) p[r * V + (r % 50) + 60] = 0.8f;
  return p;
}

TEST(DistillUpTest, TheLlmMovesTowardsTheEnsembleAndBadUploadsAreRefused) {
  auto server = Make();
  ClientInfo c{"client-0", 0, {"distill.up"}};
  auto spec = server->BeginRound(1, {c});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->kind, "distill.up");
  ASSERT_TRUE(spec->contribution.has_value());
  const size_t n = server->ContributionLength();
  EXPECT_EQ(spec->contribution->length, n);
  const int V = 256;
  const std::vector<float> good = Predictions(n / V, V);
  auto result = [&](std::vector<float> v) {
    return wire::TaskResult{{wire::Tensor::Float32("probs", {v.size()}, v)}, 1.0,
                            {{"train_loss", 1.0}}};
  };
  std::vector<float> scaled = good;
  for (float& x : scaled) x *= 2.0f;  // rows sum to 2: would outweigh the others
  EXPECT_FALSE(server->OnResult(c, result(scaled)).ok());
  std::vector<float> negative = good;
  negative[5] = -0.1f;
  EXPECT_FALSE(server->OnResult(c, result(negative)).ok());
  EXPECT_FALSE(server->OnResult(c, result(std::vector<float>(n - 1, 0.0f))).ok());
  ASSERT_TRUE(server->OnResult(c, result(good)).ok());
  const std::vector<float> before(server->llm().params().begin(), server->llm().params().end());
  ASSERT_TRUE(server->OnTaskClosed(TaskReport{}).ok());
  std::map<std::string, double> metrics;
  ASSERT_TRUE(server->EndRound(1, &metrics).ok());
  EXPECT_LT(metrics.at("llm_kd_loss_after"), 0.9 * metrics.at("llm_kd_loss_before"));
  EXPECT_NE(before, std::vector<float>(server->llm().params().begin(),
                                       server->llm().params().end()));
  EXPECT_TRUE(metrics.count("val_loss"));
}

TEST(DistillUpTest, TheAggregateFromThePrivacyPipelineServesAsTheEnsemble) {
  auto server = Make();
  ClientInfo c{"client-0", 0, {"distill.up"}};
  ASSERT_TRUE(server->BeginRound(1, {c}).ok());
  const size_t n = server->ContributionLength();
  Aggregate wrong;
  wrong.mean.assign(n + 1, 0.0f);
  EXPECT_FALSE(server->OnAggregate(wrong).ok());
  Aggregate aggregate;
  aggregate.mean = Predictions(n / 256, 256);
  aggregate.count = 3;
  ASSERT_TRUE(server->OnAggregate(aggregate).ok());
  ASSERT_TRUE(server->OnTaskClosed(TaskReport{}).ok());
  std::map<std::string, double> metrics;
  ASSERT_TRUE(server->EndRound(1, &metrics).ok());
  EXPECT_LT(metrics.at("llm_kd_loss_after"), metrics.at("llm_kd_loss_before"));
  // Without any upload the round cannot close.
  ASSERT_TRUE(server->BeginRound(2, {c}).ok());
  EXPECT_FALSE(server->OnTaskClosed(TaskReport{}).ok());
}

TEST(DistillUpTest, ClientEvaluationsWeighOwnCategoriesByTheirTokens) {
  auto server = Make(/*client_eval=*/true);
  ClientInfo a{"client-0", 0, {"distill.up", "distill.eval"}};
  ClientInfo b{"client-1", 1, {"distill.up", "distill.eval"}};
  ASSERT_TRUE(server->BeginRound(1, {a, b}).ok());
  const size_t n = server->ContributionLength();
  const std::vector<float> probs = Predictions(n / 256, 256);
  for (const ClientInfo* c : {&a, &b}) {
    ASSERT_TRUE(server->OnResult(*c, {{wire::Tensor::Float32("probs", {n}, probs)}, 1.0,
                                      {{"train_loss", 1.0}}}).ok());
  }
  auto next = server->OnTaskClosed(TaskReport{});
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ((*next)->kind, "distill.eval");
  auto eval = [](double tokens, double own, double all) {
    return wire::TaskResult{{}, tokens, {{"own_val_loss", own}, {"all_val_loss", all}}};
  };
  EXPECT_FALSE(server->OnResult(a, eval(0.0, 9.0, 9.0)).ok());  // no held-out tokens
  EXPECT_FALSE(server->OnResult(a, wire::TaskResult{{}, 10.0, {{"own_val_loss", 1.0}}}).ok());
  ASSERT_TRUE(server->OnResult(a, eval(100.0, 2.0, 1.0)).ok());
  ASSERT_TRUE(server->OnResult(b, eval(300.0, 4.0, 3.0)).ok());
  ASSERT_TRUE(server->OnTaskClosed(TaskReport{}).ok());
  std::map<std::string, double> metrics;
  ASSERT_TRUE(server->EndRound(1, &metrics).ok());
  EXPECT_DOUBLE_EQ(metrics.at("slm_own_val_loss"), (100.0 * 2.0 + 300.0 * 4.0) / 400.0);
  EXPECT_DOUBLE_EQ(metrics.at("slm_all_val_loss"), 2.0);
}

TEST(DistillUpTest, DistillDownWithLocalSlmsSendsTargetsAndTakesNothingBack) {
  auto llm = std::make_unique<Gpt>(Micro());
  llm->InitWeights(4);
  const std::vector<float> teacher(llm->params().begin(), llm->params().end());
  DistillDownConfig down;
  down.windows = 2;
  down.top_k = 4;
  down.alpha = 0.25;
  auto made = DistillUpServer::Create(LocalDistillDownConfig(down), LocalTrainConfig{},
                                      std::move(llm), Micro(), Corpus("public", 30),
                                      Corpus("val", 4), 256, 7);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  DistillUpServer& server = **made;
  EXPECT_EQ(server.name(), "distill-down");
  ClientInfo c{"client-0", 0, {"distill.mutual"}};
  auto spec = server.BeginRound(1, {c});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->kind, "distill.mutual");
  EXPECT_FALSE(spec->contribution.has_value()) << "nothing goes up, so nothing to protect";
  EXPECT_EQ(std::get<int64_t>(spec->params.at("kd.upload")), 0);
  EXPECT_DOUBLE_EQ(std::get<double>(spec->params.at("kd.alpha")), 0.25);
  bool targets = false;
  for (const auto& t : spec->tensors) targets |= t.name == "kd.topk_words";
  EXPECT_TRUE(targets) << "the teacher's top-k go down";
  const size_t n = server.ContributionLength();
  EXPECT_FALSE(server.OnResult(c, {{wire::Tensor::Float32("probs", {n}, Predictions(n / 256, 256))},
                                   1.0, {{"train_loss", 1.0}}}).ok());
  ASSERT_TRUE(server.OnResult(c, {{}, 1.0, {{"train_loss", 2.0}, {"kd_kl", 0.5}}}).ok());
  auto next = server.OnTaskClosed(TaskReport{});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_FALSE(next->has_value());
  std::map<std::string, double> metrics;
  ASSERT_TRUE(server.EndRound(1, &metrics).ok());
  EXPECT_DOUBLE_EQ(metrics.at("train_loss"), 2.0);
  EXPECT_DOUBLE_EQ(metrics.at("kd_kl"), 0.5);
  EXPECT_FALSE(metrics.count("val_loss")) << "the teacher's loss is not the run's";
  EXPECT_EQ(teacher, std::vector<float>(server.llm().params().begin(), server.llm().params().end()));
}

}  // namespace
}  // namespace tandem

// distill-up's coordinator half: the task asks for predictions on windows drawn from (seed,
// round) as a protected contribution; uploads that are not distributions are refused and change
// nothing; the LLM moves towards the clients' ensemble (its KD loss on the round's windows falls)
// whether the ensemble comes from plain results or from the privacy pipeline's aggregate.
#include "algorithms/distill_down/distill_down.h"
#include "algorithms/distill_up/server.h"

#include <gtest/gtest.h>

#include "tests/coordinator/distill_fixtures.h"

#include <cmath>

#include "coordinator/aggregator.h"
#include "core/rng.h"
#include "distill/confidence.h"
#include "distill/ensemble.h"
#include "distill/votes.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

using testing::Corpus;
using testing::Micro;

DistillUpConfig Config() {
  DistillUpConfig c;
  c.windows = 2;
  c.server_steps = 10;
  c.server_batch = 2;
  c.server_lr = 3e-3;
  c.alpha = 0.0;  // pure distillation, so the KD loss is what moves
  return c;
}

// English text unlike the public windows', for <section>.english_weight.
std::vector<Record> English(int n) {
  std::vector<Record> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({"Zebras graze at dawn; lions sleep till noon, number " + std::to_string(i) +
                       ".\n",
                   "en/animals"});
  }
  return out;
}

std::unique_ptr<DistillUpServer> Make(bool client_eval = false, DistillUpConfig c = Config(),
                                      std::vector<Record> english = {}) {
  auto llm = std::make_unique<Gpt>(Micro());
  llm->InitWeights(4);
  auto s = DistillUpServer::Create(c, LocalTrainConfig{}, std::move(llm), Micro(),
                                   Corpus("public", 30), Corpus("val", 4), 256, 7, {}, client_eval,
                                   std::move(english));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

std::vector<float> RandomLogits(size_t n, Rng& rng, float scale) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal()) * scale;
  return v;
}

wire::TaskResult Upload(const std::string& name, const std::vector<float>& v) {
  return wire::TaskResult{{wire::Tensor::Float32(name, {v.size()}, v)}, 1.0, {{"train_loss", 1.0}}};
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

// ensemble = "confidence": the LLM distils to Σ w·p / Σ w, computed here independently from the
// members' logits; the mean the privacy pipeline delivers (the RunningSum's, which secure
// aggregation reproduces bit for bit: coordinator/private_pipeline_test.cc) gives the same bits
// as the clear path; malformed uploads are refused and change nothing.
TEST(DistillUpTest, TheConfidenceEnsembleIsTheWeightedMeanInTheClearAndFromAnAggregate) {
  DistillUpConfig c = Config();
  c.ensemble = EnsembleUpload::kConfidence;
  c.server_steps = 1;
  auto clear = Make(false, c);
  auto aggregated = Make(false, c);
  ClientInfo a{"client-0", 0, {"distill.up"}};
  auto spec = clear->BeginRound(1, {a});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(std::get<std::string>(spec->params.at("kd.ensemble")), "confidence");
  EXPECT_EQ(spec->contribution->tensor, "confidence");
  ASSERT_TRUE(aggregated->BeginRound(1, {a}).ok());
  const int V = 256, N = 2 * Micro().context;
  ASSERT_EQ(clear->ContributionLength(), ConfidenceContributionLength(N, V));
  const float T = static_cast<float>(c.temperature);
  Rng rng(11);
  std::vector<std::vector<float>> logits;
  RunningSum sum(clear->ContributionLength());
  for (int m = 0; m < 3; ++m) {
    logits.push_back(RandomLogits(static_cast<size_t>(N) * V, rng, 1.0f + 2.0f * m));
    std::vector<float> up(clear->ContributionLength());
    ConfidenceContribution(up.data(), logits.back().data(), N, V, T);
    if (m == 1) {
      std::vector<float> scaled = up;
      for (int i = 0; i < N; ++i) scaled[static_cast<size_t>(N) * V + i] *= 0.5f;  // w ≠ Σ w·p
      EXPECT_FALSE(clear->OnResult(a, Upload("confidence", scaled)).ok());
      EXPECT_FALSE(clear->OnResult(a, Upload("probs", up)).ok()) << "the wrong tensor";
    }
    ASSERT_TRUE(clear->OnResult(a, Upload("confidence", up)).ok());
    ASSERT_TRUE(sum.Add(up, 1.0).ok());
  }
  Aggregate aggregate;
  aggregate.mean.resize(sum.length());
  ASSERT_TRUE(sum.Mean(aggregate.mean).ok());
  aggregate.count = 3;
  ASSERT_TRUE(aggregated->OnAggregate(aggregate).ok());
  ASSERT_TRUE(clear->OnTaskClosed(TaskReport{}).ok());
  ASSERT_TRUE(aggregated->OnTaskClosed(TaskReport{}).ok());
  const auto& ensemble = clear->last_ensemble();
  ASSERT_EQ(ensemble.size(), static_cast<size_t>(N) * V);
  EXPECT_TRUE(ensemble == aggregated->last_ensemble()) << "the aggregate's bits are the clear path's";
  // Independently, in double: w = max softmax(z) at T = 1, p = softmax(z/T).
  double worst = 0.0;
  for (int i = 0; i < N; ++i) {
    std::vector<double> num(V, 0.0);
    double den = 0.0;
    for (const auto& z : logits) {
      const float* row = z.data() + static_cast<size_t>(i) * V;
      double mx = -1e300;
      for (int v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
      double s1 = 0.0, sT = 0.0;
      for (int v = 0; v < V; ++v) {
        s1 += std::exp(row[v] - mx);
        sT += std::exp((row[v] - mx) / T);
      }
      const double w = 1.0 / s1;
      for (int v = 0; v < V; ++v) num[v] += w * std::exp((row[v] - mx) / T) / sT;
      den += w;
    }
    for (int v = 0; v < V; ++v) {
      worst = std::max(worst, std::fabs(ensemble[static_cast<size_t>(i) * V + v] - num[v] / den));
    }
  }
  EXPECT_LT(worst, 1e-6);
}

// ensemble = "votes": each upload must be a vote per position; the LLM distils to the vote
// shares.
TEST(DistillUpTest, VoteUploadsAreCheckedAndTheEnsembleIsTheVoteShare) {
  DistillUpConfig c = Config();
  c.ensemble = EnsembleUpload::kVotes;
  c.vote_top_k = 2;
  c.server_steps = 1;
  auto server = Make(false, c);
  ClientInfo a{"client-0", 0, {"distill.up"}};
  auto spec = server->BeginRound(1, {a});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(std::get<std::string>(spec->params.at("kd.ensemble")), "votes");
  EXPECT_EQ(std::get<int64_t>(spec->params.at("kd.vote_top_k")), 2);
  const int V = 256, N = 2 * Micro().context;
  Rng rng(5);
  std::vector<double> expected(static_cast<size_t>(N) * V, 0.0);
  for (int m = 0; m < 4; ++m) {
    const auto z = RandomLogits(static_cast<size_t>(N) * V, rng, 1.0f);
    std::vector<float> vote(static_cast<size_t>(N) * V);
    VoteContribution(vote.data(), z.data(), N, V, 2);
    std::vector<float> probs(vote.size());
    EnsembleContribution(probs.data(), z.data(), N, V, 2.0f, EnsembleMode::kMeanProbabilities);
    EXPECT_FALSE(server->OnResult(a, Upload("votes", probs)).ok()) << "probabilities are no vote";
    ASSERT_TRUE(server->OnResult(a, Upload("votes", vote)).ok());
    for (size_t j = 0; j < vote.size(); ++j) expected[j] += vote[j] / 4.0;
  }
  ASSERT_TRUE(server->OnTaskClosed(TaskReport{}).ok());
  double worst = 0.0;
  for (size_t j = 0; j < expected.size(); ++j) {
    worst = std::max(worst, std::fabs(server->last_ensemble()[j] - expected[j]));
  }
  EXPECT_LT(worst, 1e-7);
}

// confidence_threshold: the share of masked positions is the share whose ensemble max-probability
// (at T) is below it, and with every position masked and α = 0 the KD loss cannot move.
TEST(DistillUpTest, TheConfidenceThresholdMasksUnsurePositions) {
  DistillUpConfig c = Config();
  c.confidence.threshold = 0.5;
  auto server = Make(false, c);
  ClientInfo a{"client-0", 0, {"distill.up"}};
  ASSERT_TRUE(server->BeginRound(1, {a}).ok());
  const size_t n = server->ContributionLength();
  const int V = 256;
  // Even rows sharp (0.8 on one token), odd rows flat.
  std::vector<float> p = Predictions(n / V, V);
  for (size_t r = 1; r < n / V; r += 2) std::fill(p.begin() + r * V, p.begin() + (r + 1) * V, 1.0f / V);
  ASSERT_TRUE(server->OnResult(a, Upload("probs", p)).ok());
  ASSERT_TRUE(server->OnTaskClosed(TaskReport{}).ok());
  std::map<std::string, double> metrics;
  ASSERT_TRUE(server->EndRound(1, &metrics).ok());
  // At T = 2 a 0.8 peak over 255 tails of 0.2/255 stays above 0.5; the flat rows are at 1/256.
  EXPECT_DOUBLE_EQ(metrics.at("llm_kd_masked_fraction"), 0.5);
  EXPECT_LT(metrics.at("llm_kd_loss_after"), metrics.at("llm_kd_loss_before"));

  c.confidence.threshold = 1.0;  // nothing is that sure: no position distils
  c.server_lr = 0.0;
  auto none = Make(false, c);
  ASSERT_TRUE(none->BeginRound(1, {a}).ok());
  ASSERT_TRUE(none->OnResult(a, Upload("probs", p)).ok());
  ASSERT_TRUE(none->OnTaskClosed(TaskReport{}).ok());
  metrics.clear();
  ASSERT_TRUE(none->EndRound(1, &metrics).ok());
  EXPECT_DOUBLE_EQ(metrics.at("llm_kd_masked_fraction"), 1.0);
  EXPECT_DOUBLE_EQ(metrics.at("llm_kd_loss_before"), 0.0);
}

// english_weight: 0 trains the LLM to exactly the bits of a server without English; > 0 leaves
// the LLM's loss on the English text lower after its server steps than without it.
TEST(DistillUpTest, TheEnglishTermKeepsTheLlmsEnglishAndIsOffAtWeightZero) {
  ClientInfo a{"client-0", 0, {"distill.up"}};
  auto round = [&](DistillUpServer& server, std::map<std::string, double>* metrics) {
    ASSERT_TRUE(server.BeginRound(1, {a}).ok());
    const size_t n = server.ContributionLength();
    ASSERT_TRUE(server.OnResult(a, Upload("probs", Predictions(n / 256, 256))).ok());
    ASSERT_TRUE(server.OnTaskClosed(TaskReport{}).ok());
    ASSERT_TRUE(server.EndRound(1, metrics).ok());
  };
  auto params = [](DistillUpServer& s) {
    return std::vector<float>(s.llm().params().begin(), s.llm().params().end());
  };
  std::map<std::string, double> m0, m1, m2;
  auto plain = Make(false, Config());
  round(*plain, &m0);
  DistillUpConfig zero = Config();
  zero.english_weight = 0.0;
  auto off = Make(false, zero, English(40));
  round(*off, &m1);
  EXPECT_TRUE(params(*plain) == params(*off)) << "english_weight = 0 must not change a bit";
  EXPECT_FALSE(m1.count("llm_english_ce"));
  DistillUpConfig on = Config();
  on.english_weight = 1.0;
  auto english = Make(false, on, English(40));
  round(*english, &m2);
  EXPECT_TRUE(m2.count("llm_english_ce"));
  auto with = HeldOutLoss(english->llm(), English(40), 8, 4096);
  auto without = HeldOutLoss(plain->llm(), English(40), 8, 4096);
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_LT(*with, *without - 0.05) << "the English term must keep (here: improve) English";
  // Too little English text for one window is a configuration error naming the key.
  auto llm = std::make_unique<Gpt>(Micro());
  llm->InitWeights(4);
  auto refused = DistillUpServer::Create(on, LocalTrainConfig{}, std::move(llm), Micro(),
                                         Corpus("public", 30), Corpus("val", 4), 256, 7, {}, false,
                                         {{"short", "en/x"}});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("english_weight"), std::string::npos);
}

}  // namespace
}  // namespace tandem

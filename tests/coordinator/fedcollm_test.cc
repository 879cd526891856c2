// fedcollm's coordinator half: the task carries the base SLM and the global adapters and asks for
// an adapter delta; deltas are averaged into the adapters; both server-side distillations lower
// their loss on the round's windows; a checkpoint round-trips.
#include "algorithms/fedcollm/server.h"

#include <gtest/gtest.h>

#include "tests/coordinator/distill_fixtures.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

using testing::Corpus;
using testing::Micro;

std::unique_ptr<FedCoLLMServer> Make(double llm_lr, bool client_eval = false,
                                     double english_weight = 0.0, KdConfidence confidence = {},
                                     std::vector<Record> english = {}) {
  auto slm = std::make_unique<Gpt>(Micro());
  slm->InitWeights(1);
  ModelConfig big = Micro();
  big.n_layer = 3;
  auto llm = std::make_unique<Gpt>(big);
  llm->InitWeights(2);
  FedCoLLMConfig c;
  c.lora.rank = 4;
  c.lora.alpha = 8.0f;
  c.windows = 4;
  c.server_steps = 6;
  c.server_batch = 2;
  c.slm_lr = 3e-3;
  c.server_lr = llm_lr;
  c.client_eval = client_eval;
  c.english_weight = english_weight;
  c.confidence = confidence;
  auto s = FedCoLLMServer::Create(c, LocalTrainConfig{}, StrategyConfig{}, std::move(slm),
                                  std::move(llm), Corpus("public", 30), Corpus("val", 4), 256, 3,
                                  std::move(english));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

TEST(FedCoLLMTest, AdaptersAreAveragedAndBothDistillationsLearn) {
  for (double lr : {0.0, 1e-3}) {
    auto server = Make(lr);
    ClientInfo c{"client-0", 0, {"fedcollm.train"}};
    auto spec = server->BeginRound(1, {c});
    ASSERT_TRUE(spec.ok());
    const size_t n = server->slm().lora_params().size();
    ASSERT_TRUE(spec->contribution.has_value());
    EXPECT_EQ(spec->contribution->length, n);
    EXPECT_LT(n, server->slm().params().size() / 4) << "adapters should be small";
    const std::vector<float> before(server->slm().lora_params().begin(),
                                    server->slm().lora_params().end());
    std::vector<float> delta(n, 0.01f);
    wire::TaskResult r{{wire::Tensor::Float32("delta", {n}, delta)}, 2.0, {{"train_loss", 1.0}}};
    const std::vector<float> short_delta(n - 1, 0.01f);
    EXPECT_FALSE(server->OnResult(c, wire::TaskResult{{wire::Tensor::Float32(
                                                          "delta", {n - 1}, short_delta)},
                                                      1.0, {}})
                     .ok());
    ASSERT_TRUE(server->OnResult(c, r).ok());
    ASSERT_TRUE(server->OnTaskClosed(TaskReport{}).ok());
    std::map<std::string, double> m;
    ASSERT_TRUE(server->EndRound(1, &m).ok());
    EXPECT_LT(m.at("slm_kd_loss_after"), m.at("slm_kd_loss_before"));
    if (lr == 0.0) {
      EXPECT_DOUBLE_EQ(m.at("llm_kd_loss_after"), m.at("llm_kd_loss_before"));
    } else {
      EXPECT_LT(m.at("llm_kd_loss_after"), m.at("llm_kd_loss_before"));
    }
    EXPECT_NE(before, std::vector<float>(server->slm().lora_params().begin(),
                                         server->slm().lora_params().end()));
  }
}

TEST(FedCoLLMTest, ClientsScoreTheStepsSlmWithItsAdapters) {
  auto server = Make(1e-3, /*client_eval=*/true);
  EXPECT_EQ(server->RequiredCapabilities(),
            (std::vector<std::string>{"fedcollm.train", "fedcollm.eval"}));
  ClientInfo a{"client-0", 0, {"fedcollm.train", "fedcollm.eval"}};
  ClientInfo b{"client-1", 1, {"fedcollm.train", "fedcollm.eval"}};
  ASSERT_TRUE(server->BeginRound(1, {a, b}).ok());
  const size_t n = server->slm().lora_params().size();
  const std::vector<float> delta(n, 0.01f);
  for (const ClientInfo* c : {&a, &b}) {
    ASSERT_TRUE(server->OnResult(*c, {{wire::Tensor::Float32("delta", {n}, delta)}, 1.0,
                                      {{"train_loss", 1.0}}}).ok());
  }
  auto next = server->OnTaskClosed(TaskReport{});
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next->has_value());
  const TaskSpec& eval = **next;
  EXPECT_EQ(eval.kind, "fedcollm.eval");
  EXPECT_FALSE(eval.contribution.has_value());
  // The SLM as it is after the server's step: base weights and the distilled adapters.
  ASSERT_EQ(eval.tensors.size(), 2u);
  EXPECT_EQ(eval.tensors[0].ToFloat32(), std::vector<float>(server->slm().params().begin(),
                                                            server->slm().params().end()));
  EXPECT_EQ(eval.tensors[1].ToFloat32(), std::vector<float>(server->slm().lora_params().begin(),
                                                            server->slm().lora_params().end()));
  EXPECT_EQ(std::get<int64_t>(eval.params.at("lora.rank")), 4);
  auto scored = [](double tokens, double loss) {
    return wire::TaskResult{{}, tokens, {{"val_loss", loss}}};
  };
  EXPECT_FALSE(server->OnResult(a, scored(0.0, 2.0)).ok());
  EXPECT_FALSE(server->OnResult(a, scored(10.0, -1.0)).ok());
  EXPECT_FALSE(server->OnResult(a, wire::TaskResult{{}, 10.0, {}}).ok());
  ASSERT_TRUE(server->OnResult(a, scored(100.0, 2.0)).ok());
  ASSERT_TRUE(server->OnResult(b, scored(300.0, 4.0)).ok());
  auto done = server->OnTaskClosed(TaskReport{});
  ASSERT_TRUE(done.ok());
  EXPECT_FALSE(done->has_value());
  std::map<std::string, double> m;
  ASSERT_TRUE(server->EndRound(1, &m).ok());
  EXPECT_DOUBLE_EQ(m.at("client_val_loss"), (100.0 * 2.0 + 300.0 * 4.0) / 400.0);
  // The next round starts from training again.
  auto spec = server->BeginRound(2, {a, b});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->kind, "fedcollm.train");
}

// The LLM side of fedcollm keeps its English: english_weight = 0 changes no bit of the LLM;
// > 0 leaves its loss on the English text lower after the SLM → LLM steps than without. The
// confidence threshold reports what it masked of the SLM → LLM distillation.
TEST(FedCoLLMTest, TheEnglishTermKeepsTheLlmsEnglishAndIsOffAtWeightZero) {
  std::vector<Record> english;
  for (int i = 0; i < 40; ++i) {
    english.push_back({"Zebras graze at dawn; lions sleep till noon, number " + std::to_string(i) +
                           ".\n",
                       "en/animals"});
  }
  ClientInfo c{"client-0", 0, {"fedcollm.train"}};
  auto round = [&](FedCoLLMServer& server, std::map<std::string, double>* m) {
    ASSERT_TRUE(server.BeginRound(1, {c}).ok());
    const size_t n = server.slm().lora_params().size();
    std::vector<float> delta(n, 0.01f);
    ASSERT_TRUE(server.OnResult(c, {{wire::Tensor::Float32("delta", {n}, delta)}, 1.0, {}}).ok());
    ASSERT_TRUE(server.OnTaskClosed(TaskReport{}).ok());
    ASSERT_TRUE(server.EndRound(1, m).ok());
  };
  auto llm = [](FedCoLLMServer& s) {
    return std::vector<float>(s.llm().params().begin(), s.llm().params().end());
  };
  std::map<std::string, double> m0, m1, m2;
  auto plain = Make(3e-3);
  round(*plain, &m0);
  auto off = Make(3e-3, false, 0.0, {}, english);
  round(*off, &m1);
  EXPECT_TRUE(llm(*plain) == llm(*off));
  EXPECT_FALSE(m1.count("llm_english_ce"));
  auto on = Make(3e-3, false, 1.0, KdConfidence{0.02, false}, english);
  round(*on, &m2);
  ASSERT_TRUE(m2.count("llm_english_ce"));
  ASSERT_TRUE(m2.count("llm_kd_masked_fraction"));
  EXPECT_GE(m2.at("llm_kd_masked_fraction"), 0.0);
  EXPECT_LE(m2.at("llm_kd_masked_fraction"), 1.0);
  auto with = HeldOutLoss(on->llm(), english, 8, 4096);
  auto without = HeldOutLoss(plain->llm(), english, 8, 4096);
  ASSERT_TRUE(with.ok() && without.ok());
  EXPECT_LT(*with, *without - 0.05);
}

}  // namespace
}  // namespace tandem

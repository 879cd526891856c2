// distill-down's two halves in one process: the coordinator's task carries the teacher's top-k
// targets on windows drawn from (seed, round), decodable and equal to the teacher's own top-k;
// bad set-ups are refused; a client trains on them, its distillation KL falls over rounds, and a
// task whose targets do not fit the public split or the model is refused.
#include "algorithms/distill_down/server.h"

#include <gtest/gtest.h>

#include "tests/coordinator/distill_fixtures.h"

#include "algorithms/distill_down/client.h"
#include "distill/kd_loss.h"
#include "distill/topk.h"

namespace tandem {
namespace {

using testing::Corpus;
using testing::Micro;

std::unique_ptr<FedAvgServer> Inner() {
  auto model = std::make_unique<Gpt>(Micro());
  model->InitWeights(3);
  auto strategy = MakeStrategy(StrategyConfig{});
  EXPECT_TRUE(strategy.ok());
  FedAvgServerConfig fc;
  fc.eval_tokens = 256;
  fc.local.local_steps = 4;
  fc.local.batch = 2;
  fc.local.lr = 3e-3;
  return std::make_unique<FedAvgServer>(fc, std::move(model), std::move(*strategy),
                                        Corpus("val", 4));
}

// A teacher with opinions: random weights scaled up, so its predictions are far from uniform and
// a student moving towards them is visible.
std::unique_ptr<Gpt> Teacher(uint64_t seed = 9) {
  auto t = std::make_unique<Gpt>(Micro());
  t->InitWeights(seed);
  for (float& w : t->params()) w *= 4.0f;
  return t;
}

DistillDownConfig Distill() {
  DistillDownConfig c;
  c.teacher = "unused";
  c.top_k = 8;
  c.windows = 4;
  return c;
}

const wire::Tensor* Find(const TaskSpec& spec, const std::string& name) {
  for (const auto& t : spec.tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

TEST(DistillDownTest, TheTaskCarriesTheTeachersTopKOnTheRoundsWindows) {
  const std::vector<Record> pub = Corpus("public", 40);
  auto server = DistillDownServer::Create(Distill(), Inner(), Teacher(), pub, 17);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ((*server)->RequiredCapabilities(), std::vector<std::string>{"distill.train"});
  ClientInfo c{"client-0", 0, {"distill.train"}};
  auto spec = (*server)->BeginRound(1, {c});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->kind, "distill.train");
  ASSERT_TRUE(spec->contribution.has_value());  // the delta is still a protected contribution
  const auto starts = Find(*spec, "kd.windows")->ToUint32();
  ASSERT_EQ(starts, (*server)->DrawWindows(1));
  EXPECT_EQ((*server)->DrawWindows(1), (*server)->DrawWindows(1));
  EXPECT_NE((*server)->DrawWindows(1), (*server)->DrawWindows(2));
  auto targets = DecodeTopK(Find(*spec, "kd.topk_words")->ToUint32(),
                            Find(*spec, "kd.topk_values")->ToFloat32());
  ASSERT_TRUE(targets.ok()) << targets.status().ToString();
  const int T = Micro().context;
  ASSERT_EQ(targets->rows, static_cast<int>(starts.size()) * T);
  EXPECT_EQ(targets->k, 8);
  // The second window's rows are the teacher's own top-k on those tokens.
  const TokenDataset stream = TokenDataset::FromRecords(pub);
  std::vector<int32_t> tokens(stream.tokens().begin() + starts[1],
                              stream.tokens().begin() + starts[1] + T);
  auto teacher = Teacher();
  teacher->Forward(tokens.data(), nullptr, 1, T);
  const TopKTargets own = TopKFromLogits(teacher->logits(), T, 256, 8, 2.0f);
  const TopKTargets sent = SliceTopK(*targets, T, T);
  EXPECT_EQ(sent.indices, own.indices);
  ASSERT_EQ(sent.probs.size(), own.probs.size());
  // The coordinator ran the teacher on several windows at once: another summation order.
  for (size_t i = 0; i < own.probs.size(); ++i) EXPECT_NEAR(sent.probs[i], own.probs[i], 1e-6);
}

TEST(DistillDownTest, RefusesATeacherOrPublicSplitThatDoesNotFit) {
  ModelConfig other = Micro();
  other.vocab = 128;
  auto wrong_vocab = std::make_unique<Gpt>(other);
  EXPECT_FALSE(DistillDownServer::Create(Distill(), Inner(), std::move(wrong_vocab),
                                         Corpus("public", 40), 1)
                   .ok());
  ModelConfig short_context = Micro();
  short_context.context = 16;
  EXPECT_FALSE(DistillDownServer::Create(Distill(), Inner(),
                                         std::make_unique<Gpt>(short_context),
                                         Corpus("public", 40), 1)
                   .ok());
  auto tiny = DistillDownServer::Create(Distill(), Inner(), Teacher(), {{"too short", "p"}}, 1);
  ASSERT_FALSE(tiny.ok());
  EXPECT_NE(tiny.status().message().find("public"), std::string::npos);
}

TEST(DistillDownTest, AClientLearnsFromTheTargetsAndRefusesOnesThatDoNotFit) {
  const std::vector<Record> pub = Corpus("public", 40);
  DistillDownConfig pure = Distill();
  pure.alpha = 0.0;  // the public batch is distillation only
  auto server = DistillDownServer::Create(pure, Inner(), Teacher(), pub, 17);
  ASSERT_TRUE(server.ok());
  ClientData data;
  data.train = Corpus("mine", 30);
  data.public_ = pub;
  ClientContext context(0, Micro(), data, {});
  DistillDownClient client(&context);
  ClientInfo c{"client-0", 0, client.Capabilities()};
  // The same round's task with the distillation batch weighted 0 and 5: the student that
  // distilled ends closer to the teacher on the round's windows.
  auto spec = (*server)->BeginRound(1, {c});
  ASSERT_TRUE(spec.ok());
  const std::vector<float> global((*server)->fedavg().model().params().begin(),
                                  (*server)->fedavg().model().params().end());
  auto targets = DecodeTopK(Find(*spec, "kd.topk_words")->ToUint32(),
                            Find(*spec, "kd.topk_values")->ToFloat32());
  ASSERT_TRUE(targets.ok());
  const auto starts = Find(*spec, "kd.windows")->ToUint32();
  const int T = Micro().context;
  const TokenDataset stream = TokenDataset::FromRecords(pub);
  std::vector<int32_t> tokens, next;
  for (uint32_t st : starts) {
    tokens.insert(tokens.end(), stream.tokens().begin() + st, stream.tokens().begin() + st + T);
    next.insert(next.end(), stream.tokens().begin() + st + 1,
                stream.tokens().begin() + st + T + 1);
  }
  auto kl_after = [&](double weight) {
    wire::TaskAssign task{spec->kind, spec->params, spec->tensors, 0};
    task.params["kd.weight"] = weight;
    task.params["local_steps"] = int64_t{16};
    wire::TaskResult result;
    EXPECT_TRUE(client.Run(1, task, &result).ok());
    EXPECT_TRUE(result.metrics.count("kd_kl"));
    Gpt student(Micro());
    const std::vector<float> delta = result.tensors.at(0).ToFloat32();
    for (size_t i = 0; i < delta.size(); ++i) student.params()[i] = global[i] + delta[i];
    const int W = static_cast<int>(starts.size());
    student.Forward(tokens.data(), nullptr, W, T);
    KdOptions o;
    o.alpha = 0.0f;
    o.temperature = 2.0f;
    return KdTopKForward(student.logits(), *targets, next.data(), W * T, 256, o).kl;
  };
  const double without = kl_after(0.0), with = kl_after(5.0);
  EXPECT_LT(with, 0.8 * without) << "distillation did not move the student towards the teacher";
  (*server)->AbortRound();

  spec = (*server)->BeginRound(4, {c});
  ASSERT_TRUE(spec.ok());
  wire::TaskAssign task{spec->kind, spec->params, spec->tensors, 0};
  wire::TaskResult result;
  // A window past the end of this client's public split.
  wire::TaskAssign past = task;
  for (auto& t : past.tensors) {
    if (t.name == "kd.windows") {
      std::vector<uint32_t> s = t.ToUint32();
      s[0] = 1u << 30;
      t = wire::Tensor::Uint32("kd.windows", {s.size()}, s);
    }
  }
  EXPECT_FALSE(client.Run(4, past, &result).ok());
  // Targets for another temperature than the task's.
  wire::TaskAssign warm = task;
  warm.params["kd.temperature"] = 3.0;
  EXPECT_FALSE(client.Run(4, warm, &result).ok());
  // One window fewer than the targets hold.
  wire::TaskAssign fewer = task;
  for (auto& t : fewer.tensors) {
    if (t.name == "kd.windows") {
      std::vector<uint32_t> s = t.ToUint32();
      s.pop_back();
      t = wire::Tensor::Uint32("kd.windows", {s.size()}, s);
    }
  }
  EXPECT_FALSE(client.Run(4, fewer, &result).ok());
  EXPECT_TRUE(client.Run(4, task, &result).ok());
}

}  // namespace
}  // namespace tandem

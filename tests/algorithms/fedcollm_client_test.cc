// fedcollm's client half, driven with tasks its own coordinator half makes: it trains only the
// LoRA adapters — the base SLM stays bit for bit what it was sent — and uploads their delta,
// weighted by its examples, which lowers its own loss; a round replays bit for bit; malformed
// tasks are refused and leave the model (base and adapters) as it was; "fedcollm.eval" reports
// val_loss of the SLM with the sent adapters.
#include "algorithms/fedcollm/client.h"

#include <gtest/gtest.h>

#include "algorithms/fedcollm/tasks.h"
#include "tests/algorithms/halves_fixtures.h"

namespace tandem {
namespace {

using testing::Assign;
using testing::Copy;
using testing::Loss;
using testing::Micro;
using testing::SameBits;

class FedCoLLMClientTest : public testing::HalvesTest {};

// The SLM a task describes, with its adapters plus `delta` (when given).
std::unique_ptr<Gpt> SlmOf(const wire::TaskAssign& task, const std::vector<float>& delta = {}) {
  auto model = std::make_unique<Gpt>(Micro());
  EXPECT_TRUE(DecodeWeightsInto(task, model.get()).ok());
  EXPECT_TRUE(DecodeAdaptersInto(task, model.get()).ok());
  auto a = model->lora_params();
  EXPECT_TRUE(delta.empty() || delta.size() == a.size());
  for (size_t i = 0; i < delta.size(); ++i) a[i] += delta[i];
  return model;
}

TEST_F(FedCoLLMClientTest, TrainsOnlyTheAdaptersAndUploadsTheirDelta) {
  auto server = Server("fedcollm");
  const TaskSpec spec = FirstTask(*server, 1);
  ASSERT_EQ(spec.kind, kFedCoLLMTrainTask);
  const wire::TaskAssign task = Assign(spec);
  auto context = Context(0);
  auto handler = Handler("fedcollm", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, task, &result).ok());

  const std::vector<float> sent_base = FindTensor(task.tensors, "params")->ToFloat32();
  const std::vector<float> sent_adapters = FindTensor(task.tensors, "lora")->ToFloat32();
  Gpt& slm = context->global();
  ASSERT_TRUE(slm.has_lora());
  EXPECT_TRUE(SameBits(Copy(slm.params()), sent_base)) << "the base SLM moved";
  EXPECT_FALSE(SameBits(Copy(slm.lora_params()), sent_adapters)) << "the adapters did not";

  ASSERT_EQ(result.tensors.size(), 1u);
  EXPECT_EQ(result.tensors[0].name, "delta");
  ASSERT_EQ(result.tensors[0].NumElements(), sent_adapters.size());
  ASSERT_TRUE(spec.contribution.has_value());
  EXPECT_EQ(spec.contribution->length, sent_adapters.size());
  EXPECT_LT(sent_adapters.size(), sent_base.size() / 4);
  EXPECT_EQ(result.weight, static_cast<double>(context->data().train.size()));
  const std::vector<float> delta = result.tensors[0].ToFloat32();
  std::vector<float> expected(delta.size());
  for (size_t i = 0; i < delta.size(); ++i) expected[i] = slm.lora_params()[i] - sent_adapters[i];
  EXPECT_TRUE(SameBits(delta, expected)) << "the delta is not trained − sent adapters";

  auto before = SlmOf(task);
  auto after = SlmOf(task, delta);
  EXPECT_LT(Loss(*after, context->data().train), Loss(*before, context->data().train) - 0.01);
  ClientInfo client{"client-0", 0, server->RequiredCapabilities()};
  EXPECT_TRUE(server->OnResult(client, result).ok()) << "its own half refuses the delta";
}

TEST_F(FedCoLLMClientTest, TheSameSeedClientAndRoundReplayBitForBit) {
  auto server = Server("fedcollm");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto run = [&](int index, uint64_t round) {
    auto context = Context(index);
    auto handler = Handler("fedcollm", context.get());
    wire::TaskResult result;
    EXPECT_TRUE(handler->Run(round, task, &result).ok());
    return result;
  };
  const wire::TaskResult first = run(0, 1);
  EXPECT_EQ(first, run(0, 1));
  EXPECT_NE(first.tensors, run(1, 1).tensors);
}

TEST_F(FedCoLLMClientTest, MalformedTasksAreRefusedAndLeaveTheModelUnchanged) {
  auto server = Server("fedcollm");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto context = Context(0);
  auto handler = Handler("fedcollm", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, task, &result).ok());
  const std::vector<float> base = Copy(context->global().params());
  const std::vector<float> adapters = Copy(context->global().lora_params());

  auto resized = [&](const std::string& name, int change) {
    wire::TaskAssign t = task;
    for (auto& x : t.tensors) {
      if (x.name != name) continue;
      std::vector<float> v = x.ToFloat32();
      v.resize(v.size() + change, 0.0f);
      x = wire::Tensor::Float32(name, {v.size()}, v);
    }
    return t;
  };
  std::map<std::string, wire::TaskAssign> bad;
  bad["another model"] = task;
  bad["another model"].params["model"] = std::string("slm-tiny");
  bad["a short base"] = resized("params", -1);
  bad["a long adapter tensor"] = resized("lora", 1);
  bad["no adapters"] = task;
  std::erase_if(bad["no adapters"].tensors, [](const wire::Tensor& t) { return t.name == "lora"; });
  bad["another adapter rank"] = task;
  bad["another adapter rank"].params["lora.rank"] = int64_t{4};
  bad["no local training"] = task;
  bad["no local training"].params.erase("batch");
  bad["an unknown kind"] = task;
  bad["an unknown kind"].kind = "fedavg.train";
  // Each carries another base than the client holds (the base never trains), so a load shows.
  for (auto& [what, t] : bad) {
    if (what == "a short base") continue;
    for (auto& x : t.tensors) {
      if (x.name != "params") continue;
      std::vector<float> v = x.ToFloat32();
      for (float& f : v) f += 0.5f;
      x = wire::Tensor::Float32("params", {v.size()}, v);
    }
  }
  for (const auto& [what, t] : bad) {
    wire::TaskResult r;
    EXPECT_FALSE(handler->Run(2, t, &r).ok()) << what << " was accepted";
    EXPECT_TRUE(SameBits(Copy(context->global().params()), base)) << what << " moved the base";
    EXPECT_TRUE(SameBits(Copy(context->global().lora_params()), adapters))
        << what << " moved the adapters";
  }
}

TEST_F(FedCoLLMClientTest, EvaluationScoresTheSlmWithTheSentAdapters) {
  SetConfig("clients = true\n");
  auto server = Server("fedcollm");
  ClientInfo client{"client-0", 0, server->RequiredCapabilities()};
  auto context = Context(0);
  auto handler = Handler("fedcollm", context.get());
  wire::TaskResult trained;
  ASSERT_TRUE(handler->Run(1, Assign(FirstTask(*server, 1)), &trained).ok());
  ASSERT_TRUE(server->OnResult(client, trained).ok());
  auto next = server->OnTaskClosed(TaskReport{});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  ASSERT_TRUE(next->has_value());
  ASSERT_EQ((*next)->kind, kFedCoLLMEvalTask);
  wire::TaskResult scored;
  ASSERT_TRUE(handler->Run(1, Assign(**next), &scored).ok());
  EXPECT_TRUE(scored.tensors.empty());
  auto slm = SlmOf(Assign(**next));
  auto expected = EvaluateLoss(*slm, context->data().validation, 16, 256);
  ASSERT_TRUE(expected.ok());
  EXPECT_GT(scored.weight, 0.0);
  EXPECT_EQ(scored.weight, static_cast<double>(expected->tokens));
  EXPECT_NEAR(scored.metrics.at("val_loss"), expected->loss, 1e-6);
  EXPECT_TRUE(server->OnResult(client, scored).ok());
}

}  // namespace
}  // namespace tandem

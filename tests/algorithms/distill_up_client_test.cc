// distill-up's client half, driven with tasks its own coordinator half makes: the upload is the
// own SLM's next-token distribution at the task's temperature on every position of the round's
// windows, weight 1, after training that lowers its own loss; the own model persists across
// rounds (round 2 starts where round 1 ended); a round replays bit for bit; malformed tasks are
// refused and leave the own model as it was; "distill.eval" reports own_val_loss and
// all_val_loss weighted by the own held-out tokens.
#include "algorithms/distill_up/client.h"

#include <gtest/gtest.h>

#include "algorithms/common/own_model.h"
#include "algorithms/distill_up/tasks.h"
#include "tests/algorithms/halves_fixtures.h"

namespace tandem {
namespace {

using testing::Assign;
using testing::Copy;
using testing::ExpectPredictionsAt;
using testing::Loss;
using testing::Micro;
using testing::SameBits;

constexpr uint64_t kSeed = 5;  // the config's seed: the own model's, too

class DistillUpClientTest : public testing::HalvesTest {
 protected:
  wire::TaskResult Run(ClientContext* context, uint64_t round, const wire::TaskAssign& task) {
    auto handler = Handler("distill-up", context);
    wire::TaskResult result;
    Status s = handler->Run(round, task, &result);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return result;
  }
};

TEST_F(DistillUpClientTest, UploadsItsOwnModelsDistributionsAtTheTasksTemperature) {
  auto server = Server("distill-up");
  const TaskSpec spec = FirstTask(*server, 1);
  ASSERT_EQ(spec.kind, kDistillUpTask);
  ASSERT_TRUE(spec.contribution.has_value());
  EXPECT_EQ(spec.contribution->tensor, "probs");
  const wire::TaskAssign task = Assign(spec);
  auto context = Context(0);
  Gpt& own = context->own(kSeed);
  const double before = Loss(own, context->data().train);
  const wire::TaskResult result = Run(context.get(), 1, task);

  ASSERT_EQ(result.tensors.size(), 1u);
  EXPECT_EQ(result.tensors[0].name, "probs");
  ASSERT_EQ(result.tensors[0].NumElements(), spec.contribution->length);
  EXPECT_EQ(result.weight, 1.0);
  const std::vector<float> probs = result.tensors[0].ToFloat32();
  const double temperature = std::get<double>(task.params.at("kd.temperature"));
  ASSERT_EQ(temperature, 2.0);
  EXPECT_LT(ExpectPredictionsAt(own, task, context->public_tokens(), temperature, probs), 1e-5);
  // At another temperature the same model's rows differ: the upload is at the task's.
  EXPECT_GT(ExpectPredictionsAt(own, task, context->public_tokens(), 1.0, probs), 1e-3);
  EXPECT_LT(Loss(own, context->data().train), before - 0.05) << "the own model did not learn";
  ClientInfo client{"client-0", 0, server->RequiredCapabilities()};
  EXPECT_TRUE(server->OnResult(client, result).ok()) << "its own half refuses the upload";
}

TEST_F(DistillUpClientTest, TheOwnModelPersistsAcrossRounds) {
  auto server = Server("distill-up");
  const wire::TaskAssign first = Assign(FirstTask(*server, 1));
  const wire::TaskAssign second = Assign(FirstTask(*server, 2));
  auto context = Context(0);
  Run(context.get(), 1, first);
  const std::vector<float> after_first = Copy(context->own(kSeed).params());
  const wire::TaskResult result = Run(context.get(), 2, second);
  // A client whose own model starts from where round 1 ended gives the same round 2...
  ClientContext resumed(0, Micro(), context->data(), after_first);
  EXPECT_EQ(Run(&resumed, 2, second), result);
  // ...and one that starts afresh does not.
  auto fresh = Context(0);
  EXPECT_NE(Run(fresh.get(), 2, second).tensors, result.tensors);
}

TEST_F(DistillUpClientTest, TheSameSeedClientAndRoundReplayBitForBit) {
  auto server = Server("distill-up");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto a = Context(0), b = Context(0), c = Context(1);
  const wire::TaskResult first = Run(a.get(), 1, task);
  EXPECT_EQ(first, Run(b.get(), 1, task));
  EXPECT_NE(first.tensors, Run(c.get(), 1, task).tensors);
}

TEST_F(DistillUpClientTest, MalformedTasksAreRefusedAndLeaveTheOwnModelUnchanged) {
  auto server = Server("distill-up");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto context = Context(0);
  auto handler = Handler("distill-up", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, task, &result).ok());
  const std::vector<float> own = Copy(context->own(kSeed).params());
  std::vector<uint32_t> windows = FindTensor(task.tensors, "kd.windows")->ToUint32();

  auto with_windows = [&](std::vector<uint32_t> w) {
    wire::TaskAssign t = task;
    for (auto& x : t.tensors) {
      if (x.name == "kd.windows") x = wire::Tensor::Uint32("kd.windows", {w.size()}, w);
    }
    return t;
  };
  std::map<std::string, wire::TaskAssign> bad;
  bad["another model"] = task;
  bad["another model"].params["model"] = std::string("slm-tiny");
  windows.back() = static_cast<uint32_t>(context->public_tokens().size() - 10);
  bad["a window past the public split"] = with_windows(windows);
  bad["no windows"] = with_windows({});
  bad["windows longer than the model's context"] = task;
  bad["windows longer than the model's context"].params["kd.context"] = int64_t{128};
  bad["no temperature"] = task;
  bad["no temperature"].params.erase("kd.temperature");
  bad["an unknown kind"] = task;
  bad["an unknown kind"].kind = "distill.down";
  for (const auto& [what, t] : bad) {
    wire::TaskResult r;
    EXPECT_FALSE(handler->Run(2, t, &r).ok()) << what << " was accepted";
    EXPECT_TRUE(SameBits(Copy(context->own(kSeed).params()), own)) << what << " changed it";
  }
}

TEST_F(DistillUpClientTest, EvaluationReportsOwnAndAllValLossWithPositiveWeight) {
  SetConfig("clients = true\n");  // eval.clients: "distill.eval" after the upload
  auto server = Server("distill-up");
  ClientInfo client{"client-0", 0, server->RequiredCapabilities()};
  auto context = Context(0);
  ASSERT_TRUE(server->OnResult(client, Run(context.get(), 1, Assign(FirstTask(*server, 1)))).ok());
  auto next = server->OnTaskClosed(TaskReport{});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  ASSERT_TRUE(next->has_value());
  ASSERT_EQ((*next)->kind, kOwnEvalTask);
  const wire::TaskResult scored = Run(context.get(), 1, Assign(**next));
  EXPECT_TRUE(scored.tensors.empty());
  auto own = EvaluateLoss(context->own(kSeed), context->data().validation, 16, 256);
  auto all = EvaluateLoss(context->own(kSeed), context->data().all_validation, 16, 256);
  ASSERT_TRUE(own.ok() && all.ok());
  EXPECT_GT(scored.weight, 0.0);
  EXPECT_EQ(scored.weight, static_cast<double>(own->tokens));
  EXPECT_NEAR(scored.metrics.at("own_val_loss"), own->loss, 1e-6);
  EXPECT_NEAR(scored.metrics.at("all_val_loss"), all->loss, 1e-6);
  EXPECT_GT(scored.metrics.at("all_val_loss"), 0.0);
  EXPECT_TRUE(server->OnResult(client, scored).ok()) << "its own half refuses the evaluation";
}

}  // namespace
}  // namespace tandem

// fedmkt's client half, driven with tasks its own coordinator half makes: the own SLM trains on
// its data and towards the LLM's top-k targets (closer to them than the same training without
// the KD term), then uploads its distributions at the task's temperature on the round's windows;
// with kd.upload = 0 nothing goes up; the own model persists across rounds; a round replays bit
// for bit; malformed tasks — targets of another temperature or row count among them — are
// refused and leave the own model as it was; "distill.eval" reports own_val_loss and
// all_val_loss.
#include "algorithms/fedmkt/client.h"

#include <gtest/gtest.h>

#include "algorithms/common/own_model.h"
#include "algorithms/fedmkt/tasks.h"
#include "tests/algorithms/halves_fixtures.h"

namespace tandem {
namespace {

using testing::Assign;
using testing::Copy;
using testing::CrossEntropyToTargets;
using testing::ExpectPredictionsAt;
using testing::Loss;
using testing::Micro;
using testing::SameBits;

constexpr uint64_t kSeed = 5;

class FedMktClientTest : public testing::HalvesTest {
 protected:
  wire::TaskResult Run(ClientContext* context, uint64_t round, const wire::TaskAssign& task) {
    auto handler = Handler("fedmkt", context);
    wire::TaskResult result;
    Status s = handler->Run(round, task, &result);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return result;
  }
};

TEST_F(FedMktClientTest, LearnsFromTheLlmsTargetsAndUploadsItsDistributionsAtTheTasksTemperature) {
  auto server = Server("fedmkt");
  const TaskSpec spec = FirstTask(*server, 1);
  ASSERT_EQ(spec.kind, kMutualTask);
  ASSERT_TRUE(spec.contribution.has_value());
  const wire::TaskAssign task = Assign(spec);
  auto context = Context(0);
  Gpt& own = context->own(kSeed);
  const double before = Loss(own, context->data().train);
  const wire::TaskResult result = Run(context.get(), 1, task);

  ASSERT_EQ(result.tensors.size(), 1u);
  EXPECT_EQ(result.tensors[0].name, "probs");
  ASSERT_EQ(result.tensors[0].NumElements(), spec.contribution->length);
  EXPECT_EQ(result.weight, 1.0);
  EXPECT_TRUE(result.metrics.count("kd_kl"));
  const std::vector<float> probs = result.tensors[0].ToFloat32();
  EXPECT_LT(ExpectPredictionsAt(own, task, context->public_tokens(), 2.0, probs), 1e-5);
  EXPECT_GT(ExpectPredictionsAt(own, task, context->public_tokens(), 1.0, probs), 1e-3);
  EXPECT_LT(Loss(own, context->data().train), before - 0.05);

  // The same round with the KD term weighted 0 ends farther from the LLM's targets.
  wire::TaskAssign without = task;
  without.params["kd.weight"] = 0.0;
  auto control = Context(0);
  Run(control.get(), 1, without);
  const double with_kd = CrossEntropyToTargets(own, task, context->public_tokens());
  const double without_kd =
      CrossEntropyToTargets(control->own(kSeed), task, context->public_tokens());
  EXPECT_LT(with_kd, without_kd - 1e-3) << "with " << with_kd << ", without " << without_kd;
  ClientInfo client{"client-0", 0, server->RequiredCapabilities()};
  EXPECT_TRUE(server->OnResult(client, result).ok()) << "its own half refuses the upload";
}

TEST_F(FedMktClientTest, WithoutUploadTheOwnModelLearnsAndNothingGoesUp) {
  auto server = Server("fedmkt");
  wire::TaskAssign task = Assign(FirstTask(*server, 1));
  task.params["kd.upload"] = int64_t{0};
  auto context = Context(0);
  const std::vector<float> start = Copy(context->own(kSeed).params());
  const wire::TaskResult result = Run(context.get(), 1, task);
  EXPECT_TRUE(result.tensors.empty());
  EXPECT_FALSE(SameBits(Copy(context->own(kSeed).params()), start));
  // And the same task otherwise trains the same model: the flag changes only what goes up.
  auto uploading = Context(0);
  Run(uploading.get(), 1, Assign(FirstTask(*server, 1)));
  EXPECT_TRUE(SameBits(Copy(uploading->own(kSeed).params()), Copy(context->own(kSeed).params())));
}

TEST_F(FedMktClientTest, TheOwnModelPersistsAcrossRounds) {
  auto server = Server("fedmkt");
  const wire::TaskAssign first = Assign(FirstTask(*server, 1));
  const wire::TaskAssign second = Assign(FirstTask(*server, 2));
  auto context = Context(0);
  Run(context.get(), 1, first);
  const std::vector<float> after_first = Copy(context->own(kSeed).params());
  const wire::TaskResult result = Run(context.get(), 2, second);
  ClientContext resumed(0, Micro(), context->data(), after_first);
  EXPECT_EQ(Run(&resumed, 2, second), result);
  auto fresh = Context(0);
  EXPECT_NE(Run(fresh.get(), 2, second).tensors, result.tensors);
}

TEST_F(FedMktClientTest, TheSameSeedClientAndRoundReplayBitForBit) {
  auto server = Server("fedmkt");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto a = Context(0), b = Context(0), c = Context(1);
  const wire::TaskResult first = Run(a.get(), 1, task);
  EXPECT_EQ(first, Run(b.get(), 1, task));
  EXPECT_NE(first.tensors, Run(c.get(), 1, task).tensors);
}

TEST_F(FedMktClientTest, MalformedTasksAreRefusedAndLeaveTheOwnModelUnchanged) {
  auto server = Server("fedmkt");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto context = Context(0);
  auto handler = Handler("fedmkt", context.get());
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
  // Targets computed at T = 2 for a task that says T = 1.
  bad["targets of another temperature"] = task;
  bad["targets of another temperature"].params["kd.temperature"] = 1.0;
  // Targets for two windows' rows on one window.
  bad["targets of another row count"] = with_windows({windows[0]});
  bad["no targets"] = task;
  std::erase_if(bad["no targets"].tensors,
                [](const wire::Tensor& t) { return t.name == "kd.topk_words"; });
  bad["truncated targets"] = task;
  for (auto& x : bad["truncated targets"].tensors) {
    if (x.name != "kd.topk_values") continue;
    std::vector<float> v = x.ToFloat32();
    v.resize(v.size() / 2);
    x = wire::Tensor::Float32("kd.topk_values", {v.size()}, v);
  }
  windows.back() = static_cast<uint32_t>(context->public_tokens().size() - 10);
  bad["a window past the public split"] = with_windows(windows);
  bad["an upload flag of 2"] = task;
  bad["an upload flag of 2"].params["kd.upload"] = int64_t{2};
  bad["no kd settings"] = task;
  bad["no kd settings"].params.erase("kd.alpha");
  bad["an unknown kind"] = task;
  bad["an unknown kind"].kind = "distill.up";
  for (const auto& [what, t] : bad) {
    wire::TaskResult r;
    EXPECT_FALSE(handler->Run(2, t, &r).ok()) << what << " was accepted";
    EXPECT_TRUE(SameBits(Copy(context->own(kSeed).params()), own)) << what << " changed it";
  }
}

TEST_F(FedMktClientTest, EvaluationReportsOwnAndAllValLossWithPositiveWeight) {
  SetConfig("clients = true\n");
  auto server = Server("fedmkt");
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
  ASSERT_TRUE(own.ok());
  EXPECT_GT(scored.weight, 0.0);
  EXPECT_EQ(scored.weight, static_cast<double>(own->tokens));
  EXPECT_NEAR(scored.metrics.at("own_val_loss"), own->loss, 1e-6);
  EXPECT_GT(scored.metrics.at("all_val_loss"), 0.0);
  EXPECT_TRUE(server->OnResult(client, scored).ok());
}

}  // namespace
}  // namespace tandem

// distill-down's client half, driven with tasks its own coordinator half makes: the upload is
// fedavg's delta, and the distillation term pulls the SLM towards the teacher's targets (closer
// than the same training without it); a round replays bit for bit; malformed tasks — wrong model,
// wrong tensor size, windows past the public split, targets of another temperature or row count,
// an unknown kind — are refused and leave the model as it was; with local SLMs
// (distill-down.slms = "local", kd.upload = 0) the client's own SLM learns and nothing goes up.
#include "algorithms/distill_down/client.h"

#include <gtest/gtest.h>

#include "algorithms/distill_down/tasks.h"
#include "algorithms/fedmkt/tasks.h"
#include "tests/algorithms/halves_fixtures.h"

namespace tandem {
namespace {

using testing::Assign;
using testing::Copy;
using testing::CrossEntropyToTargets;
using testing::Loss;
using testing::Micro;
using testing::SameBits;

class DistillDownClientTest : public testing::HalvesTest {};

// The model a delta result makes from the task's weights.
Gpt Trained(const wire::TaskAssign& task, const wire::TaskResult& result) {
  Gpt model(Micro());
  EXPECT_TRUE(DecodeWeightsInto(task, &model).ok());
  const std::vector<float> delta = result.tensors.at(0).ToFloat32();
  EXPECT_EQ(delta.size(), model.params().size());
  for (size_t i = 0; i < delta.size(); ++i) model.params()[i] += delta[i];
  return model;
}

TEST_F(DistillDownClientTest, UploadsADeltaAndMovesTheSlmTowardsTheTeacher) {
  auto server = Server("distill-down");
  const TaskSpec spec = FirstTask(*server, 1);
  ASSERT_EQ(spec.kind, kDistillTrainTask);
  const wire::TaskAssign task = Assign(spec);
  auto context = Context(0);
  auto handler = Handler("distill-down", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, task, &result).ok());
  const size_t n = Gpt(Micro()).params().size();
  ASSERT_EQ(result.tensors.size(), 1u);
  EXPECT_EQ(result.tensors[0].name, "delta");
  EXPECT_EQ(result.tensors[0].NumElements(), n);
  ASSERT_TRUE(spec.contribution.has_value());
  EXPECT_EQ(spec.contribution->length, n);
  EXPECT_EQ(result.weight, static_cast<double>(context->data().train.size()));
  EXPECT_GT(result.metrics.at("kd_loss"), 0.0);
  EXPECT_TRUE(result.metrics.count("kd_kl"));

  // The same training with the distillation term weighted 0: the SLM ends farther from the
  // teacher's targets than with it.
  wire::TaskAssign without = task;
  without.params["kd.weight"] = 0.0;
  auto control_context = Context(0);
  auto control = Handler("distill-down", control_context.get());
  wire::TaskResult plain;
  ASSERT_TRUE(control->Run(1, without, &plain).ok());
  Gpt distilled = Trained(task, result);
  Gpt undistilled = Trained(task, plain);
  const double with_kd = CrossEntropyToTargets(distilled, task, context->public_tokens());
  const double without_kd = CrossEntropyToTargets(undistilled, task, context->public_tokens());
  EXPECT_LT(with_kd, without_kd - 1e-3) << "with " << with_kd << ", without " << without_kd;
  // And it still learns its own data.
  Gpt sent(Micro());
  ASSERT_TRUE(DecodeWeightsInto(task, &sent).ok());
  EXPECT_LT(Loss(distilled, context->data().train), Loss(sent, context->data().train) - 0.05);
}

TEST_F(DistillDownClientTest, TheSameSeedClientAndRoundReplayBitForBit) {
  auto server = Server("distill-down");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto run = [&](int index, uint64_t round) {
    auto context = Context(index);
    auto handler = Handler("distill-down", context.get());
    wire::TaskResult result;
    EXPECT_TRUE(handler->Run(round, task, &result).ok());
    return result;
  };
  const wire::TaskResult first = run(0, 1);
  EXPECT_EQ(first, run(0, 1));
  EXPECT_NE(first.tensors, run(1, 1).tensors);
}

// The task's tensor `name` replaced by `tensor`.
void Replace(wire::TaskAssign* task, const std::string& name, wire::Tensor tensor) {
  for (auto& t : task->tensors) {
    if (t.name == name) t = std::move(tensor);
  }
}

TEST_F(DistillDownClientTest, MalformedTasksAreRefusedAndLeaveTheModelUnchanged) {
  auto server = Server("distill-down");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto context = Context(0);
  auto handler = Handler("distill-down", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, task, &result).ok());
  const std::vector<float> model = Copy(context->global().params());
  const std::vector<uint32_t> windows = FindTensor(task.tensors, "kd.windows")->ToUint32();
  const size_t public_tokens = context->public_tokens().size();

  std::map<std::string, wire::TaskAssign> bad;
  bad["another model"] = task;
  bad["another model"].params["model"] = std::string("slm-tiny");
  bad["a short params tensor"] = task;
  {
    std::vector<float> p = FindTensor(task.tensors, "params")->ToFloat32();
    p.pop_back();
    Replace(&bad["a short params tensor"], "params", wire::Tensor::Float32("params", {p.size()}, p));
  }
  bad["a window past the public split"] = task;
  {
    std::vector<uint32_t> w = windows;
    w.back() = static_cast<uint32_t>(public_tokens - 10);
    Replace(&bad["a window past the public split"], "kd.windows",
            wire::Tensor::Uint32("kd.windows", {w.size()}, w));
  }
  bad["targets of another temperature"] = task;
  bad["targets of another temperature"].params["kd.temperature"] = 1.0;
  bad["targets for more rows than the windows"] = task;
  {
    const std::vector<uint32_t> one = {windows[0]};
    Replace(&bad["targets for more rows than the windows"], "kd.windows",
            wire::Tensor::Uint32("kd.windows", {1}, one));
  }
  bad["no targets"] = task;
  std::erase_if(bad["no targets"].tensors,
                [](const wire::Tensor& t) { return t.name == "kd.topk_values"; });
  bad["an unknown kind"] = task;
  bad["an unknown kind"].kind = "distill.nope";
  // Every one of them carries other weights than the client holds, so a load shows.
  for (auto& [what, t] : bad) {
    if (what == "a short params tensor") continue;
    std::vector<float> p = FindTensor(t.tensors, "params")->ToFloat32();
    for (float& x : p) x += 0.5f;
    Replace(&t, "params", wire::Tensor::Float32("params", {p.size()}, p));
  }
  for (const auto& [what, t] : bad) {
    wire::TaskResult r;
    EXPECT_FALSE(handler->Run(2, t, &r).ok()) << what << " was accepted";
    EXPECT_TRUE(SameBits(Copy(context->global().params()), model)) << what << " changed the model";
  }
}

TEST_F(DistillDownClientTest, WithLocalSlmsTheOwnModelLearnsAndNothingGoesUp) {
  SetConfig("", "slms = \"local\"\n");
  auto server = Server("distill-down");
  const TaskSpec spec = FirstTask(*server, 1);
  ASSERT_EQ(spec.kind, kMutualTask);
  EXPECT_FALSE(spec.contribution.has_value());
  EXPECT_EQ(std::get<int64_t>(spec.params.at("kd.upload")), 0);
  auto context = Context(0);
  auto handler = Handler("distill-down", context.get());
  Gpt& own = context->own(5);
  const std::vector<float> start = Copy(own.params());
  const double before = Loss(own, context->data().train);
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, Assign(spec), &result).ok());
  EXPECT_TRUE(result.tensors.empty());
  EXPECT_GT(result.weight, 0.0);
  EXPECT_FALSE(SameBits(Copy(own.params()), start));
  EXPECT_LT(Loss(own, context->data().train), before - 0.05);
  ClientInfo client{"client-0", 0, server->RequiredCapabilities()};
  EXPECT_TRUE(server->OnResult(client, result).ok()) << "its own half refuses the result";
}

}  // namespace
}  // namespace tandem

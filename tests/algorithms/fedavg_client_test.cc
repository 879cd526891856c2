// fedavg's client half, driven with tasks its own coordinator half makes: the upload is a delta
// of the model's size weighted by the client's examples, and the model it makes fits the
// client's data better than the one it was sent; a round replays bit for bit from (seed, client,
// round); malformed tasks are refused and leave the client's model as it was; evaluation reports
// val_loss weighted by the held-out tokens.
#include "algorithms/fedavg/client.h"

#include <gtest/gtest.h>

#include "algorithms/fedavg/tasks.h"
#include "tests/algorithms/halves_fixtures.h"

namespace tandem {
namespace {

using testing::Assign;
using testing::Copy;
using testing::Loss;
using testing::Micro;
using testing::SameBits;

class FedAvgClientTest : public testing::HalvesTest {};

TEST_F(FedAvgClientTest, UploadsADeltaOfTheModelsSizeThatLowersItsOwnLoss) {
  auto server = Server("fedavg");
  const TaskSpec spec = FirstTask(*server, 1);
  ASSERT_EQ(spec.kind, kFedAvgTrainTask);
  auto context = Context(0);
  auto handler = Handler("fedavg", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, Assign(spec), &result).ok());

  const size_t n = Gpt(Micro()).params().size();
  ASSERT_EQ(result.tensors.size(), 1u);
  EXPECT_EQ(result.tensors[0].name, "delta");
  EXPECT_EQ(result.tensors[0].dtype, wire::DType::kFloat32);
  ASSERT_EQ(result.tensors[0].NumElements(), n);
  ASSERT_TRUE(spec.contribution.has_value());
  EXPECT_EQ(spec.contribution->tensor, "delta");
  EXPECT_EQ(spec.contribution->length, n);
  EXPECT_EQ(result.weight, static_cast<double>(context->data().train.size()));
  EXPECT_EQ(result.metrics.at("steps"), 4.0);
  EXPECT_GT(result.metrics.at("train_loss"), 0.0);

  // sent + delta is the trained model, and it fits this client's data better than the sent one.
  Gpt sent(Micro());
  ASSERT_TRUE(DecodeWeightsInto(Assign(spec), &sent).ok());
  Gpt trained(Micro());
  const std::vector<float> delta = result.tensors[0].ToFloat32();
  for (size_t i = 0; i < n; ++i) trained.params()[i] = sent.params()[i] + delta[i];
  const double before = Loss(sent, context->data().train);
  const double after = Loss(trained, context->data().train);
  EXPECT_LT(after, before - 0.05) << "before " << before << ", after " << after;
}

TEST_F(FedAvgClientTest, TheSameSeedClientAndRoundReplayBitForBit) {
  auto server = Server("fedavg");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto run = [&](int index, uint64_t round) {
    auto context = Context(index);
    auto handler = Handler("fedavg", context.get());
    wire::TaskResult result;
    EXPECT_TRUE(handler->Run(round, task, &result).ok());
    return result;
  };
  const wire::TaskResult first = run(0, 1);
  EXPECT_EQ(first, run(0, 1));
  // Batches depend on the round and the client, so the replay is not a constant.
  EXPECT_NE(first.tensors, run(0, 2).tensors);
  EXPECT_NE(first.tensors, run(1, 1).tensors);
}

TEST_F(FedAvgClientTest, MalformedTasksAreRefusedAndLeaveTheModelUnchanged) {
  auto server = Server("fedavg");
  const TaskSpec spec = FirstTask(*server, 1);
  auto context = Context(0);
  auto handler = Handler("fedavg", context.get());
  wire::TaskResult result;
  ASSERT_TRUE(handler->Run(1, Assign(spec), &result).ok());
  // The model now holds what this client trained, which is not what any task below carries.
  const std::vector<float> model = Copy(context->global().params());

  std::map<std::string, wire::TaskAssign> bad;
  bad["another model"] = Assign(spec);
  bad["another model"].params["model"] = std::string("slm-tiny");
  bad["a short params tensor"] = Assign(spec);
  {
    std::vector<float> p = bad["a short params tensor"].tensors[0].ToFloat32();
    p.pop_back();
    bad["a short params tensor"].tensors[0] = wire::Tensor::Float32("params", {p.size()}, p);
  }
  bad["no params tensor"] = Assign(spec);
  bad["no params tensor"].tensors.clear();
  bad["an unknown kind"] = Assign(spec);
  bad["an unknown kind"].kind = "fedavg.tarin";
  bad["no local steps"] = Assign(spec);
  bad["no local steps"].params.erase("local_steps");
  bad["a negative proximal mu"] = Assign(spec);
  bad["a negative proximal mu"].params["proximal_mu"] = -1.0;
  bad["an eval task without a budget"] = Assign(spec);
  bad["an eval task without a budget"].kind = kFedAvgEvalTask;
  for (const auto& [what, task] : bad) {
    wire::TaskResult r;
    EXPECT_FALSE(handler->Run(2, task, &r).ok()) << what << " was accepted";
    EXPECT_TRUE(SameBits(Copy(context->global().params()), model)) << what << " changed the model";
  }
}

TEST_F(FedAvgClientTest, EvaluationReportsValLossWeightedByHeldOutTokens) {
  SetConfig("clients = true\n");  // eval.clients: the round's second task scores the new model
  auto server = Server("fedavg");
  ClientInfo client{"client-0", 0, server->RequiredCapabilities()};
  const TaskSpec spec = FirstTask(*server, 1);
  auto context = Context(0);
  auto handler = Handler("fedavg", context.get());
  wire::TaskResult trained;
  ASSERT_TRUE(handler->Run(1, Assign(spec), &trained).ok());
  ASSERT_TRUE(server->OnResult(client, trained).ok());
  auto next = server->OnTaskClosed(TaskReport{});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  ASSERT_TRUE(next->has_value());
  ASSERT_EQ((*next)->kind, kFedAvgEvalTask);

  wire::TaskResult scored;
  ASSERT_TRUE(handler->Run(1, Assign(**next), &scored).ok());
  EXPECT_TRUE(scored.tensors.empty());
  Gpt sent(Micro());
  ASSERT_TRUE(DecodeWeightsInto(Assign(**next), &sent).ok());
  auto expected = EvaluateLoss(sent, context->data().validation, 16, 256);
  ASSERT_TRUE(expected.ok());
  EXPECT_GT(scored.weight, 0.0);
  EXPECT_EQ(scored.weight, static_cast<double>(expected->tokens));
  EXPECT_NEAR(scored.metrics.at("val_loss"), expected->loss, 1e-6);
  EXPECT_TRUE(server->OnResult(client, scored).ok()) << "its own half refuses the evaluation";
}

}  // namespace
}  // namespace tandem

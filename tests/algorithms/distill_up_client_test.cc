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
#include "distill/confidence.h"
#include "distill/votes.h"
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

// kd.ensemble = "confidence" and "votes": the same trained model's predictions, uploaded as
// [w·p | w] (w its max-probability at T = 1) or as votes for its top-k tokens; a top-k beyond
// the vocabulary or an unknown ensemble is refused.
TEST_F(DistillUpClientTest, ConfidenceAndVoteUploadsAreTheSameModelsPredictions) {
  auto server = Server("distill-up");
  const wire::TaskAssign task = Assign(FirstTask(*server, 1));
  auto plain = Context(0), weighted = Context(0), voting = Context(0);
  const std::vector<float> probs = Run(plain.get(), 1, task).tensors.at(0).ToFloat32();
  const int V = Micro().vocab;
  const int N = static_cast<int>(probs.size()) / V;

  wire::TaskAssign confidence = task;
  confidence.params["kd.ensemble"] = std::string("confidence");
  const wire::TaskResult c = Run(weighted.get(), 1, confidence);
  ASSERT_EQ(c.tensors.size(), 1u);
  EXPECT_EQ(c.tensors[0].name, "confidence");
  const std::vector<float> up = c.tensors[0].ToFloat32();
  ASSERT_EQ(up.size(), ConfidenceContributionLength(N, V));
  ASSERT_TRUE(CheckConfidenceContribution(up, N, V).ok());
  double worst = 0.0;
  for (int i = 0; i < N; ++i) {
    const float w = up[static_cast<size_t>(N) * V + i];
    ASSERT_GT(w, 1.0f / V - 1e-6f);
    for (int v = 0; v < V; ++v) {
      worst = std::max(worst, std::fabs(static_cast<double>(up[static_cast<size_t>(i) * V + v]) / w -
                                        probs[static_cast<size_t>(i) * V + v]));
    }
  }
  EXPECT_LT(worst, 1e-5);

  wire::TaskAssign votes = task;
  votes.params["kd.ensemble"] = std::string("votes");
  votes.params["kd.vote_top_k"] = int64_t{3};
  const wire::TaskResult r = Run(voting.get(), 1, votes);
  EXPECT_EQ(r.tensors.at(0).name, "votes");
  const std::vector<float> vote = r.tensors.at(0).ToFloat32();
  ASSERT_TRUE(CheckVoteContribution(vote, N, V, 3).ok());
  for (int i = 0; i < N; ++i) {
    // Every voted token is at least as probable as every token not voted for.
    float low_voted = 2.0f, high_other = -1.0f;
    for (int v = 0; v < V; ++v) {
      const float p = probs[static_cast<size_t>(i) * V + v];
      if (vote[static_cast<size_t>(i) * V + v] > 0.0f) {
        low_voted = std::min(low_voted, p);
      } else {
        high_other = std::max(high_other, p);
      }
    }
    EXPECT_GE(low_voted, high_other) << "position " << i;
  }

  wire::TaskResult refused;
  wire::TaskAssign too_many = votes;
  too_many.params["kd.vote_top_k"] = int64_t{V + 1};
  auto context = Context(0);
  auto h = Handler("distill-up", context.get());
  EXPECT_FALSE(h->Run(1, too_many, &refused).ok());
  wire::TaskAssign unknown = task;
  unknown.params["kd.ensemble"] = std::string("median");
  EXPECT_FALSE(h->Run(1, unknown, &refused).ok());
}

}  // namespace
}  // namespace tandem

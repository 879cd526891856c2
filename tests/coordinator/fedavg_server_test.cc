// FedAvg's server half: results of the wrong shape, name, weight or with missing metrics are
// rejected and change nothing; accepted deltas move the model by their weighted mean; its state
// round-trips through SaveState/LoadState.
#include "algorithms/fedavg/server.h"

#include <gtest/gtest.h>

#include <vector>

namespace tandem {
namespace {

std::unique_ptr<FedAvgServer> MakeServer(const std::string& strategy = "fedavg") {
  auto config = ModelPreset("slm-micro");
  EXPECT_TRUE(config.ok());
  auto model = std::make_unique<Gpt>(*config);
  model->InitWeights(3);
  StrategyConfig sc;
  sc.name = strategy;
  auto s = MakeStrategy(sc);
  EXPECT_TRUE(s.ok()) << s.status().message();
  FedAvgServerConfig fc;
  fc.eval_tokens = 256;
  std::vector<Record> validation = {{"hello world, hello world\n", "x"}};
  return std::make_unique<FedAvgServer>(fc, std::move(model), std::move(*s), validation);
}

wire::TaskResult Result(size_t n, float value, double weight, const std::string& name = "delta") {
  std::vector<float> delta(n, value);
  return wire::TaskResult{{wire::Tensor::Float32(name, {n}, delta)}, weight,
                          {{"train_loss", 2.0}}};
}

TEST(FedAvgServerTest, RejectsMalformedResultsAndAveragesTheRest) {
  auto server = MakeServer();
  const size_t n = server->model().params().size();
  const std::vector<float> before(server->model().params().begin(),
                                  server->model().params().end());
  ClientInfo c{"client-0", 0, {"fedavg.train"}};
  auto spec = server->BeginRound(1, {c});
  ASSERT_TRUE(spec.ok());
  ASSERT_EQ(spec->tensors.size(), 1u);
  EXPECT_EQ(spec->tensors[0].NumElements(), n);

  EXPECT_FALSE(server->OnResult(c, Result(n - 1, 0.5f, 1.0)).ok()) << "short delta accepted";
  EXPECT_FALSE(server->OnResult(c, Result(n, 0.5f, 1.0, "weights")).ok()) << "wrong name";
  EXPECT_FALSE(server->OnResult(c, Result(n, 0.5f, 0.0)).ok()) << "zero weight";
  EXPECT_FALSE(server->OnResult(c, Result(n, 0.5f, -2.0)).ok()) << "negative weight";
  wire::TaskResult no_loss = Result(n, 0.5f, 1.0);
  no_loss.metrics.clear();
  EXPECT_FALSE(server->OnResult(c, no_loss).ok()) << "missing train_loss";
  wire::TaskResult two = Result(n, 0.5f, 1.0);
  two.tensors.push_back(two.tensors[0]);
  two.tensors[1].name = "extra";
  EXPECT_FALSE(server->OnResult(c, two).ok()) << "extra tensor";
  EXPECT_FALSE(server->OnResult(c, Result(n, 5e9f, 1.0)).ok()) << "delta beyond the sum's range";

  // Two good results, weights 1 and 3: the model moves by (1*0.1 + 3*0.5)/4 = 0.4.
  ASSERT_TRUE(server->OnResult(c, Result(n, 0.1f, 1.0)).ok());
  ASSERT_TRUE(server->OnResult(c, Result(n, 0.5f, 3.0)).ok());
  auto next = server->OnTaskClosed(TaskReport{});
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  const auto after = server->model().params();
  for (size_t i = 0; i < n; i += 997) EXPECT_NEAR(after[i], before[i] + 0.4f, 1e-5f) << i;
  std::map<std::string, double> metrics;
  ASSERT_TRUE(server->EndRound(1, &metrics).ok());
  EXPECT_DOUBLE_EQ(metrics.at("train_loss"), 2.0);
  EXPECT_TRUE(metrics.count("val_loss"));
}

TEST(FedAvgServerTest, StateRoundTripsAndRefusesAnotherStrategy) {
  auto a = MakeServer("fedavg");
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> meta;
  a->SaveState(&tensors, &meta);
  auto b = MakeServer("fedavg");
  b->model().params()[0] += 1.0f;
  ASSERT_TRUE(b->LoadState(tensors, meta).ok());
  EXPECT_EQ(b->model().params()[0], a->model().params()[0]);
  auto c = MakeServer("median");
  EXPECT_FALSE(c->LoadState(tensors, meta).ok());
  tensors["model.params"].pop_back();
  EXPECT_FALSE(b->LoadState(tensors, meta).ok());
}

}  // namespace
}  // namespace tandem

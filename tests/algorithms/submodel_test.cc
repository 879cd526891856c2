// submodel (algorithms/submodel): with every client at full width it is FedAvg bit for bit; with
// tiers, each coordinate moves by the weighted mean of the deltas of the clients covering it and
// the others stay as they were; a client trains the sub-model it is sent and refuses one cut from
// another model; under the privacy pipeline the lifted, unit-weight uploads give the same model;
// rolling windows reach every coordinate a static window never does; and a whole run goes
// through the real engine with secure aggregation.
#include "algorithms/submodel/server.h"

#include "algorithms/fedavg/server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "algorithms/submodel/tasks.h"
#include "client/client.h"
#include "coordinator/coordinator.h"
#include "tests/algorithms/halves_fixtures.h"
#include "wire/message.h"
#include "wire/protocol.h"

namespace tandem {
namespace {

using testing::Assign;
using testing::Copy;
using testing::Micro;
using testing::SameBits;

// [strategy] and [submodel] of the tests; `submodel` is the body of the [submodel] section.
std::string SubmodelConfigText(const std::string& strategy, const std::string& submodel) {
  return "name = \"submodel\"\nseed = 5\n"
         "[client]\nlocal_steps = 3\nbatch = 4\nlr = 0.003\n"
         "[strategy]\n" + strategy +
         "[submodel]\n" + submodel +
         "[eval]\ntokens = 256\n";
}

class SubmodelTest : public testing::HalvesTest {
 protected:
  void Use(const std::string& strategy, const std::string& submodel) {
    auto parsed = Config::Parse(SubmodelConfigText(strategy, submodel));
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    config_ = std::make_unique<Config>(std::move(*parsed));
  }

  static std::vector<ClientInfo> Cohort(const ServerAlgorithm& server, int clients) {
    std::vector<ClientInfo> cohort;
    for (int k = 0; k < clients; ++k) {
      cohort.push_back({"client-" + std::to_string(k), k, server.RequiredCapabilities()});
    }
    return cohort;
  }

  // Runs one round of `server` with `clients` clients (each with its own context) and returns
  // their results, after the server has taken them and closed the task.
  std::vector<wire::TaskResult> Round(ServerAlgorithm& server, const std::string& name,
                                      uint64_t round, int clients) {
    const std::vector<ClientInfo> cohort = Cohort(server, clients);
    auto spec = server.BeginRound(round, cohort);
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    std::vector<wire::TaskResult> results;
    TaskReport report;
    for (const ClientInfo& client : cohort) {
      wire::TaskAssign task = Assign(*spec);
      if (server.CustomizesTasks()) server.Customize(client, &task);
      auto context = Context(client.index);
      auto handler = Handler(name, context.get());
      wire::TaskResult result;
      Status s = handler->Run(round, task, &result);
      EXPECT_TRUE(s.ok()) << s.ToString();
      Status taken = server.OnResult(client, result);
      EXPECT_TRUE(taken.ok()) << taken.ToString();
      report.responded.push_back(client.name);
      results.push_back(std::move(result));
    }
    EXPECT_TRUE(server.OnTaskClosed(report).ok());
    std::map<std::string, double> metrics;
    EXPECT_TRUE(server.EndRound(round, &metrics).ok());
    return results;
  }
};

TEST_F(SubmodelTest, EveryClientAtFullWidthIsFedAvgBitForBit) {
  Use("name = \"fedadam\"\nserver_lr = 0.01\n", "width_divisors = [1]\n");
  auto fedavg = Server("fedavg");
  auto submodel = Server("submodel");
  ASSERT_TRUE(fedavg && submodel);
  auto& a = dynamic_cast<SubmodelServer&>(*submodel);
  ASSERT_TRUE(SameBits(Copy(a.model().params()),
                       Copy(dynamic_cast<FedAvgServer&>(*fedavg).model().params())));
  for (uint64_t round = 1; round <= 2; ++round) {
    Round(*fedavg, "fedavg", round, 3);
    Round(*submodel, "submodel", round, 3);
    EXPECT_TRUE(SameBits(Copy(a.model().params()),
                         Copy(dynamic_cast<FedAvgServer&>(*fedavg).model().params())))
        << "round " << round;
  }
}

TEST_F(SubmodelTest, EachCoordinateMovesByTheMeanOfTheClientsCoveringIt) {
  Use("name = \"fedavg\"\n", "width_divisors = [1, 2, 4]\n");
  auto server = Server("submodel");
  ASSERT_TRUE(server);
  auto& s = dynamic_cast<SubmodelServer&>(*server);
  const std::vector<float> before = Copy(s.model().params());
  const size_t n = before.size();
  // Client 3 is a second width-1 client: client K gets divisor [K mod 3].
  std::vector<wire::TaskResult> results = Round(*server, "submodel", 1, 4);
  std::vector<double> sum(n, 0.0), weight(n, 0.0);
  for (int k = 0; k < 4; ++k) {
    const Alignment* alignment = s.TierAlignment(s.DivisorOf(k));
    ASSERT_NE(alignment, nullptr);
    const std::vector<float> delta = results[k].tensors[0].ToFloat32();
    ASSERT_EQ(delta.size(), alignment->child_size()) << "client " << k;
    EXPECT_EQ(results[k].weight, 12.0);
    for (size_t i = 0; i < delta.size(); ++i) {
      sum[alignment->parent_offsets()[i]] += results[k].weight * delta[i];
      weight[alignment->parent_offsets()[i]] += results[k].weight;
    }
  }
  EXPECT_LT(s.TierAlignment(4)->child_size(), s.TierAlignment(2)->child_size());
  EXPECT_LT(s.TierAlignment(2)->child_size(), n);
  const std::vector<float> after = Copy(s.model().params());
  size_t moved_by_several = 0;
  for (size_t i = 0; i < n; ++i) {
    ASSERT_GT(weight[i], 0.0) << "a width-1 client covers every coordinate";
    const double expected = before[i] + sum[i] / weight[i];
    ASSERT_NEAR(after[i], expected, 1e-6 + 1e-6 * std::fabs(expected)) << "coordinate " << i;
    if (weight[i] > 24.0) ++moved_by_several;
  }
  EXPECT_GT(moved_by_several, 0u);
}

TEST_F(SubmodelTest, CoordinatesNoClientCoversStayBitForBit) {
  Use("name = \"fedavg\"\n", "width_divisors = [2]\n");
  auto server = Server("submodel");
  ASSERT_TRUE(server);
  auto& s = dynamic_cast<SubmodelServer&>(*server);
  const std::vector<float> before = Copy(s.model().params());
  Round(*server, "submodel", 1, 2);
  const std::vector<float> after = Copy(s.model().params());
  std::vector<bool> covered(before.size(), false);
  for (size_t o : s.TierAlignment(2)->parent_offsets()) covered[o] = true;
  size_t uncovered = 0, moved = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    if (!covered[i]) {
      ++uncovered;
      ASSERT_EQ(std::memcmp(&before[i], &after[i], sizeof(float)), 0) << "coordinate " << i;
    } else if (after[i] != before[i]) {
      ++moved;
    }
  }
  EXPECT_GT(uncovered, before.size() / 2) << "a width-1/2 sub-model covers about a quarter of "
                                             "the matrices";
  EXPECT_GT(moved, 0u);
}

TEST_F(SubmodelTest, UnderThePrivacyPipelineLiftedUnitWeightUploadsGiveTheSameModel) {
  Use("name = \"fedavg\"\n", "width_divisors = [1, 2]\n");
  // The reference: no privacy, every client weighing 1.
  auto plain = Server("submodel");
  ASSERT_TRUE(plain);
  std::vector<wire::TaskResult> results = Round(*plain, "submodel", 1, 3);
  auto& p = dynamic_cast<SubmodelServer&>(*plain);

  // The same clients under the pipeline: their uploads are lifted with weight 1, and the
  // coordinator gets only their mean (here computed as the pipeline would, without noise).
  ServerContext context;
  context.config = config_.get();
  context.seed = 5;
  context.splits = &splits_;
  context.model = Micro();
  SharedObjects shared;
  context.shared = &shared;
  context.privacy = true;
  auto made = (*FindAlgorithm("submodel"))->server.create(context);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  auto& priv = dynamic_cast<SubmodelServer&>(**made);
  const std::vector<ClientInfo> cohort = Cohort(priv, 3);
  auto spec = priv.BeginRound(1, cohort);
  ASSERT_TRUE(spec.ok());
  const size_t n = priv.model().params().size();
  ASSERT_EQ(spec->contribution->length, n);
  std::vector<double> sum(n, 0.0);
  TaskReport report;
  auto reference = Server("submodel");  // weights of 1 through the plain path
  auto& r = dynamic_cast<SubmodelServer&>(*reference);
  ASSERT_TRUE(r.BeginRound(1, cohort).ok());
  for (const ClientInfo& client : cohort) {
    wire::TaskAssign task = Assign(*spec);
    priv.Customize(client, &task);
    auto client_context = Context(client.index);
    auto handler = Handler("submodel", client_context.get());
    wire::TaskResult lifted;
    ASSERT_TRUE(handler->Run(1, task, &lifted).ok());
    ASSERT_EQ(lifted.tensors[0].NumElements(), n) << "the upload has the whole model's length";
    EXPECT_EQ(lifted.weight, 1.0);
    const std::vector<float> values = lifted.tensors[0].ToFloat32();
    for (size_t i = 0; i < n; ++i) sum[i] += values[i];
    // What the client lifted is its plain delta placed by its map, 0 elsewhere.
    wire::TaskResult unit = results[client.index];
    unit.weight = 1.0;
    const std::vector<float> child = unit.tensors[0].ToFloat32();
    const auto& offsets = p.TierAlignment(p.DivisorOf(client.index))->parent_offsets();
    std::vector<float> expected(n, 0.0f);
    for (size_t i = 0; i < child.size(); ++i) expected[offsets[i]] = child[i];
    EXPECT_TRUE(SameBits(values, expected)) << client.name;
    ASSERT_TRUE(r.OnResult(client, unit).ok());
    report.responded.push_back(client.name);
  }
  Aggregate aggregate;
  aggregate.mean.resize(n);
  for (size_t i = 0; i < n; ++i) aggregate.mean[i] = static_cast<float>(sum[i] / 3.0);
  aggregate.count = 3;
  aggregate.total_weight = 3.0;
  ASSERT_TRUE(priv.OnAggregate(aggregate).ok());
  ASSERT_TRUE(priv.OnTaskClosed(report).ok());
  ASSERT_TRUE(r.OnTaskClosed(report).ok());
  const std::vector<float> a = Copy(priv.model().params()), b = Copy(r.model().params());
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(a[i], b[i], 1e-6 + 1e-6 * std::fabs(b[i])) << i;
}

TEST_F(SubmodelTest, RollingWindowsReachEveryCoordinateAStaticWindowNeverDoes) {
  auto union_over = [&](const std::string& window, int rounds) {
    Use("name = \"fedavg\"\n", "width_divisors = [4]\nshrink_channels = false\nwindow = \"" +
                                   window + "\"\n");
    auto server = Server("submodel");
    auto& s = dynamic_cast<SubmodelServer&>(*server);
    std::vector<bool> covered(s.model().params().size(), false);
    for (int r = 1; r <= rounds; ++r) {
      EXPECT_TRUE(server->BeginRound(r, Cohort(*server, 1)).ok());
      for (size_t o : s.TierAlignment(4)->parent_offsets()) covered[o] = true;
      server->AbortRound();
    }
    return static_cast<double>(std::count(covered.begin(), covered.end(), false)) /
           static_cast<double>(covered.size());
  };
  EXPECT_EQ(union_over("rolling", 4), 0.0) << "width 1/4 rolls over everything in 4 rounds";
  const double never = union_over("static", 8);
  EXPECT_GT(never, 0.3) << "a static prefix leaves the rest of every block untouched";
}

TEST_F(SubmodelTest, ModelsListEachNarrowerTiersSubModelCutFromTheNewGlobalModel) {
  Use("name = \"fedavg\"\n", "width_divisors = [1, 2, 4]\nwindow = \"rolling\"\n");
  auto server = Server("submodel");
  ASSERT_TRUE(server);
  auto& s = dynamic_cast<SubmodelServer&>(*server);
  ASSERT_EQ(server->Models().size(), 1u) << "before any round: the global model alone";
  for (uint64_t round = 1; round <= 2; ++round) {
    Round(*server, "submodel", round, 3);
    const std::vector<RunModel> models = server->Models();
    ASSERT_EQ(models.size(), 3u) << "round " << round;
    EXPECT_EQ(models[0].name, "model");
    EXPECT_TRUE(models[0].headline);
    for (size_t m = 1; m < models.size(); ++m) {
      const int d = m == 1 ? 2 : 4;
      EXPECT_EQ(models[m].name, "submodel_d" + std::to_string(d));
      EXPECT_FALSE(models[m].headline) << "a sub-model is not the run's headline";
      // This round's window (rolling: it moves every round) of the global model after its step.
      const Alignment* alignment = s.TierAlignment(d);
      ASSERT_NE(alignment, nullptr);
      std::vector<float> expected(alignment->child_size());
      alignment->Extract(s.model().params(), expected);
      EXPECT_EQ(models[m].model->config().ToString(), alignment->child_config().ToString());
      EXPECT_TRUE(SameBits(Copy(models[m].model->params()), expected))
          << "round " << round << ", d = " << d;
    }
  }
}

// Regression: an importance window's map for llm-small is tens of kB of short runs, and as a
// string parameter it broke the wire's 4 KiB limit, so no client ever got its task.
TEST(SubmodelTaskTest, AnImportanceWindowsMapOfManyRunsCrossesTheWire) {
  auto parent = ModelPreset("llm-small");
  ASSERT_TRUE(parent.ok());
  AlignmentMap map;
  map.parent = *parent;
  for (int l = 0; l < parent->n_layer; ++l) map.layers.push_back(l);
  auto every_other = [](int n) {
    std::vector<int> v;
    for (int i = 0; i < n; i += 2) v.push_back(i);
    return v;
  };
  map.channels = every_other(parent->d_model);
  for (int l = 0; l < parent->n_layer; ++l) {
    map.heads.push_back(every_other(parent->n_head));
    map.neurons.push_back(every_other(parent->mlp_width(l)));
  }
  ASSERT_TRUE(map.Validate().ok()) << map.Validate().ToString();
  ASSERT_GT(AlignmentMapToJson(map).size(), wire::kMaxStringBytes);
  SubmodelTrainTask task;
  task.map = map;
  task.scatter = true;
  wire::Message message;
  message.envelope.run_id = 1;
  message.envelope.round = 1;
  message.envelope.task_id = 1;
  message.envelope.sequence = 1;
  wire::TaskAssign assign;
  assign.kind = kSubmodelTrainTask;
  assign.deadline_ms = 1000;
  task.Encode(&assign.params, &assign.tensors);
  message.body = assign;
  auto bytes = wire::EncodeMessage(message);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  auto decoded = wire::DecodeMessage(std::string_view(*bytes));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  auto back = SubmodelTrainTask::Decode(std::get<wire::TaskAssign>(decoded->body));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->map == map);
  EXPECT_TRUE(back->scatter);
  // Without the map's tensor the task is refused.
  wire::TaskAssign without = assign;
  without.tensors.clear();
  EXPECT_FALSE(SubmodelTrainTask::Decode(without).ok());
}

// A coordinator restored from its checkpoint after round 1 (model, FedAdam's moments, the
// record of coordinates ever updated) ends round 2 with the uninterrupted run's bits and
// metrics.
TEST_F(SubmodelTest, ResumeAfterARoundIsBitForBit) {
  const std::string strategy = "name = \"fedadam\"\nserver_lr = 0.01\n";
  Use(strategy, "width_divisors = [1, 2, 4]\nwindow = \"rolling\"\n");
  auto straight = Server("submodel");
  ASSERT_TRUE(straight);
  Round(*straight, "submodel", 1, 3);
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> metadata;
  straight->SaveState(&tensors, &metadata);
  Round(*straight, "submodel", 2, 3);
  std::map<std::string, double> straight_metrics;
  ASSERT_TRUE(straight->EndRound(2, &straight_metrics).ok());

  auto resumed = Server("submodel");
  ASSERT_TRUE(resumed);
  ASSERT_TRUE(resumed->LoadState(tensors, metadata).ok());
  Round(*resumed, "submodel", 2, 3);
  std::map<std::string, double> resumed_metrics;
  ASSERT_TRUE(resumed->EndRound(2, &resumed_metrics).ok());
  auto& a = dynamic_cast<SubmodelServer&>(*straight);
  auto& b = dynamic_cast<SubmodelServer&>(*resumed);
  EXPECT_TRUE(SameBits(Copy(a.model().params()), Copy(b.model().params())));
  ASSERT_TRUE(straight_metrics.count("never_updated_fraction"));
  EXPECT_EQ(straight_metrics["never_updated_fraction"], resumed_metrics["never_updated_fraction"]);
  EXPECT_EQ(straight_metrics["val_loss"], resumed_metrics["val_loss"]);

}

TEST_F(SubmodelTest, ATaskForAnotherModelOrAWrongSizeIsRefused) {
  Use("name = \"fedavg\"\n", "width_divisors = [2]\n");
  auto server = Server("submodel");
  const std::vector<ClientInfo> cohort = Cohort(*server, 1);
  auto spec = server->BeginRound(1, cohort);
  ASSERT_TRUE(spec.ok());
  wire::TaskAssign task = Assign(*spec);
  server->Customize(cohort[0], &task);
  // A client configured with another model than the one the map was cut from.
  ModelConfig other = Micro();
  other.n_layer += 1;
  auto context = Context(0, other);
  auto handler = Handler("submodel", context.get());
  wire::TaskResult result;
  Status s = handler->Run(1, task, &result);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("sub.map is cut from"), std::string::npos) << s.ToString();
  // A corrupted map.
  wire::TaskAssign bad = task;
  const std::string corrupt = "{\"format\":\"tandem-alignment\"}";
  for (wire::Tensor& t : bad.tensors) {
    if (t.name == "sub.map") {
      t = wire::Tensor::Bytes("sub.map", std::span<const uint8_t>(
                                             reinterpret_cast<const uint8_t*>(corrupt.data()),
                                             corrupt.size()));
    }
  }
  auto ok_context = Context(0);
  auto ok_handler = Handler("submodel", ok_context.get());
  EXPECT_FALSE(ok_handler->Run(1, bad, &result).ok());
  // A result of the full model's size from a width-1/2 client changes nothing.
  const std::vector<float> before = Copy(dynamic_cast<SubmodelServer&>(*server).model().params());
  wire::TaskResult wrong;
  wrong.weight = 1.0;
  wrong.metrics["train_loss"] = 1.0;
  std::vector<float> full(before.size(), 0.5f);
  wrong.tensors = {wire::Tensor::Float32("delta", {full.size()}, full)};
  EXPECT_FALSE(server->OnResult(cohort[0], wrong).ok());
  ASSERT_TRUE(ok_handler->Run(1, task, &result).ok());
  ASSERT_TRUE(server->OnResult(cohort[0], result).ok());
  TaskReport report;
  report.responded = {cohort[0].name};
  ASSERT_TRUE(server->OnTaskClosed(report).ok());
  // Only the accepted result moved the model: the covered mean is that one client's delta.
  const Alignment* alignment = dynamic_cast<SubmodelServer&>(*server).TierAlignment(2);
  const std::vector<float> delta = result.tensors[0].ToFloat32();
  const std::vector<float> after = Copy(dynamic_cast<SubmodelServer&>(*server).model().params());
  for (size_t i = 0; i < delta.size(); ++i) {
    const size_t o = alignment->parent_offsets()[i];
    ASSERT_NEAR(after[o], before[o] + delta[i], 1e-6) << i;
  }
}

}  // namespace
}  // namespace tandem

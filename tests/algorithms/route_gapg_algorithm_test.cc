// route-gapg: its config refusals and task schema, the client's local GAPG pass (the cloud asked
// at most once per prompt; with budget 1 and no filter exactly the GAPG step of route/), and whole
// runs through the real engine, client sessions and the coordinator's inference service over
// ipc:// — two clients that change the policy, one client whose update equals the local GAPG step
// computed directly, a resume bit for bit, and a run under secure aggregation.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "algorithms/registry.h"
#include "algorithms/route_gapg/local_gapg.h"
#include "algorithms/route_gapg/score.h"
#include "algorithms/route_gapg/server.h"
#include "algorithms/route_gapg/tasks.h"
#include "client/client.h"
#include "coordinator/coordinator.h"
#include "core/config.h"
#include "data/arithmetic.h"
#include "data/batcher.h"
#include "models/gpt_checkpoint.h"
#include "models/model_config.h"
#include "models/tokenizer.h"
#include "route/handoff.h"
#include "route/policy_gradient.h"
#include "tests/temp_dir.h"
#include "wire/curve.h"
#include "train/local_trainer.h"

namespace tandem {
namespace {

// The cloud: a slm-micro trained briefly on one-digit addition, right on some prompts and wrong
// on others. The device: the same model taught the hand-off marker on a random 30% of records
// (route_run's warm start), so its sampled groups mix answers, hand-offs and mistakes. Made once
// for the whole file.
std::string g_model_path, g_device_path;
constexpr int kContext = 16;  // "12+34=" and an answer: short windows train fast

class RouteGapgTest : public testing::TempDirTest {
 protected:
  static void SetUpTestSuite() {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("tandem_route_gapg_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    g_model_path = (dir / "model.safetensors").string();
    ModelConfig micro = *ModelPreset("slm-micro");
    micro.context = kContext;
    Gpt model(micro);
    model.InitWeights(12);
    auto records = MakeArithmeticRecords(1, 4000, 3);
    ASSERT_TRUE(records.ok());
    auto batcher = Batcher::Create(TokenDataset::FromRecords(*records), 16, model.config().context);
    ASSERT_TRUE(batcher.ok());
    TextTerm term(std::move(*batcher));
    LocalTrainer trainer(&model, TrainerOptions{});
    Rng rng(1);
    for (int s = 0; s < 300; ++s) ASSERT_TRUE(trainer.Step({&term}, 5e-3f, rng).ok());
    ASSERT_TRUE(SaveGpt(g_model_path, model).ok());
    std::vector<Record> warm = *records;
    for (size_t i = 0; i < warm.size(); ++i) {
      if (rng.Uniform() < 0.3) {
        warm[i].text = warm[i].text.substr(0, warm[i].text.find('=') + 1) +
                       std::string(kHandOffCompletion);
      }
    }
    auto warm_batcher = Batcher::Create(TokenDataset::FromRecords(warm), 16, model.config().context);
    ASSERT_TRUE(warm_batcher.ok());
    TextTerm warm_term(std::move(*warm_batcher));
    for (int s = 0; s < 30; ++s) ASSERT_TRUE(trainer.Step({&warm_term}, 5e-3f, rng).ok());
    g_device_path = (dir / "device.safetensors").string();
    ASSERT_TRUE(SaveGpt(g_device_path, model).ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(std::filesystem::path(g_model_path).parent_path());
  }

  // A run's config: `clients` in-process clients over ipc://, the service on.
  std::string ConfigText(int clients, int rounds, const std::string& extra) const {
    return "name = \"route-fed\"\nseed = 4\nout_dir = \"" + Path("runs") + "\"\n"
           "[model]\npreset = \"slm-micro\"\ncontext = " + std::to_string(kContext) + "\n"
           "[data]\nsource = \"arithmetic\"\nvalidation_fraction = 0.05\ntest_fraction = 0.05\n"
           "[data.arithmetic]\nlevels = [1]\nexamples_per_level = 2000\n"
           "[federation]\nclients = " + std::to_string(clients) +
           "\npartition = \"iid\"\ntransport = \"ipc\"\nrounds = " + std::to_string(rounds) +
           "\nround_deadline_s = 300\nheartbeat_ms = 200\npeer_timeout_ms = 10000\n"
           "wait_for_clients_s = 20\n"
           "[algorithm]\nname = \"route-gapg\"\n"
           "[serve]\nenabled = true\n"
           "[eval]\ntokens = 512\n"
           "[route-gapg]\ndevice_checkpoint = \"" + g_device_path + "\"\n"
           "cloud_checkpoint = \"" + g_model_path + "\"\n"
           "max_tokens = 4\ngroup_size = 4\nprompts_per_step = 4\nlocal_steps = 2\n" + extra;
  }

  struct RunOutcome {
    StatusOr<CoordinatorResult> result = Status::Internal("not run");
    std::vector<Status> clients;
    std::vector<nlohmann::json> lines;  // metrics.jsonl
  };

  // Runs the config with its in-process clients; stop_after > 0 stops the run after that round.
  RunOutcome Run(const std::string& text, int clients, bool resume = false, int stop_after = 0) {
    RunOutcome out;
    auto parsed = Config::Parse(text);
    EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
    if (!parsed.ok()) return out;
    const Config config = *parsed;
    auto algorithm = AlgorithmOf(config);
    EXPECT_TRUE(algorithm.ok()) << algorithm.status().ToString();
    std::atomic<bool> stop{false};
    std::atomic<int> stop_run{0};
    std::vector<std::thread> threads;
    out.clients.assign(clients, Status::Ok());
    CoordinatorOptions options;
    options.resume = resume;
    options.overwrite = !resume;
    options.stop = &stop_run;
    options.progress = [&](const std::string& line) {
      if (stop_after > 0 && line.rfind("round " + std::to_string(stop_after) + "/", 0) == 0) {
        stop_run = 1;
      }
    };
    options.on_bound = [&](const std::string& endpoint) {
      for (int k = 0; k < clients; ++k) {
        threads.emplace_back([&, k, endpoint] {
          ClientOptions o;
          o.index = k;
          o.connect = endpoint;
          o.threads = 1;
          o.use_compute_slots = false;
          o.stop = &stop;
          out.clients[k] = RunClient(config, (*algorithm)->client, o).status();
        });
      }
      return Status::Ok();
    };
    out.result = RunCoordinator(config, (*algorithm)->server, options);
    stop = true;
    for (auto& t : threads) t.join();
    for (const Status& s : out.clients) EXPECT_TRUE(s.ok()) << s.ToString();
    if (out.result.ok()) {
      std::ifstream metrics(out.result->run_dir + "/metrics.jsonl");
      std::string line;
      while (std::getline(metrics, line)) out.lines.push_back(nlohmann::json::parse(line));
    }
    return out;
  }

  static std::vector<float> Params(const std::string& path) {
    auto model = LoadGpt(path);
    EXPECT_TRUE(model.ok()) << model.status().ToString();
    if (!model.ok()) return {};
    return std::vector<float>((*model)->params().begin(), (*model)->params().end());
  }
};

// The cloud in this process, greedy, counting every question by prompt.
CloudAnswer CountingCloud(std::shared_ptr<const GptWeights> weights,
                          std::map<std::string, int>* asked) {
  return [weights, asked](std::string_view prompt) -> StatusOr<std::string> {
    ++(*asked)[std::string(prompt)];
    std::vector<int32_t> tokens = {ByteTokenizer::kEndOfText};
    ByteTokenizer::EncodeAppend(prompt, &tokens);
    SamplingOptions greedy;
    greedy.temperature = 0.0f;
    Rng rng(0);
    return ParseCompletion(ByteTokenizer::Decode(DecodeLine(weights, tokens, 4, greedy, rng)))
        .answer;
  };
}

RouteGapgTrainTask SmallTask() {
  RouteGapgTrainTask t;
  t.levels = {1};
  t.seed = 4;
  t.max_tokens = 4;
  t.group_size = 4;
  t.prompts_per_step = 4;
  t.local_steps = 3;
  t.lr = 1e-2;
  t.budget = 1.0;
  t.rho = -1.0;
  t.trainable = "all";
  return t;
}

StatusOr<RouteGapgServerConfig> ReadServerConfig(
    const std::string& route_gapg,
    const std::string& rest = "[federation]\nclients = 2\n[serve]\nenabled = true\n") {
  auto config = Config::Parse(rest +
                              "[route-gapg]\ndevice_checkpoint = \"d\"\ncloud_checkpoint = \"c\"\n" +
                              route_gapg);
  if (!config.ok()) return config.status();
  return RouteGapgServerConfigFromConfig(*config);
}

void ExpectRefused(
    const std::string& route_gapg, const std::string& needle,
    const std::string& rest = "[federation]\nclients = 2\n[serve]\nenabled = true\n") {
  auto c = ReadServerConfig(route_gapg, rest);
  ASSERT_FALSE(c.ok()) << "accepted: " << route_gapg << rest;
  EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
}

TEST(RouteGapgConfigTest, ReadsItsSectionAndRefusesBadValues) {
  auto c = ReadServerConfig("client_budgets = [0.3, 1]\nsplit = \"operand\"\nfilter = false\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->client_budgets, (std::vector<double>{0.3, 1.0}));
  EXPECT_EQ(c->task.split, "operand");
  EXPECT_LT(c->task.rho, 0.0) << "filter = false turns the filter off";
  EXPECT_EQ(c->clients, 2);

  // One client alone on the second of two operand ranges.
  auto alone = ReadServerConfig("split = \"operand\"\noperand_parts = 2\nclient_parts = [1]\n",
                                "[federation]\nclients = 1\n[serve]\nenabled = true\n");
  ASSERT_TRUE(alone.ok()) << alone.status().ToString();
  EXPECT_EQ(alone->task.parts, 2);
  EXPECT_EQ(alone->PartOf(0), 1);
  ExpectRefused("client_parts = [2]\n", "route-gapg.client_parts");
  ExpectRefused("operand_parts = 2\n", "route-gapg.operand_parts");

  // The operator split makes one part per operator of the levels: level 2 has + and -.
  auto by_op = ReadServerConfig("levels = [2]\nsplit = \"operator\"\nclient_parts = [1]\n"
                                "task_data_seed = 12\ntask_data_examples_per_level = 300\n"
                                "eval_cap = \"ranked\"\n",
                                "[federation]\nclients = 1\n[serve]\nenabled = true\n");
  ASSERT_TRUE(by_op.ok()) << by_op.status().ToString();
  EXPECT_EQ(by_op->task.parts, 2);
  EXPECT_EQ(by_op->PartOf(0), 1);
  EXPECT_EQ(by_op->task.task_data_seed, 12u);
  EXPECT_EQ(by_op->task.task_data_examples_per_level, 300);
  EXPECT_EQ(by_op->eval_cap, "ranked");
  EXPECT_EQ(ReadServerConfig("")->eval_cap, "online") << "the default keeps the old scores";
  ExpectRefused("levels = [2]\nsplit = \"operator\"\noperand_parts = 2\n",
                "route-gapg.operand_parts");
  // Level 1 has one operator: a single part, which client_parts cannot name as part 1.
  ExpectRefused("levels = [1]\nsplit = \"operator\"\nclient_parts = [1]\n",
                "route-gapg.client_parts");
  ExpectRefused("eval_cap = \"sorted\"\n", "route-gapg.eval_cap");
  ExpectRefused("task_data_examples_per_level = -1\n", "route-gapg.task_data_examples_per_level");

  ExpectRefused("client_budgets = [0.3, 0]\n", "route-gapg.client_budgets");
  ExpectRefused("client_budgets = [1.5]\n", "route-gapg.client_budgets");
  ExpectRefused("client_budgets = []\n", "route-gapg.client_budgets");
  ExpectRefused("answer_correct = 0.5\nhandoff_correct = 0.5\n", "route-gapg.handoff_correct");
  ExpectRefused("answer_correct = 0.4\n", "route-gapg.answer_correct");
  ExpectRefused("split = \"digits\"\n", "route-gapg.split");
  ExpectRefused("levels = [9]\n", "route-gapg.levels");
  ExpectRefused("group_size = 1\n", "route-gapg.group_size");
  ExpectRefused("", "serve.enabled", "[federation]\nclients = 2\n[serve]\nenabled = false\n");
  // 200 operand ranges of one-digit first operands leave most clients without a prompt.
  ExpectRefused("split = \"operand\"\n", "client 1",
                "[federation]\nclients = 200\n[serve]\nenabled = true\n");
}

TEST(RouteGapgTaskTest, RoundTripsAndRefusesBadValues) {
  RouteGapgTrainTask t = SmallTask();
  t.levels = {1, 3};
  t.split = "operand";
  t.parts = 3;
  t.part = 2;
  t.client = 7;
  t.budget = 0.25;
  wire::Params p;
  t.Encode(&p);
  auto d = RouteGapgTrainTask::Decode(p);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->levels, t.levels);
  EXPECT_EQ(d->split, "operand");
  EXPECT_EQ(d->part, 2);
  EXPECT_EQ(d->client, 7);
  EXPECT_DOUBLE_EQ(d->budget, 0.25);
  EXPECT_LT(d->rho, 0.0);
  EXPECT_EQ(d->task_data_seed, 0u);
  EXPECT_EQ(d->task_data_examples_per_level, 0);

  RouteGapgTrainTask by_op = SmallTask();
  by_op.levels = {2};
  by_op.split = "operator";
  by_op.parts = 2;
  by_op.part = 1;
  by_op.task_data_seed = 12;
  by_op.task_data_examples_per_level = 20000;
  wire::Params op_params;
  by_op.Encode(&op_params);
  auto op = RouteGapgTrainTask::Decode(op_params);
  ASSERT_TRUE(op.ok()) << op.status().ToString();
  EXPECT_EQ(op->split, "operator");
  EXPECT_EQ(op->part, 1);
  EXPECT_EQ(op->PromptSettings().task_data_seed, 12u);
  EXPECT_EQ(op->PromptSettings().task_data_examples_per_level, 20000);
  for (auto [key, value] : std::vector<std::pair<std::string, wire::ParamValue>>{
           {"route.parts", int64_t{3}}, {"route.task_data_examples_per_level", int64_t{-1}}}) {
    wire::Params bad = op_params;
    bad[key] = value;
    if (key == "route.parts") bad["route.part"] = int64_t{0};
    EXPECT_FALSE(RouteGapgTrainTask::Decode(bad).ok()) << key;
  }
  for (auto [key, value] : std::vector<std::pair<std::string, wire::ParamValue>>{
           {"route.budget", 0.0}, {"route.budget", 1.5}, {"route.part", int64_t{3}},
           {"route.split", std::string("digits")}, {"route.levels", std::string("1,x")},
           {"route.handoff_correct", 1.0}, {"route.group_size", int64_t{1}}}) {
    wire::Params bad = p;
    bad[key] = value;
    EXPECT_FALSE(RouteGapgTrainTask::Decode(bad).ok()) << key;
  }
}

TEST(RouteGapgSplitTest, SharesPartitionThePrompts) {
  RouteConfig rc;
  rc.levels = {1, 2};
  rc.examples_per_level = 400;
  auto all = MakeRoutePrompts(rc);
  ASSERT_TRUE(all.ok());
  for (const std::string split : {"level", "operand"}) {
    std::set<std::string> seen;
    size_t total = 0;
    for (int k = 0; k < 2; ++k) {
      auto share = ClientRoutePrompts(*all, split, rc.levels, k, 2);
      ASSERT_TRUE(share.ok()) << share.status().ToString();
      for (const auto& e : share->train) {
        EXPECT_TRUE(seen.insert(e.prompt).second) << e.prompt << " in two shares";
        if (split == "level") {
          EXPECT_EQ(e.level, k + 1);
        } else if (e.level == 1) {
          EXPECT_EQ(e.prompt[0] >= '5', k == 1) << e.prompt;
        }
      }
      total += share->train.size();
    }
    EXPECT_EQ(total, all->train.size()) << split << ": the shares cover every training prompt";
  }
  EXPECT_FALSE(ClientRoutePrompts(*all, "digits", rc.levels, 0, 2).ok());
}

TEST(RouteGapgSplitTest, OperatorSplitPartitionsThePromptsByOperator) {
  EXPECT_EQ(RouteGapgOperators({2}), "+-");
  EXPECT_EQ(RouteGapgOperators({1, 4, 2}), "+*-");
  RouteConfig rc;
  rc.levels = {1, 2};
  rc.examples_per_level = 400;
  auto all = MakeRoutePrompts(rc);
  ASSERT_TRUE(all.ok());
  std::set<std::string> seen;
  size_t train = 0, test = 0;
  for (int k = 0; k < 2; ++k) {
    auto share = ClientRoutePrompts(*all, "operator", rc.levels, k, 2);
    ASSERT_TRUE(share.ok()) << share.status().ToString();
    const std::string mine = k == 0 ? "+" : "-", other = k == 0 ? "-" : "+";
    for (const auto* part : {&share->train, &share->test}) {
      for (const auto& e : *part) {
        EXPECT_TRUE(seen.insert(e.prompt).second) << e.prompt << " in two shares";
        EXPECT_NE(e.prompt.find(mine), std::string::npos) << e.prompt << " in part " << k;
        EXPECT_EQ(e.prompt.find(other), std::string::npos) << e.prompt << " in part " << k;
      }
    }
    if (k == 1) {
      for (const auto& e : share->train) EXPECT_EQ(e.level, 2) << "level 1 has no subtraction";
    }
    train += share->train.size();
    test += share->test.size();
  }
  EXPECT_EQ(train, all->train.size()) << "the parts cover every training prompt";
  EXPECT_EQ(test, all->test.size()) << "the parts cover every held-out prompt";
  // One part per operator of the levels, no more, no fewer.
  EXPECT_FALSE(ClientRoutePrompts(*all, "operator", rc.levels, 0, 3).ok());
  EXPECT_FALSE(ClientRoutePrompts(*all, "operator", {1}, 0, 2).ok());
  EXPECT_TRUE(ClientRoutePrompts(*all, "operator", {1}, 0, 1).ok());
}

// The ranked cap of a part's score, as `tandem route eval`'s route.cap = "ranked": exactly
// floor(budget * n) hand-offs to the highest marker probabilities, so budget 0 is the device
// alone and budget 1 the cloud alone; the online cap grants no more than its budget either.
TEST_F(RouteGapgTest, RankedScoreGrantsTheBudgetsShareToTheHighestScores) {
  RouteGapgTrainTask task = SmallTask();
  task.temperature = 0.3;
  auto all = MakeRoutePrompts(task.PromptSettings());
  ASSERT_TRUE(all.ok());
  auto device = LoadGpt(g_device_path);
  auto cloud = LoadGpt(g_model_path);
  ASSERT_TRUE(device.ok() && cloud.ok());
  const int64_t n = static_cast<int64_t>(all->test.size());
  ASSERT_GT(n, 10);
  auto ranked = ScoreRouteShare(**device, **cloud, *all, 0.3, "ranked", task);
  ASSERT_TRUE(ranked.ok()) << ranked.status().ToString();
  EXPECT_EQ(ranked->queries, n);
  EXPECT_EQ(ranked->handoffs, static_cast<int64_t>(std::floor(0.3 * n)));
  EXPECT_EQ(ranked->local_answered + ranked->handoffs, n);
  auto none = ScoreRouteShare(**device, **cloud, *all, 0.0, "ranked", task);
  auto every = ScoreRouteShare(**device, **cloud, *all, 1.0, "ranked", task);
  ASSERT_TRUE(none.ok() && every.ok());
  EXPECT_EQ(none->handoffs, 0);
  EXPECT_EQ(none->correct, none->device_correct);
  EXPECT_EQ(every->handoffs, n);
  EXPECT_EQ(every->correct, every->cloud_correct);
  // Recomputed here: the cloud answers the floor(0.3 n) prompts with the highest marker
  // probabilities, the device (marker banned) the others.
  std::vector<std::pair<double, size_t>> by_score;
  std::vector<bool> device_right, cloud_right;
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  for (size_t i = 0; i < all->test.size(); ++i) {
    const auto& e = all->test[i];
    by_score.push_back({-HandOffProbability((*device)->shared_weights(), e.prompt, 0.3), i});
    Rng rng(0);
    device_right.push_back(ExactMatch(
        FallbackAnswer((*device)->shared_weights(), e.prompt, task.max_tokens, greedy, rng),
        e.answer));
    cloud_right.push_back(ExactMatch(
        ParseCompletion(ByteTokenizer::Decode(DecodeLine((*cloud)->shared_weights(),
                                                         PromptTokens(e.prompt), task.max_tokens,
                                                         greedy, rng)))
            .answer,
        e.answer));
  }
  std::sort(by_score.begin(), by_score.end());
  int64_t expected = 0;
  for (size_t r = 0; r < by_score.size(); ++r) {
    const size_t i = by_score[r].second;
    expected += static_cast<int64_t>(r) < ranked->handoffs ? cloud_right[i] : device_right[i];
  }
  EXPECT_EQ(ranked->correct, expected);
  auto online = ScoreRouteShare(**device, **cloud, *all, 0.3, "online", task);
  ASSERT_TRUE(online.ok());
  EXPECT_LE(online->handoffs, static_cast<int64_t>(std::floor(0.3 * n)) + 1);
  EXPECT_FALSE(ScoreRouteShare(**device, **cloud, *all, 0.3, "sorted", task).ok());
}

// Budget 1, no filter, no warm start: the client's pass is the GAPG step of route/ exactly —
// GapgRolloutSource's groups, PolicyGradientTerm, one trainer — to the bit. And every prompt
// reaches the cloud at most once however many steps ask about it.
TEST_F(RouteGapgTest, LocalPassIsTheGapgStepAndAsksEachPromptOnce) {
  RouteGapgTrainTask task = SmallTask();
  task.local_steps = 6;
  auto all = MakeRoutePrompts(task.PromptSettings());
  ASSERT_TRUE(all.ok());
  auto cloud = LoadGpt(g_model_path);
  ASSERT_TRUE(cloud.ok());

  auto ours = LoadGpt(g_device_path);
  ASSERT_TRUE(ours.ok());
  std::map<std::string, int> asked;
  CloudOracle oracle(CountingCloud((*cloud)->shared_weights(), &asked));
  Rng rng = RouteGapgRng(task.seed, 1, 0);
  auto report = RunLocalGapg(**ours, all->train, task, oracle, rng);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_GT(asked.size(), 0u);
  for (const auto& [prompt, n] : asked) EXPECT_EQ(n, 1) << prompt << " asked " << n << " times";
  EXPECT_EQ(oracle.queries(), static_cast<int64_t>(asked.size()));

  auto direct = LoadGpt(g_device_path);
  ASSERT_TRUE(direct.ok());
  std::map<std::string, int> asked_direct;
  CloudOracle direct_oracle(CountingCloud((*cloud)->shared_weights(), &asked_direct));
  SamplingOptions sampling;
  sampling.temperature = static_cast<float>(task.temperature);
  PolicyGradientTerm term(
      GapgRolloutSource(all->train, task.prompts_per_step, task.group_size, task.max_tokens,
                        sampling, GapgRewards{task.answer_correct, task.handoff_correct},
                        &direct_oracle),
      PolicyGradientOptions{}, 1.0f, "gapg");
  LocalTrainer trainer(direct->get(), TrainerOptions{});
  Rng direct_rng = RouteGapgRng(task.seed, 1, 0);
  for (int64_t s = 0; s < task.local_steps; ++s) {
    ASSERT_TRUE(trainer.Step({&term}, static_cast<float>(task.lr), direct_rng).ok());
  }
  const auto a = (*ours)->params(), b = (*direct)->params();
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  const auto start = Params(g_device_path);
  double moved = 0.0;
  for (size_t i = 0; i < a.size(); ++i) moved += std::abs(a[i] - start[i]);
  EXPECT_GT(moved, 0.0) << "the steps moved the policy";
}

// A budget below 1 refuses hand-offs beyond it; only the marker's row moves with "marker".
TEST_F(RouteGapgTest, TheBudgetRefusesHandOffsAndMarkerTrainsOneRow) {
  RouteGapgTrainTask task = SmallTask();
  task.trainable = "marker";
  task.warm_start_steps = 30;
  task.warm_start_lr = 1e-2;
  task.warm_start_handoff_fraction = 0.5;
  task.budget = 0.1;
  auto all = MakeRoutePrompts(task.PromptSettings());
  ASSERT_TRUE(all.ok());
  auto cloud = LoadGpt(g_model_path);
  auto model = LoadGpt(g_device_path);
  ASSERT_TRUE(cloud.ok() && model.ok());
  std::map<std::string, int> asked;
  CloudOracle oracle(CountingCloud((*cloud)->shared_weights(), &asked));
  Rng rng = RouteGapgRng(task.seed, 1, 0);
  auto report = RunLocalGapg(**model, all->train, task, oracle, rng);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_GT(report->handoff_rate, 0.1) << "the device hands off";
  EXPECT_GT(asked.size(), 0u);
  for (const auto& [prompt, n] : asked) EXPECT_EQ(n, 1) << prompt << " asked " << n << " times";
  EXPECT_GT(report->refused_handoffs, 0);
  const double granted = report->handoff_rate * report->completions - report->refused_handoffs;
  EXPECT_LE(granted, 0.1 * report->completions + 1e-9);
  const ParamRange row = RoutePolicyRange(**model, "marker");
  EXPECT_EQ(row.end - row.begin, static_cast<size_t>((*model)->config().d_model));
  const auto start = Params(g_device_path);
  const auto now = (*model)->params();
  size_t outside = 0, inside = 0;
  for (size_t i = 0; i < now.size(); ++i) {
    const bool changed = now[i] != start[i];
    (i >= row.begin && i < row.end ? inside : outside) += changed;
  }
  EXPECT_EQ(outside, 0u);
  EXPECT_GT(inside, 0u);
}

// Two clients with different prompts (first operands 0-4 and 5-9), two rounds through the real
// runtimes: the policy changes, every round's line has the clients' figures, and each client's
// questions counted at the service are at most one per distinct training prompt of its own.
TEST_F(RouteGapgTest, TwoClientsChangeThePolicyAskingEachPromptOnce) {
  RunOutcome run = Run(ConfigText(2, 2,
                                  "split = \"operand\"\nclient_budgets = [0.3, 0.5]\n"
                                  "warm_start_steps = 20\nwarm_start_lr = 0.01\nlr = 0.01\n"),
                       2);
  ASSERT_TRUE(run.result.ok()) << run.result.status().ToString();
  for (const Status& s : run.clients) EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(run.result->rounds, 2u);
  EXPECT_EQ(run.result->aborted_rounds, 0u);
  const auto policy = Params(run.result->run_dir + "/checkpoints/model.safetensors");
  const auto start = Params(g_device_path);
  ASSERT_EQ(policy.size(), start.size());
  EXPECT_NE(std::memcmp(policy.data(), start.data(), policy.size() * sizeof(float)), 0);

  ASSERT_EQ(run.lines.size(), 3u);
  const auto& last = run.lines.back();
  for (const char* k : {"mean_reward", "handoff_rate", "cloud_queries", "policy_change",
                        "bytes_up.route-gapg.train", "bytes_down.route-gapg.train"}) {
    EXPECT_TRUE(last.contains(k)) << k;
  }
  EXPECT_GT(last["policy_change"].get<double>(), 0.0);
  // The cloud's copy in checkpoints/cloud.safetensors is what the service answered from.
  RouteGapgTrainTask settings;
  settings.levels = {1};
  settings.seed = 4;
  auto all = MakeRoutePrompts(settings.PromptSettings());
  ASSERT_TRUE(all.ok());
  for (int k = 0; k < 2; ++k) {
    auto share = ClientRoutePrompts(*all, "operand", {1}, k, 2);
    ASSERT_TRUE(share.ok());
    const std::string key = "serve.served.client-" + std::to_string(k) + ".serve";
    ASSERT_TRUE(last.contains(key)) << key;
    const double served = last[key].get<double>();
    EXPECT_GT(served, 0.0);
    EXPECT_LE(served, static_cast<double>(share->train.size()));
    // Every question the client's oracle counted is one request at the service, and no more.
    EXPECT_EQ(served, last["client" + std::to_string(k) + ".cloud_queries_total"].get<double>());
    EXPECT_TRUE(last.contains("eval.part" + std::to_string(k) + ".accuracy"));
  }
  // The last round's score on the union is `tandem route eval`'s on the run's policy.
  auto route = Config::Parse("seed = 4\n[route]\ndevice_checkpoint = \"" + g_device_path +
                             "\"\ncloud_checkpoint = \"" + g_model_path +
                             "\"\npolicy_checkpoint = \"" + run.result->run_dir +
                             "/checkpoints/model.safetensors\"\nlevels = [1]\nmax_tokens = 4\n"
                             "budget = 0.3\n");
  ASSERT_TRUE(route.ok()) << route.status().ToString();
  auto eval = RunRouteEval(*route);
  ASSERT_TRUE(eval.ok()) << eval.status().ToString();
  EXPECT_EQ(last["eval.union.queries"].get<double>(), static_cast<double>(eval->queries));
  EXPECT_DOUBLE_EQ(last["eval.union.accuracy"].get<double>(), eval->accuracy());
  EXPECT_DOUBLE_EQ(last["eval.union.call_ratio"].get<double>(), eval->call_ratio());
  EXPECT_DOUBLE_EQ(last["eval.union.local_accuracy"].get<double>(), eval->local_accuracy());
}

// Over tcp, where CURVE is on by default: each client's service session uses the client's own
// key and is counted at the service as "client-K.serve"; the round sessions are unaffected.
TEST_F(RouteGapgTest, RunsUnderCurveWithTheClientsOwnKeys) {
  const std::string keys = Path("keys");
  ASSERT_TRUE(wire::Keygen(keys, 2, /*overwrite=*/false).ok());
  std::string text = ConfigText(2, 1, "split = \"operand\"\nwarm_start_steps = 20\n"
                                      "warm_start_lr = 0.01\nlr = 0.01\n");
  const std::string ipc = "transport = \"ipc\"";
  ASSERT_NE(text.find(ipc), std::string::npos);
  text.replace(text.find(ipc), ipc.size(), "transport = \"tcp\"\nkeys_dir = \"" + keys + "\"");
  RunOutcome run = Run(text, 2);
  ASSERT_TRUE(run.result.ok()) << run.result.status().ToString();
  EXPECT_EQ(run.result->aborted_rounds, 0u);
  ASSERT_EQ(run.lines.size(), 2u);
  const auto& last = run.lines.back();
  EXPECT_GT(last["policy_change"].get<double>(), 0.0);
  for (int k = 0; k < 2; ++k) {
    const std::string key = "serve.served.client-" + std::to_string(k) + ".serve";
    ASSERT_TRUE(last.contains(key)) << key;
    EXPECT_GT(last[key].get<double>(), 0.0);
    EXPECT_EQ(last[key].get<double>(),
              last["client" + std::to_string(k) + ".cloud_queries_total"].get<double>());
  }
}

// One client, no privacy, one round: the coordinator's new policy is the client's local GAPG
// pass from the same seed on the same prompts, computed here without any runtime.
TEST_F(RouteGapgTest, OneClientUpdateIsTheLocalGapgStep) {
  RunOutcome run = Run(ConfigText(1, 1,
                                  "trainable = \"all\"\nfilter = false\nwarm_start_steps = 0\n"
                                  "client_budgets = [1.0]\nlr = 0.01\n"),
                       1);
  ASSERT_TRUE(run.result.ok()) << run.result.status().ToString();
  const auto federated = Params(run.result->run_dir + "/checkpoints/model.safetensors");

  RouteGapgTrainTask task = SmallTask();
  task.local_steps = 2;
  task.parts = 1;
  auto all = MakeRoutePrompts(task.PromptSettings());
  ASSERT_TRUE(all.ok());
  auto cloud = LoadGpt(g_model_path);
  auto model = LoadGpt(g_device_path);
  ASSERT_TRUE(cloud.ok() && model.ok());
  std::map<std::string, int> asked;
  CloudOracle oracle(CountingCloud((*cloud)->shared_weights(), &asked));
  Rng rng = RouteGapgRng(task.seed, 1, 0);
  ASSERT_TRUE(RunLocalGapg(**model, all->train, task, oracle, rng).ok());
  const auto local = (*model)->params();
  const auto start = Params(g_device_path);
  ASSERT_EQ(federated.size(), local.size());
  double moved = 0.0, worst = 0.0;
  for (size_t i = 0; i < local.size(); ++i) {
    moved += std::abs(local[i] - start[i]);
    // The coordinator adds the mean delta (trained − sent) back to what it sent: float rounding.
    worst = std::max(worst, static_cast<double>(std::abs(federated[i] - local[i])));
  }
  EXPECT_GT(moved, 0.0);
  EXPECT_LT(worst, 1e-6);
}

// A run stopped after round 1 and resumed ends with the same policy, bit for bit, as a run that
// never stopped (the resumed clients ask the service again: their cache is rebuilt).
TEST_F(RouteGapgTest, ResumesBitForBit) {
  const std::string extra = "split = \"operand\"\nwarm_start_steps = 10\nwarm_start_lr = 0.01\n";
  RunOutcome straight = Run(ConfigText(2, 2, extra), 2);
  ASSERT_TRUE(straight.result.ok()) << straight.result.status().ToString();
  const auto expected = Params(straight.result->run_dir + "/checkpoints/model.safetensors");

  RunOutcome first = Run(ConfigText(2, 2, extra), 2, false, 1);
  ASSERT_FALSE(first.result.ok()) << "stopped after round 1";
  RunOutcome resumed = Run(ConfigText(2, 2, extra), 2, true);
  ASSERT_TRUE(resumed.result.ok()) << resumed.result.status().ToString();
  const auto got = Params(resumed.result->run_dir + "/checkpoints/model.safetensors");
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0);
}

// The privacy pipeline wraps it like any algorithm: a run under secure aggregation completes,
// runs the masking steps, and moves the policy.
TEST_F(RouteGapgTest, RunsUnderSecureAggregation) {
  RunOutcome run = Run(ConfigText(2, 1,
                                  "split = \"operand\"\nwarm_start_steps = 20\n"
                                  "warm_start_lr = 0.01\n"
                                  "[privacy.secagg]\nenabled = true\nthreshold = 2\ndropout_rate = 0.0\n"),
                       2);
  ASSERT_TRUE(run.result.ok()) << run.result.status().ToString();
  EXPECT_EQ(run.result->aborted_rounds, 0u);
  ASSERT_EQ(run.lines.size(), 2u);
  EXPECT_TRUE(run.lines.back().contains("bytes_up.secagg.mask"));
  EXPECT_GT(run.lines.back()["policy_change"].get<double>(), 0.0);
}

}  // namespace
}  // namespace tandem

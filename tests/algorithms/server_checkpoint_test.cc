// Every coordinator half in the registry resumes from its own checkpoint: after a round with
// made-up client results, its SaveState loaded into a freshly built half saves identically, and
// the two then send bit-identical next-round tasks and reach identical models from the same
// results. A state with a tensor of the wrong size, or a missing or foreign key, is refused and
// leaves the half as it was and usable. The same holds for the grouped form (two client
// architectures) of every weight-averaging algorithm, and for the privacy wrapper, whose state
// (accountant, adaptive clip norm) gives the same ε and the same next task.
#include <gtest/gtest.h>

#include <cmath>

#include "client/private_handler.h"
#include "coordinator/grouped_server.h"
#include "coordinator/private_server.h"
#include "tests/algorithms/halves_fixtures.h"

namespace tandem {
namespace {

using testing::Assign;
using testing::Copy;
using testing::Micro;
using testing::SameBits;

struct State {
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> metadata;
};

State Save(const ServerAlgorithm& server) {
  State s;
  server.SaveState(&s.tensors, &s.metadata);
  return s;
}

bool Same(const State& a, const State& b) {
  if (a.metadata != b.metadata || a.tensors.size() != b.tensors.size()) return false;
  for (const auto& [name, values] : a.tensors) {
    auto it = b.tensors.find(name);
    if (it == b.tensors.end() || !SameBits(values, it->second)) return false;
  }
  return true;
}

Status Load(ServerAlgorithm& server, const State& s) { return server.LoadState(s.tensors, s.metadata); }

bool SameTask(const TaskSpec& a, const TaskSpec& b) {
  return a.kind == b.kind && a.params == b.params && a.tensors == b.tensors &&
         a.members == b.members && a.contribution.has_value() == b.contribution.has_value() &&
         (!a.contribution || (a.contribution->tensor == b.contribution->tensor &&
                              a.contribution->length == b.contribution->length));
}

ClientInfo Client(int k, const ServerAlgorithm& server) {
  return ClientInfo{"client-" + std::to_string(k), k, server.RequiredCapabilities()};
}

// A made-up result of client k for a task whose contribution is `tensor` of `length` values:
// predictions ("probs", weight 1) are sharp distributions per row of the vocabulary; deltas are
// small, weighted by a made-up example count.
wire::TaskResult FakeResult(const std::string& tensor, size_t length, int k) {
  wire::TaskResult r;
  r.metrics = {{"train_loss", 1.5 + 0.1 * k}, {"kd_loss", 1.0}, {"kd_kl", 0.5}};
  if (tensor == "probs") {
    const int V = Micro().vocab;
    std::vector<float> p(length, 0.4f / (V - 1));
    for (size_t row = 0; row < length / V; ++row) p[row * V + (row * 7 + k) % V] = 0.6f;
    r.tensors = {wire::Tensor::Float32(tensor, {length}, p)};
    r.weight = 1.0;
  } else if (!tensor.empty()) {
    std::vector<float> d(length);
    for (size_t i = 0; i < length; ++i) d[i] = 1e-3f * std::sin(0.1f * i + k);
    r.tensors = {wire::Tensor::Float32(tensor, {length}, d)};
    r.weight = 10.0 + k;
  } else {
    r.weight = 1.0;
  }
  return r;
}

wire::TaskResult FakeResult(const TaskSpec& spec, int k) {
  return spec.contribution ? FakeResult(spec.contribution->tensor, spec.contribution->length, k)
                           : FakeResult("", 0, k);
}

// Round `round` of `server` with clients 0 and 1 answering every task with made-up results;
// returns the round's first task.
TaskSpec RunRound(ServerAlgorithm& server, uint64_t round) {
  const std::vector<ClientInfo> cohort = {Client(0, server), Client(1, server)};
  auto spec = server.BeginRound(round, cohort);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  if (!spec.ok()) return {};
  std::optional<TaskSpec> task = *spec;
  while (task) {
    TaskReport report;
    report.kind = task->kind;
    for (const ClientInfo& c : cohort) {
      Status s = server.OnResult(c, FakeResult(*task, c.index));
      EXPECT_TRUE(s.ok()) << s.ToString();
      report.assigned.push_back(c.name);
      report.responded.push_back(c.name);
    }
    auto next = server.OnTaskClosed(report);
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    if (!next.ok()) return {};
    task = *next;
  }
  std::map<std::string, double> metrics;
  Status s = server.EndRound(round, &metrics);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return *spec;
}

// Every way a saved state can be broken: each tensor one value short or missing, each metadata
// entry missing or naming another model.
std::vector<std::pair<std::string, State>> Corruptions(const State& good) {
  std::vector<std::pair<std::string, State>> out;
  for (const auto& [name, values] : good.tensors) {
    State s = good;
    s.tensors.erase(name);
    out.push_back({"no tensor " + name, s});
    if (values.empty()) continue;
    s = good;
    s.tensors[name].pop_back();
    out.push_back({"a short tensor " + name, s});
  }
  for (const auto& [key, value] : good.metadata) {
    State s = good;
    s.metadata.erase(key);
    out.push_back({"no metadata " + key, s});
    s = good;
    s.metadata[key] = "d_model=48 n_layer=1 n_head=2 context=16 vocab=256";  // no model here
    out.push_back({"metadata " + key + " of another kind", s});
  }
  return out;
}

class ServerCheckpointTest : public testing::HalvesTest {};

// The three lookups every LoadState goes through: a missing entry is Corruption naming it, a
// foreign one FailedPrecondition naming both values, a tensor of another size Corruption.
TEST(SavedStateTest, LookupsNameWhatIsMissingOrForeign) {
  const std::map<std::string, std::string> metadata = {{"model", "slm-micro"}};
  const std::map<std::string, std::vector<float>> tensors = {{"model.params", {1.0f, 2.0f}}};
  ASSERT_TRUE(SavedValue(metadata, "model").ok());
  EXPECT_EQ(*SavedValue(metadata, "model"), "slm-micro");
  StatusOr<std::string> missing = SavedValue(metadata, "strategy");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(missing.status().message(), "checkpoint lacks strategy");

  EXPECT_TRUE(ExpectSavedValue(metadata, "model", "slm-micro", "model").ok());
  Status foreign = ExpectSavedValue(metadata, "model", "slm-tiny", "model");
  EXPECT_EQ(foreign.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(foreign.message(), "checkpoint holds model slm-micro, the config asks for slm-tiny");
  Status absent = ExpectSavedValue(metadata, "strategy", "fedavg", "strategy");
  EXPECT_EQ(absent.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(absent.message(), "checkpoint holds strategy ?, the config asks for fedavg");

  StatusOr<const std::vector<float>*> params = SavedTensor(tensors, "model.params", 2);
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(*params, &tensors.at("model.params"));
  for (const auto& [name, size] : std::vector<std::pair<std::string, size_t>>{
           {"model.params", 3}, {"llm.params", 2}}) {
    StatusOr<const std::vector<float>*> wrong = SavedTensor(tensors, name, size);
    ASSERT_FALSE(wrong.ok()) << name;
    EXPECT_EQ(wrong.status().code(), StatusCode::kCorruption);
    EXPECT_EQ(wrong.status().message(),
              "checkpoint lacks " + name + " of " + std::to_string(size) + " values");
  }
}

TEST_F(ServerCheckpointTest, EveryServerHalfResumesBitForBitFromItsState) {
  for (const Algorithm& algorithm : Algorithms()) {
    SCOPED_TRACE(algorithm.name);
    auto a = Server(algorithm.name);
    ASSERT_NE(a, nullptr);
    const State fresh = Save(*a);
    RunRound(*a, 1);
    const State saved = Save(*a);
    EXPECT_FALSE(Same(saved, fresh)) << "round 1 changed nothing the state holds";

    auto b = Server(algorithm.name);
    ASSERT_NE(b, nullptr);
    ASSERT_TRUE(Load(*b, saved).ok());
    EXPECT_TRUE(Same(Save(*b), saved)) << "a loaded state saves differently";

    // Round 2 from both: the same task, and after the same results the same state and models.
    const TaskSpec task_a = RunRound(*a, 2);
    const TaskSpec task_b = RunRound(*b, 2);
    EXPECT_TRUE(SameTask(task_a, task_b)) << "round 2's tasks differ";
    EXPECT_TRUE(Same(Save(*a), Save(*b))) << "round 2 ends in different states";
    const auto models_a = a->Models(), models_b = b->Models();
    ASSERT_EQ(models_a.size(), models_b.size());
    for (size_t m = 0; m < models_a.size(); ++m) {
      EXPECT_TRUE(SameBits(Copy(models_a[m].model->params()), Copy(models_b[m].model->params())))
          << models_a[m].name;
    }
  }
}

TEST_F(ServerCheckpointTest, ABrokenStateIsRefusedAndLeavesTheHalfAsItWas) {
  for (const Algorithm& algorithm : Algorithms()) {
    SCOPED_TRACE(algorithm.name);
    auto a = Server(algorithm.name);
    ASSERT_NE(a, nullptr);
    RunRound(*a, 1);
    const State good = Save(*a);
    auto c = Server(algorithm.name);
    auto reference = Server(algorithm.name);
    ASSERT_NE(c, nullptr);
    const State before = Save(*c);
    for (const auto& [what, broken] : Corruptions(good)) {
      EXPECT_FALSE(Load(*c, broken).ok()) << what << " was accepted";
      EXPECT_TRUE(Same(Save(*c), before)) << what << " changed the half";
    }
    // Still usable, and still the half it was: it runs round 1 as a fresh one does.
    EXPECT_TRUE(SameTask(RunRound(*c, 1), RunRound(*reference, 1)));
    EXPECT_TRUE(Same(Save(*c), Save(*reference)));
  }
}

// The coordinator's own optimisers (distill-up's and fedmkt's LLM, both directions of fedcollm)
// keep their AdamW state across rounds and in the checkpoint: three rounds in one go, and one
// round, a checkpoint, a fresh half loading it and rounds 2 and 3, end in the same bits. The step
// count covers every server step so far, and a half whose optimiser is reset after round 1 (what
// restarting AdamW every round did) ends elsewhere: the kept state is what makes the difference.
TEST_F(ServerCheckpointTest, ServerOptimisersCarryOnAcrossRoundsAndThroughAResume) {
  const int server_steps = 2;  // [distill-up], [fedmkt], [fedcollm] server_steps in the fixture
  for (const std::string name : {"distill-up", "fedmkt", "fedcollm"}) {
    SCOPED_TRACE(name);
    auto whole = Server(name);
    ASSERT_NE(whole, nullptr);
    RunRound(*whole, 1);
    const State after_one = Save(*whole);  // what a run stopped after round 1 left
    RunRound(*whole, 2);
    RunRound(*whole, 3);
    State end = Save(*whole);
    EXPECT_EQ(end.metadata["llm_optimizer.adam_step"], std::to_string(3 * server_steps));
    if (name == "fedcollm") {
      EXPECT_EQ(end.metadata["slm_optimizer.adam_step"], std::to_string(3 * server_steps));
    }

    auto resumed = Server(name);
    ASSERT_TRUE(Load(*resumed, after_one).ok());
    RunRound(*resumed, 2);
    RunRound(*resumed, 3);
    EXPECT_TRUE(Same(Save(*resumed), end)) << "the resumed run ends in another state";
    const auto models_whole = whole->Models(), models_resumed = resumed->Models();
    ASSERT_EQ(models_whole.size(), models_resumed.size());
    for (size_t m = 0; m < models_whole.size(); ++m) {
      EXPECT_TRUE(SameBits(Copy(models_whole[m].model->params()),
                           Copy(models_resumed[m].model->params())))
          << models_whole[m].name;
    }

    State reset = after_one;
    for (auto& [key, values] : reset.tensors) {
      if (key.find("_optimizer.adam_") != std::string::npos) {
        std::fill(values.begin(), values.end(), 0.0f);
      }
    }
    for (auto& [key, value] : reset.metadata) {
      if (key.find("_optimizer.adam_step") != std::string::npos) value = "0";
    }
    auto restarted = Server(name);
    ASSERT_TRUE(Load(*restarted, reset).ok());
    RunRound(*restarted, 2);
    RunRound(*restarted, 3);
    bool llm_differs = false;
    for (const RunModel& m : restarted->Models()) {
      for (const RunModel& w : whole->Models()) {
        if (m.name == w.name && m.name == "llm") {
          llm_differs = !SameBits(Copy(m.model->params()), Copy(w.model->params()));
        }
      }
    }
    EXPECT_TRUE(llm_differs) << "resetting the optimiser changed nothing";
  }
}

// ---- The grouped form: two client architectures, one half per group. ---------------------------

ModelConfig Nano() {
  ModelConfig c = Micro();
  c.d_model = 32;
  c.n_layer = 1;
  c.context = 32;
  return c;
}

class GroupedCheckpointTest : public testing::HalvesTest {
 protected:
  // `name`'s grouped half over clients of slm-micro (even K) and Nano (odd K), built as the
  // coordinator builds it: one SharedObjects for the run, a model every group trains saved once.
  std::unique_ptr<GroupedServer> Grouped(const std::string& name) {
    runs_.push_back(std::make_unique<SharedObjects>());
    SharedObjects* shared = runs_.back().get();
    const std::vector<ModelConfig> models = {Micro(), Nano()};
    std::vector<ServerGroup> groups;
    groups.push_back({"micro", Server(name, Micro(), "micro", models, shared)});
    groups.push_back({"nano", Server(name, Nano(), "nano", models, shared)});
    if (!groups[0].server || !groups[1].server) return nullptr;
    std::unique_ptr<GroupShared> trained;
    for (const auto& [model_name, model] : shared->trained()) {
      trained = std::make_unique<SharedModelState>(model_name, model, splits_.validation, 256);
    }
    auto server = GroupedServer::Create(std::move(groups), {0, 1}, std::move(trained));
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  // Round `round` with clients 0..3 (two of each group); returns each client's task.
  std::vector<wire::TaskAssign> GroupedRound(GroupedServer& server, uint64_t round) {
    std::vector<ClientInfo> cohort;
    for (int k = 0; k < 4; ++k) cohort.push_back(Client(k, server));
    auto spec = server.BeginRound(round, cohort);
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    if (!spec.ok()) return {};
    std::vector<wire::TaskAssign> tasks;
    std::optional<TaskSpec> task = *spec;
    while (task) {
      TaskReport report;
      report.kind = task->kind;
      for (const ClientInfo& c : cohort) {
        wire::TaskAssign assign = Assign(*task);
        server.Customize(c, &assign);
        // The contribution is a delta of what the group trains: its adapters, else its weights.
        const wire::Tensor* trained = FindTensor(assign.tensors, "lora");
        if (trained == nullptr) trained = FindTensor(assign.tensors, "params");
        EXPECT_NE(trained, nullptr);
        if (trained == nullptr) return {};
        Status s = server.OnResult(c, FakeResult("delta", trained->NumElements(), c.index));
        EXPECT_TRUE(s.ok()) << s.ToString();
        report.assigned.push_back(c.name);
        report.responded.push_back(c.name);
        if (tasks.size() < cohort.size()) tasks.push_back(std::move(assign));
      }
      auto next = server.OnTaskClosed(report);
      EXPECT_TRUE(next.ok()) << next.status().ToString();
      if (!next.ok()) return {};
      task = *next;
    }
    std::map<std::string, double> metrics;
    Status s = server.EndRound(round, &metrics);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return tasks;
  }

  std::vector<std::unique_ptr<SharedObjects>> runs_;
};

TEST_F(GroupedCheckpointTest, EveryWeightAveragingAlgorithmsGroupsResumeBitForBit) {
  int grouped = 0;
  for (const Algorithm& algorithm : Algorithms()) {
    auto traits = algorithm.server.traits(*config_);
    ASSERT_TRUE(traits.ok());
    if (!traits->averages_weights) continue;
    ++grouped;
    SCOPED_TRACE(algorithm.name);
    auto a = Grouped(algorithm.name);
    ASSERT_NE(a, nullptr);
    GroupedRound(*a, 1);
    const State saved = Save(*a);
    EXPECT_EQ(saved.metadata.at("groups"), "2");

    auto b = Grouped(algorithm.name);
    ASSERT_NE(b, nullptr);
    const State before = Save(*b);
    for (const auto& [what, broken] : Corruptions(saved)) {
      EXPECT_FALSE(Load(*b, broken).ok()) << what << " was accepted";
      EXPECT_TRUE(Same(Save(*b), before)) << what << " changed the grouped half";
    }
    ASSERT_TRUE(Load(*b, saved).ok());
    EXPECT_TRUE(Same(Save(*b), saved));
    const std::vector<wire::TaskAssign> tasks_a = GroupedRound(*a, 2);
    const std::vector<wire::TaskAssign> tasks_b = GroupedRound(*b, 2);
    ASSERT_EQ(tasks_a.size(), 4u);
    EXPECT_EQ(tasks_a, tasks_b) << "round 2 sends different tasks";
    EXPECT_NE(tasks_a[0].tensors, tasks_a[1].tensors) << "both groups got one model";
    EXPECT_TRUE(Same(Save(*a), Save(*b))) << "round 2 ends in different states";
  }
  EXPECT_EQ(grouped, 3) << "fedavg, distill-down and fedcollm average weights";
}

// ---- The privacy wrapper. ------------------------------------------------------------------------

// A client that uploads a fixed delta of the sent model's size, far outside the clip norm.
class BigDeltaClient : public TaskHandler {
 public:
  explicit BigDeltaClient(int k) : k_(k) {}
  std::vector<std::string> Capabilities() const override { return {"fedavg.train"}; }
  Status Run(uint64_t, const wire::TaskAssign& task, wire::TaskResult* result) override {
    const size_t n = FindTensor(task.tensors, "params")->NumElements();
    *result = FakeResult("delta", n, k_);
    for (auto& t : result->tensors) {
      std::vector<float> v = t.ToFloat32();
      for (float& x : v) x *= 100.0f;
      t = wire::Tensor::Float32("delta", {n}, v);
    }
    return Status::Ok();
  }

 private:
  int k_;
};

class PrivateCheckpointTest : public testing::HalvesTest {
 protected:
  std::unique_ptr<PrivateServer> Private() {
    privacy::PrivacyConfig p;
    p.dp.enabled = true;
    p.dp.noise_multiplier = 1.0;
    p.dp.clip_norm = 0.01;
    p.dp.delta = 1e-5;
    p.dp.sampling = "fixed";
    p.dp.adaptive_clipping = true;
    p.dp.target_quantile = 0.5;
    p.dp.clip_lr = 0.2;
    p.dp.bit_noise_multiplier = 5.0;
    PrivateServerOptions options{p, {4, 2, 2, 5}, 42, 5, privacy::SecureRng::Key{9, 8, 7}};
    auto server = PrivateServer::Create(Server("fedavg"), options);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  // A round of clients 0 and 1 through the clients' half of the pipeline; returns its task.
  TaskSpec PrivateRound(PrivateServer& server, uint64_t round) {
    std::vector<ClientInfo> cohort = {Client(0, server), Client(1, server)};
    auto spec = server.BeginRound(round, cohort);
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    if (!spec.ok()) return {};
    TaskReport report;
    for (const ClientInfo& c : cohort) {
      BigDeltaClient inner(c.index);
      PrivateTaskHandler client(&inner, privacy::SecureRng::Key{static_cast<uint8_t>(c.index)});
      wire::TaskResult result;
      Status s = client.Run(round, Assign(*spec), &result);
      EXPECT_TRUE(s.ok()) << s.ToString();
      s = server.OnResult(c, result);
      EXPECT_TRUE(s.ok()) << s.ToString();
      report.assigned.push_back(c.name);
      report.responded.push_back(c.name);
    }
    auto next = server.OnTaskClosed(report);
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    EXPECT_TRUE(next.ok() && !next->has_value());
    std::map<std::string, double> metrics;
    EXPECT_TRUE(server.EndRound(round, &metrics).ok());
    server.AddRoundMetrics(&metrics);
    return *spec;
  }
};

TEST_F(PrivateCheckpointTest, TheAccountantAndClipNormResumeToTheSameEpsilonAndNextTask) {
  auto a = Private();
  ASSERT_NE(a, nullptr);
  PrivateRound(*a, 1);
  PrivateRound(*a, 2);
  EXPECT_GT(a->epsilon(), 0.0);
  // Adaptive clipping moved the norm (with two clients the bit noise decides which way), so the
  // state holds a clip norm that is not the config's.
  EXPECT_NE(a->clip_norm(), 0.01);
  const State saved = Save(*a);

  auto b = Private();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->epsilon(), 0.0);
  ASSERT_TRUE(Load(*b, saved).ok());
  EXPECT_EQ(b->epsilon(), a->epsilon());
  EXPECT_EQ(b->clip_norm(), a->clip_norm());
  EXPECT_TRUE(Same(Save(*b), saved));
  // The next task (the model, and the clip norm clients must clip to) is the same, and so is
  // the budget check before it.
  std::vector<ClientInfo> cohort = {Client(0, *a), Client(1, *a)};
  auto next_a = a->BeginRound(3, cohort);
  auto next_b = b->BeginRound(3, cohort);
  ASSERT_TRUE(next_a.ok() && next_b.ok());
  EXPECT_TRUE(SameTask(*next_a, *next_b));
  EXPECT_EQ(std::get<double>(next_b->params.at("privacy.clip_norm")), a->clip_norm());
  EXPECT_EQ(a->StopBeforeRound(3), b->StopBeforeRound(3));
}

TEST_F(PrivateCheckpointTest, ABrokenPrivacyStateIsRefusedAndChangesNothing) {
  auto a = Private();
  ASSERT_NE(a, nullptr);
  PrivateRound(*a, 1);
  const State good = Save(*a);
  auto c = Private();
  ASSERT_NE(c, nullptr);
  const State before = Save(*c);
  std::vector<std::pair<std::string, State>> broken = Corruptions(good);
  for (const char* value : {"", "garbage", "-1", "nan", "0"}) {
    State s = good;
    s.metadata["privacy.clip_norm"] = value;
    broken.push_back({std::string("a clip norm of '") + value + "'", s});
  }
  // (An empty accountant is a run's state before its first round, not a broken one.)
  for (const char* value : {"garbage", "-1", "nan"}) {
    State s = good;
    s.metadata["privacy.accountant"] = value;
    broken.push_back({std::string("an accountant of '") + value + "'", s});
  }
  for (const auto& [what, s] : broken) {
    EXPECT_FALSE(Load(*c, s).ok()) << what << " was accepted";
    EXPECT_TRUE(Same(Save(*c), before)) << what << " changed the state";
    EXPECT_EQ(c->epsilon(), 0.0) << what;
    EXPECT_EQ(c->clip_norm(), 0.01) << what;
  }
  PrivateRound(*c, 1);
  EXPECT_EQ(c->epsilon(), a->epsilon()) << "the refused loads left the half unusable";
}

}  // namespace
}  // namespace tandem

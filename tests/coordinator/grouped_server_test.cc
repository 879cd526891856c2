// Architecture groups (coordinator/grouped_server.h) driven in process with fake results: each
// group's model moves by exactly its own members' mean delta, whatever the other group sends; each
// client is sent its own group's model; a group nobody answered for keeps its model; a result of
// the wrong shape, or from a client in no group, changes nothing; the state round-trips bit for
// bit and refuses another group count. distill-down's groups get the same teacher targets, and
// fedcollm's groups share one LLM, saved and evaluated once.
#include "coordinator/grouped_server.h"

#include <gtest/gtest.h>

#include <cmath>

#include "algorithms/distill_down/server.h"
#include "algorithms/fedavg/server.h"
#include "algorithms/fedcollm/server.h"
#include "tests/coordinator/distill_fixtures.h"

namespace tandem {
namespace {

using testing::Corpus;
using testing::Micro;

// Two architectures: slm-micro, and a narrower, shallower one with half its context.
ModelConfig Nano() {
  ModelConfig c = Micro();
  c.d_model = 32;
  c.n_layer = 1;
  c.context = 32;
  return c;
}

std::unique_ptr<FedAvgServer> FedAvg(const ModelConfig& config, uint64_t seed) {
  auto model = std::make_unique<Gpt>(config);
  model->InitWeights(seed);
  auto strategy = MakeStrategy(StrategyConfig{});
  EXPECT_TRUE(strategy.ok());
  FedAvgServerConfig fc;
  fc.eval_tokens = 128;
  return std::make_unique<FedAvgServer>(fc, std::move(model), std::move(*strategy),
                                        Corpus("val", 2));
}

// Group 0 "micro" holds clients 0, 2, ...; group 1 "nano" clients 1, 3, ....
std::unique_ptr<GroupedServer> TwoGroups(uint64_t seed = 1, FedAvgServer** micro = nullptr,
                                         FedAvgServer** nano = nullptr) {
  auto a = FedAvg(Micro(), seed);
  auto b = FedAvg(Nano(), seed + 1);
  if (micro) *micro = a.get();
  if (nano) *nano = b.get();
  std::vector<ServerGroup> groups;
  groups.push_back({"micro", std::move(a)});
  groups.push_back({"nano", std::move(b)});
  auto s = GroupedServer::Create(std::move(groups), {0, 1});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

ClientInfo Client(int k) {
  return ClientInfo{"client-" + std::to_string(k), k, {"fedavg.train"}};
}

std::vector<ClientInfo> Cohort(int n) {
  std::vector<ClientInfo> out;
  for (int k = 0; k < n; ++k) out.push_back(Client(k));
  return out;
}

wire::TaskResult Result(size_t n, float value, double weight) {
  std::vector<float> delta(n, value);
  return wire::TaskResult{{wire::Tensor::Float32("delta", {n}, delta)}, weight,
                          {{"train_loss", 2.0}}};
}

std::vector<float> Copy(std::span<const float> v) { return {v.begin(), v.end()}; }

TaskReport Report(const std::vector<std::string>& assigned,
                  const std::vector<std::string>& responded) {
  TaskReport r;
  r.task_id = 1;
  r.kind = "fedavg.train";
  r.assigned = assigned;
  r.responded = responded;
  return r;
}

const wire::Tensor* Find(const std::vector<wire::Tensor>& tensors, const std::string& name) {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

TEST(GroupClientModelsTest, DistinctArchitecturesInOrderOfFirstAppearance) {
  const ClientGroups g = GroupClientModels({Nano(), Micro(), Nano(), Nano()});
  EXPECT_EQ(g.group_of_position, (std::vector<int>{0, 1, 0, 0}));
  EXPECT_EQ(g.first_position, (std::vector<size_t>{0, 1}));
}

TEST(GroupedServerTest, RefusesGroupsThatDoNotFit) {
  auto same_names = [] {
    std::vector<ServerGroup> g;
    g.push_back({"x", FedAvg(Micro(), 1)});
    g.push_back({"x", FedAvg(Nano(), 1)});
    return g;
  };
  // Each refused for its own reason, named in the message.
  auto expect_refused = [](const auto& created, const std::string& why) {
    ASSERT_FALSE(created.ok()) << why;
    EXPECT_EQ(created.status().code(), StatusCode::kInvalidArgument) << why;
    EXPECT_NE(created.status().message().find(why), std::string::npos)
        << created.status().ToString();
  };
  expect_refused(GroupedServer::Create(same_names(), {0, 1}), "must be distinct");
  std::vector<ServerGroup> one;
  one.push_back({"micro", FedAvg(Micro(), 1)});
  expect_refused(GroupedServer::Create(std::move(one), {0, 1}), "list position in group 1 of 1");
  std::vector<ServerGroup> unused;
  unused.push_back({"micro", FedAvg(Micro(), 1)});
  unused.push_back({"nano", FedAvg(Nano(), 1)});
  expect_refused(GroupedServer::Create(std::move(unused), {0, 0}), "group nano has no clients");
  // Groups that would ask clients for different tasks are not one algorithm.
  auto model = std::make_unique<Gpt>(Nano());
  FedAvgServerConfig eval;
  eval.client_eval = true;
  auto strategy = MakeStrategy(StrategyConfig{});
  ASSERT_TRUE(strategy.ok());
  std::vector<ServerGroup> mixed;
  mixed.push_back({"micro", FedAvg(Micro(), 1)});
  mixed.push_back({"nano", std::make_unique<FedAvgServer>(eval, std::move(model),
                                                         std::move(*strategy),
                                                         std::vector<Record>{})});
  expect_refused(GroupedServer::Create(std::move(mixed), {0, 1}),
                 "groups micro and nano ask clients for different tasks");
}

TEST(GroupedServerTest, EachGroupAveragesOnlyItsOwnMembers) {
  FedAvgServer *micro = nullptr, *nano = nullptr;
  auto server = TwoGroups(1, &micro, &nano);
  const size_t n0 = micro->model().params().size(), n1 = nano->model().params().size();
  ASSERT_NE(n0, n1);
  const auto before0 = Copy(micro->model().params());
  const auto before1 = Copy(nano->model().params());

  std::vector<ClientInfo> cohort = Cohort(4);
  cohort.push_back(ClientInfo{"stranger", -1, {"fedavg.train"}});
  auto spec = server->BeginRound(1, cohort);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, "fedavg.train");
  EXPECT_TRUE(spec->tensors.empty()) << "the model goes in each member's own copy";
  EXPECT_FALSE(spec->contribution.has_value());
  ASSERT_TRUE(spec->members.has_value());
  EXPECT_EQ(*spec->members,
            (std::vector<std::string>{"client-0", "client-2", "client-1", "client-3"}))
      << "a client in no group is left out";

  // Each client is sent its own group's model.
  ASSERT_TRUE(server->CustomizesTasks());
  for (int k = 0; k < 4; ++k) {
    wire::TaskAssign assign{spec->kind, spec->params, spec->tensors, 0};
    server->Customize(Client(k), &assign);
    const Gpt& own = (k % 2 == 0 ? micro : nano)->model();
    EXPECT_EQ(std::get<std::string>(assign.params.at("model")), own.config().ToString()) << k;
    const wire::Tensor* params = Find(assign.tensors, "params");
    ASSERT_NE(params, nullptr);
    EXPECT_EQ(params->ToFloat32(), Copy(own.params())) << k;
  }

  // Wrong shapes (the other group's size) and strangers are rejected and change nothing.
  EXPECT_FALSE(server->OnResult(Client(1), Result(n0, 9.0f, 1.0)).ok());
  EXPECT_FALSE(server->OnResult(Client(0), Result(n1, 9.0f, 1.0)).ok());
  EXPECT_FALSE(server->OnResult(cohort.back(), Result(n0, 9.0f, 1.0)).ok());
  // micro: (1·0.1 + 3·0.5) / 4 = 0.4; nano: (1·(−0.2) + 1·0.4) / 2 = 0.1.
  ASSERT_TRUE(server->OnResult(Client(0), Result(n0, 0.1f, 1.0)).ok());
  ASSERT_TRUE(server->OnResult(Client(1), Result(n1, -0.2f, 1.0)).ok());
  ASSERT_TRUE(server->OnResult(Client(2), Result(n0, 0.5f, 3.0)).ok());
  ASSERT_TRUE(server->OnResult(Client(3), Result(n1, 0.4f, 1.0)).ok());
  auto next = server->OnTaskClosed(Report({"client-0", "client-1", "client-2", "client-3"},
                                          {"client-0", "client-1", "client-2", "client-3"}));
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_FALSE(next->has_value());
  const auto after0 = micro->model().params();
  const auto after1 = nano->model().params();
  for (size_t i = 0; i < n0; i += 101) EXPECT_NEAR(after0[i], before0[i] + 0.4f, 1e-5f) << i;
  for (size_t i = 0; i < n1; i += 37) EXPECT_NEAR(after1[i], before1[i] + 0.1f, 1e-5f) << i;

  std::map<std::string, double> m;
  ASSERT_TRUE(server->EndRound(1, &m).ok());
  ASSERT_TRUE(m.count("val_loss.micro") && m.count("val_loss.nano"));
  EXPECT_DOUBLE_EQ(m.at("val_loss"), (m.at("val_loss.micro") + m.at("val_loss.nano")) / 2);
  EXPECT_NEAR(m.at("val_ppl"), std::exp(m.at("val_loss")), 1e-9 * m.at("val_ppl"));
  EXPECT_DOUBLE_EQ(m.at("train_loss.nano"), 2.0);
  EXPECT_EQ(m.at("results.micro"), 2);
  EXPECT_EQ(m.at("cohort.nano"), 2);
}

TEST(GroupedServerTest, AGroupWithoutResultsKeepsItsModel) {
  FedAvgServer *micro = nullptr, *nano = nullptr;
  auto server = TwoGroups(1, &micro, &nano);
  const size_t n0 = micro->model().params().size();
  const auto before0 = Copy(micro->model().params());
  const auto before1 = Copy(nano->model().params());
  ASSERT_TRUE(server->BeginRound(1, Cohort(4)).ok());
  ASSERT_TRUE(server->OnResult(Client(2), Result(n0, 0.25f, 1.0)).ok());
  auto next = server->OnTaskClosed(
      Report({"client-0", "client-1", "client-2", "client-3"}, {"client-2"}));
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_FALSE(next->has_value());
  EXPECT_EQ(Copy(nano->model().params()), before1);
  EXPECT_NEAR(micro->model().params()[7], before0[7] + 0.25f, 1e-6f);
  std::map<std::string, double> m;
  ASSERT_TRUE(server->EndRound(1, &m).ok());
  EXPECT_TRUE(m.count("val_loss.micro"));
  EXPECT_FALSE(m.count("val_loss.nano"));
  EXPECT_DOUBLE_EQ(m.at("val_loss"), m.at("val_loss.micro"));
  EXPECT_EQ(m.at("results.nano"), 0);

  // A task nobody answered at all is an error (the engine then aborts the round).
  ASSERT_TRUE(server->BeginRound(2, Cohort(2)).ok());
  EXPECT_FALSE(server->OnTaskClosed(Report({"client-0", "client-1"}, {})).ok());
  server->AbortRound();
  EXPECT_EQ(Copy(nano->model().params()), before1);
}

TEST(GroupedServerTest, OnlyTheGroupsInTheCohortTakePart) {
  FedAvgServer *micro = nullptr, *nano = nullptr;
  auto server = TwoGroups(1, &micro, &nano);
  const size_t n1 = nano->model().params().size();
  const auto before0 = Copy(micro->model().params());
  auto spec = server->BeginRound(1, {Client(3)});
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(*spec->members, std::vector<std::string>{"client-3"});
  EXPECT_FALSE(server->OnResult(Client(0), Result(micro->model().params().size(), 1.f, 1)).ok())
      << "a result for a group with no task";
  ASSERT_TRUE(server->OnResult(Client(3), Result(n1, 0.5f, 1.0)).ok());
  ASSERT_TRUE(server->OnTaskClosed(Report({"client-3"}, {"client-3"})).ok());
  std::map<std::string, double> m;
  ASSERT_TRUE(server->EndRound(1, &m).ok());
  EXPECT_FALSE(m.count("cohort.micro"));
  EXPECT_EQ(Copy(micro->model().params()), before0);

  // A cohort of clients in no group: a task for nobody, which the engine aborts at once.
  auto nobody = server->BeginRound(2, {ClientInfo{"stranger", -1, {"fedavg.train"}}});
  ASSERT_TRUE(nobody.ok()) << nobody.status().ToString();
  ASSERT_TRUE(nobody->members.has_value());
  EXPECT_TRUE(nobody->members->empty());
  server->AbortRound();
}

TEST(GroupedServerTest, StateRoundTripsAndRefusesAnotherGroupCount) {
  FedAvgServer* micro = nullptr;
  auto a = TwoGroups(1, &micro);
  ASSERT_TRUE(a->BeginRound(1, Cohort(2)).ok());
  ASSERT_TRUE(a->OnResult(Client(0), Result(micro->model().params().size(), 0.3f, 1.0)).ok());
  ASSERT_TRUE(a->OnTaskClosed(Report({"client-0", "client-1"}, {"client-0"})).ok());
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> meta;
  a->SaveState(&tensors, &meta);
  EXPECT_TRUE(tensors.count("group0/model.params") && tensors.count("group1/model.params"));
  EXPECT_EQ(meta.at("groups"), "2");

  FedAvgServer *b_micro = nullptr, *b_nano = nullptr;
  auto b = TwoGroups(7, &b_micro, &b_nano);
  ASSERT_TRUE(b->LoadState(tensors, meta).ok());
  std::map<std::string, std::vector<float>> again;
  std::map<std::string, std::string> again_meta;
  b->SaveState(&again, &again_meta);
  EXPECT_EQ(again, tensors) << "not bit-identical";
  EXPECT_EQ(again_meta, meta);

  // One group, or the same count in another order: refused, nothing loaded.
  std::vector<ServerGroup> one;
  auto alone = FedAvg(Micro(), 5);
  FedAvgServer* alone_raw = alone.get();
  const auto fresh = Copy(alone->model().params());
  one.push_back({"micro", std::move(alone)});
  auto single = GroupedServer::Create(std::move(one), {0});
  ASSERT_TRUE(single.ok());
  Status s = (*single)->LoadState(tensors, meta);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("groups"), std::string::npos) << s.message();
  EXPECT_EQ(Copy(alone_raw->model().params()), fresh);
  auto swapped = meta;
  swapped["group_names"] = "nano,micro";
  EXPECT_FALSE(b->LoadState(tensors, swapped).ok());

  // A checkpoint whose second group does not fit leaves the first group as it was too.
  auto c = TwoGroups(9, &b_micro, &b_nano);
  const auto c_micro = Copy(b_micro->model().params());
  auto broken = tensors;
  broken["group1/model.params"].pop_back();
  EXPECT_FALSE(c->LoadState(broken, meta).ok());
  EXPECT_EQ(Copy(b_micro->model().params()), c_micro);
}

TEST(GroupedServerTest, PrivacyAggregatesAreRefused) {
  auto server = TwoGroups();
  ASSERT_TRUE(server->BeginRound(1, Cohort(2)).ok());
  const Status refused = server->OnAggregate(Aggregate{{1.0f}, 1, 1.0});
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("federation.client_models"), std::string::npos)
      << refused.ToString();
}

DistillDownConfig Distill() {
  DistillDownConfig c;
  c.teacher = "unused";
  c.top_k = 4;
  c.windows = 3;
  return c;
}

TEST(GroupedServerTest, DistillDownGroupsShareOneTeachersTargets) {
  auto teacher_model = std::make_unique<Gpt>(Micro());
  teacher_model->InitWeights(9);
  auto teacher = std::make_shared<SharedTeacher>(std::move(teacher_model), Nano().context);
  const std::vector<Record> pub = Corpus("public", 20);
  std::vector<ServerGroup> groups;
  for (const auto& [name, config] : {std::pair{"micro", Micro()}, std::pair{"nano", Nano()}}) {
    auto s = DistillDownServer::Create(Distill(), FedAvg(config, 1), teacher, pub, 17);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    groups.push_back({name, std::move(s).value()});
  }
  auto server = GroupedServer::Create(std::move(groups), {0, 1});
  ASSERT_TRUE(server.ok());
  auto spec = (*server)->BeginRound(1, Cohort(2));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, "distill.train");
  std::vector<wire::TaskAssign> sent(2);
  for (int k = 0; k < 2; ++k) {
    sent[k] = wire::TaskAssign{spec->kind, spec->params, spec->tensors, 0};
    (*server)->Customize(Client(k), &sent[k]);
  }
  for (const char* name : {"kd.windows", "kd.topk_words", "kd.topk_values"}) {
    ASSERT_NE(Find(sent[0].tensors, name), nullptr) << name;
    EXPECT_EQ(*Find(sent[0].tensors, name), *Find(sent[1].tensors, name)) << name;
  }
  // The longer-context group is told the windows' length; the other's own context is it.
  EXPECT_EQ(std::get<int64_t>(sent[0].params.at("kd.context")), Nano().context);
  EXPECT_FALSE(sent[1].params.count("kd.context"));
  // A window context longer than a group's own does not fit it.
  auto too_long = std::make_shared<SharedTeacher>(std::make_unique<Gpt>(Micro()), Micro().context);
  EXPECT_FALSE(DistillDownServer::Create(Distill(), FedAvg(Nano(), 1), too_long, pub, 17).ok());
}

TEST(GroupedServerTest, FedCoLLMGroupsShareOneLlmSavedAndEvaluatedOnce) {
  ModelConfig big = Micro();
  big.n_layer = 3;
  auto llm = std::make_shared<Gpt>(big);
  llm->InitWeights(2);
  FedCoLLMConfig c;
  c.lora.rank = 2;
  c.lora.alpha = 4.0f;
  c.windows = 2;
  c.server_steps = 2;
  c.server_batch = 2;
  c.server_lr = 1e-3;
  std::vector<ServerGroup> groups;
  std::vector<FedCoLLMServer*> raw;
  for (const auto& [name, config] : {std::pair{"micro", Micro()}, std::pair{"nano", Nano()}}) {
    auto slm = std::make_unique<Gpt>(config);
    slm->InitWeights(1);
    auto s = FedCoLLMServer::Create(c, LocalTrainConfig{}, StrategyConfig{}, std::move(slm), llm,
                                    Corpus("public", 20), Corpus("val", 2), 64, 3);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    (*s)->set_llm_shared(true);
    raw.push_back(s->get());
    groups.push_back({name, std::move(s).value()});
  }
  auto server = GroupedServer::Create(
      std::move(groups), {0, 1},
      std::make_unique<SharedModelState>("llm", llm, Corpus("val", 2), 64));
  ASSERT_TRUE(server.ok());
  const auto llm_before = Copy(llm->params());
  ASSERT_TRUE((*server)->BeginRound(1, Cohort(2)).ok());
  for (int k = 0; k < 2; ++k) {
    const size_t n = raw[k]->slm().lora_params().size();
    ASSERT_TRUE((*server)->OnResult(Client(k), Result(n, 0.01f, 1.0)).ok());
  }
  ASSERT_TRUE((*server)->OnTaskClosed(Report({"client-0", "client-1"}, {"client-0", "client-1"}))
                  .ok());
  EXPECT_NE(Copy(llm->params()), llm_before) << "the groups did not step the LLM";
  std::map<std::string, double> m;
  ASSERT_TRUE((*server)->EndRound(1, &m).ok());
  EXPECT_TRUE(m.count("llm_val_loss"));
  EXPECT_FALSE(m.count("llm_val_loss.micro"));
  EXPECT_TRUE(m.count("llm_kd_loss_after.nano"));

  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> meta;
  (*server)->SaveState(&tensors, &meta);
  EXPECT_TRUE(tensors.count("llm.params"));
  EXPECT_FALSE(tensors.count("group0/llm.params"));
  EXPECT_FALSE(tensors.count("group1/llm.params"));
  EXPECT_TRUE(tensors.count("group1/slm.lora"));
  const auto saved_llm = Copy(llm->params());
  llm->params()[0] += 1.0f;
  ASSERT_TRUE((*server)->LoadState(tensors, meta).ok());
  EXPECT_EQ(Copy(llm->params()), saved_llm);
}

}  // namespace
}  // namespace tandem

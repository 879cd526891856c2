// The round engine driven in-process: a fake clock, an outbox that records what was sent, and a
// summing algorithm. Covers cohorts, min_results with a deadline, stragglers, late, duplicate and
// foreign results, clients lost mid-task, aborted rounds, chained tasks and restored state.
#include "coordinator/engine.h"

#include "algorithms/fedavg/server.h"
#include "core/rng.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace tandem {
namespace {

struct Sent {
  std::string peer;
  wire::Message message;
};

class RecordingOutbox : public Outbox {
 public:
  Status Send(const std::string& peer, wire::Message message) override {
    if (unreachable.count(peer)) return Status::NotFound(peer + " is gone");
    sent.push_back({peer, std::move(message)});
    bytes_sent += kBytesPerMessage;
    return Status::Ok();
  }
  void AdvanceRound(uint64_t round) override { rounds.push_back(round); }
  uint64_t BytesSent() const override { return bytes_sent; }
  uint64_t BytesReceived() const override { return bytes_received; }
  static constexpr uint64_t kBytesPerMessage = 100;
  uint64_t bytes_sent = 0, bytes_received = 0;  // the test adds what "arrives"
  std::vector<Sent> sent;
  std::vector<uint64_t> rounds;
  std::set<std::string> unreachable;

  // The assignments of the newest task, by peer.
  std::map<std::string, wire::Message> LastAssignments() const {
    std::map<std::string, wire::Message> out;
    uint64_t newest = 0;
    for (const auto& s : sent) {
      if (std::holds_alternative<wire::TaskAssign>(s.message.body)) {
        newest = std::max(newest, s.message.envelope.task_id);
      }
    }
    for (const auto& s : sent) {
      if (std::holds_alternative<wire::TaskAssign>(s.message.body) &&
          s.message.envelope.task_id == newest) {
        out[s.peer] = s.message;
      }
    }
    return out;
  }
};

TaskSpec SumTask() {
  TaskSpec spec;
  spec.kind = "sum";
  return spec;
}

// Sums the "x" metric of accepted results; rejects negative ones. Optionally chains a second task.
class SumAlgorithm : public ServerAlgorithm {
 public:
  std::string name() const override { return "sum"; }
  std::vector<std::string> RequiredCapabilities() const override { return {"sum"}; }
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override {
    ++begun;
    pending = 0;
    std::string names;
    for (const auto& c : cohort) {
      cohorts.push_back(c.name);
      names += c.name + " ";
    }
    cohort_by_round[round] = names;  // a round done again after a restore overwrites its entry
    return SumTask();
  }
  Status OnResult(const ClientInfo& client, const wire::TaskResult& result) override {
    const double x = result.metrics.at("x");
    if (x < 0) return Status::InvalidArgument("negative");
    pending += x;
    return Status::Ok();
  }
  StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) override {
    reports.push_back(report);
    if (chain && !in_second_task) {
      in_second_task = true;
      TaskSpec second = SumTask();
      second.kind = "sum.check";
      return std::optional<TaskSpec>(second);
    }
    in_second_task = false;
    total += pending;
    return std::optional<TaskSpec>();
  }
  void AbortRound() override {
    ++aborted;
    pending = 0;
    in_second_task = false;
  }
  Status EndRound(uint64_t round, std::map<std::string, double>* metrics) override {
    (*metrics)["total"] = total;
    return Status::Ok();
  }
  void SaveState(std::map<std::string, std::vector<float>>*,
                 std::map<std::string, std::string>*) const override {}
  Status LoadState(const std::map<std::string, std::vector<float>>&,
                   const std::map<std::string, std::string>&) override {
    return Status::Ok();
  }

  bool chain = false;
  bool in_second_task = false;
  int begun = 0, aborted = 0;
  double pending = 0, total = 0;
  std::vector<std::string> cohorts;
  std::map<uint64_t, std::string> cohort_by_round;
  std::vector<TaskReport> reports;
};

class EngineTest : public ::testing::Test {
 protected:
  void Make(EngineConfig config, uint64_t seed = 7) {
    engine_ = std::make_unique<RoundEngine>(config, &algo_, &outbox_, [this] { return now_; },
                                            seed);
    engine_->SetRoundEndCallback([this](uint64_t round, const std::map<std::string, double>& m) {
      lines_.push_back(m);
      return Status::Ok();
    });
  }
  void Join(const std::string& name, std::vector<std::string> caps = {"sum"}) {
    engine_->OnJoined(name, caps);
    engine_->Tick();
  }
  // A result for the newest task assigned to `peer`, of `bytes` on the wire.
  void Answer(const std::string& peer, double x, int64_t task_offset = 0, uint64_t bytes = 0) {
    outbox_.bytes_received += bytes;
    auto assigned = outbox_.LastAssignments();
    ASSERT_TRUE(assigned.count(peer)) << peer << " has no task";
    wire::Message m;
    m.envelope = assigned[peer].envelope;
    m.envelope.task_id += task_offset;
    m.body = wire::TaskResult{{}, 1.0, {{"x", x}}};
    engine_->OnMessage(peer, m);
    engine_->Tick();
  }
  void Advance(double seconds) {
    now_ += seconds;
    engine_->Tick();
  }

  double now_ = 0.0;
  RecordingOutbox outbox_;
  SumAlgorithm algo_;
  std::unique_ptr<RoundEngine> engine_;
  std::vector<std::map<std::string, double>> lines_;
};

EngineConfig Config(int clients, int min_results, int64_t rounds = 3) {
  EngineConfig c;
  c.expected_clients = clients;
  c.min_results = min_results;
  c.rounds = rounds;
  c.round_deadline_s = 10;
  c.wait_for_clients_s = 30;
  return c;
}

TEST(ClientIndexFromName, ParsesOnlyCanonicalNames) {
  EXPECT_EQ(ClientIndexFromName("client-0"), 0);
  EXPECT_EQ(ClientIndexFromName("client-42"), 42);
  EXPECT_EQ(ClientIndexFromName("client-"), -1);
  EXPECT_EQ(ClientIndexFromName("client-07"), -1);
  EXPECT_EQ(ClientIndexFromName("client-3x"), -1);
  EXPECT_EQ(ClientIndexFromName("alice"), -1);
}

TEST_F(EngineTest, WaitsForAFullCohortThenRunsAllRounds) {
  Make(Config(3, 0));
  Join("client-0");
  Join("client-1");
  EXPECT_TRUE(outbox_.sent.empty()) << "a round started before the cohort was complete";
  Join("client-2");
  ASSERT_EQ(outbox_.LastAssignments().size(), 3u);
  for (int round = 1; round <= 3; ++round) {
    for (const auto& peer : {"client-0", "client-1", "client-2"}) Answer(peer, round);
  }
  EXPECT_TRUE(engine_->done());
  EXPECT_TRUE(engine_->status().ok());
  ASSERT_EQ(lines_.size(), 3u);
  EXPECT_DOUBLE_EQ(algo_.total, 3 * (1 + 2 + 3));
  EXPECT_EQ(lines_[2].at("results"), 3);
  EXPECT_EQ(lines_[2].at("dropped"), 0);
  EXPECT_EQ(outbox_.rounds, (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(EngineTest, WaitsForTheDeadlineOnceMinResultsAreIn) {
  Make(Config(3, 2, 1));
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  Answer("client-0", 1);
  Answer("client-1", 2);
  EXPECT_FALSE(engine_->done()) << "closed before the deadline with a member still working";
  Advance(9.9);
  EXPECT_FALSE(engine_->done());
  Advance(0.2);
  ASSERT_TRUE(engine_->done());
  EXPECT_DOUBLE_EQ(algo_.total, 3);
  EXPECT_EQ(lines_[0].at("results"), 2);
  EXPECT_EQ(lines_[0].at("dropped"), 1);
  // The straggler was told to stop.
  bool cancelled = false;
  for (const auto& s : outbox_.sent) {
    cancelled |= s.peer == "client-2" && std::holds_alternative<wire::TaskCancel>(s.message.body);
  }
  EXPECT_TRUE(cancelled);
}

TEST_F(EngineTest, StragglerDoesNotStallAndItsLateResultIsDropped) {
  Make(Config(3, 2, 2));
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  auto first = outbox_.LastAssignments();
  Answer("client-0", 1);
  Answer("client-1", 1);
  Advance(11);  // round 1 closes without client-2
  ASSERT_EQ(lines_.size(), 1u);
  // Round 2 is under way; client-2's round-1 result arrives now.
  wire::Message late;
  late.envelope = first["client-2"].envelope;
  late.body = wire::TaskResult{{}, 1.0, {{"x", 100.0}}};
  engine_->OnMessage("client-2", late);
  Answer("client-0", 1);
  Answer("client-1", 1);
  Answer("client-2", 1);
  ASSERT_TRUE(engine_->done());
  EXPECT_DOUBLE_EQ(algo_.total, 5) << "the late result was counted";
  EXPECT_EQ(lines_[1].at("late"), 1);
}

TEST_F(EngineTest, LostMemberCompletesWithSurvivorsWhenEnough) {
  Make(Config(3, 2, 1));
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  Answer("client-0", 1);
  engine_->OnLost("client-2");
  Answer("client-1", 1);
  // Every member is accounted for: no need to wait for the deadline.
  ASSERT_TRUE(engine_->done());
  EXPECT_EQ(lines_[0].at("dropped"), 1);
  EXPECT_EQ(algo_.aborted, 0);
}

TEST_F(EngineTest, TooFewResultsAbortsTheRoundAndKeepsTheModel) {
  Make(Config(3, 3, 2));
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  Answer("client-0", 5);
  engine_->OnLost("client-1");
  Advance(11);
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0].count("aborted"), 1u);
  EXPECT_EQ(algo_.aborted, 1);
  EXPECT_DOUBLE_EQ(algo_.total, 0);
  // client-1 comes back; round 2 runs with everyone.
  Join("client-1");
  for (auto p : {"client-0", "client-1", "client-2"}) Answer(p, 1);
  ASSERT_TRUE(engine_->done());
  EXPECT_DOUBLE_EQ(algo_.total, 3);
}

TEST_F(EngineTest, RejectedDuplicateAndForeignResultsChangeNothing) {
  Make(Config(3, 2, 1));
  for (auto p : {"client-0", "client-1"}) Join(p);
  Join("client-2");
  Answer("client-0", 1);
  Answer("client-0", 50);  // duplicate
  Answer("client-1", -1);  // rejected by the algorithm
  // A result for a task that never existed, and one from a stranger.
  Answer("client-2", 70, /*task_offset=*/99);
  wire::Message stranger;
  stranger.envelope = outbox_.LastAssignments()["client-2"].envelope;
  stranger.body = wire::TaskResult{{}, 1.0, {{"x", 80.0}}};
  engine_->OnMessage("mallory", stranger);
  Answer("client-2", 2);
  ASSERT_TRUE(engine_->done());
  EXPECT_DOUBLE_EQ(algo_.total, 3);
  EXPECT_EQ(lines_[0].at("results"), 2);
  EXPECT_GE(lines_[0].at("rejected"), 3);
}

TEST_F(EngineTest, GivesUpWhenTooFewClientsConnect) {
  EngineConfig c = Config(4, 2, 1);
  c.wait_for_clients_s = 5;
  Make(c);
  Join("client-0");
  Advance(6);
  ASSERT_TRUE(engine_->done());
  EXPECT_FALSE(engine_->status().ok());
  EXPECT_NE(engine_->status().message().find("wait_for_clients_s"), std::string::npos);
}

TEST_F(EngineTest, StartsWithMinResultsAfterWaiting) {
  EngineConfig c = Config(4, 2, 1);
  c.wait_for_clients_s = 5;
  Make(c);
  Join("client-0");
  Join("client-1");
  EXPECT_TRUE(outbox_.sent.empty());
  Advance(6);
  EXPECT_EQ(outbox_.LastAssignments().size(), 2u);
}

TEST_F(EngineTest, OnlyCapableClientsAreChosen) {
  Make(Config(2, 0, 1));
  Join("client-0", {"other"});
  Join("client-1");
  Join("client-2");
  auto assigned = outbox_.LastAssignments();
  EXPECT_EQ(assigned.count("client-0"), 0u);
  EXPECT_EQ(assigned.size(), 2u);
}

TEST_F(EngineTest, UnreachableMemberCountsAsDropped) {
  Make(Config(3, 2, 1));
  outbox_.unreachable.insert("client-2");
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  Answer("client-0", 1);
  Answer("client-1", 1);
  ASSERT_TRUE(engine_->done());
  EXPECT_EQ(lines_[0].at("dropped"), 1);
}

TEST_F(EngineTest, ChainedTasksGoToTheResponders) {
  algo_.chain = true;
  Make(Config(3, 2, 1));
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  Answer("client-0", 1);
  Answer("client-1", 1);
  engine_->OnLost("client-2");
  auto second = outbox_.LastAssignments();
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second.count("client-2"), 0u);
  Answer("client-0", 1);
  Answer("client-1", 1);
  ASSERT_TRUE(engine_->done());
  ASSERT_EQ(algo_.reports.size(), 2u);
  EXPECT_NE(algo_.reports[0].task_id, algo_.reports[1].task_id);
  EXPECT_DOUBLE_EQ(algo_.total, 4);
}

TEST_F(EngineTest, EachTaskKindsTrafficIsCountedApart) {
  algo_.chain = true;
  Make(Config(2, 2, 1));
  for (auto p : {"client-0", "client-1"}) Join(p);
  Answer("client-0", 1, 0, 50);
  Answer("client-1", 1, 0, 50);
  Answer("client-0", 1, 0, 30);
  Answer("client-1", 1, 0, 30);
  ASSERT_TRUE(engine_->done());
  ASSERT_EQ(lines_.size(), 1u);
  const auto& m = lines_[0];
  const double per = RecordingOutbox::kBytesPerMessage;
  EXPECT_DOUBLE_EQ(m.at("bytes_up.sum"), 100);
  EXPECT_DOUBLE_EQ(m.at("bytes_up.sum.check"), 60);
  EXPECT_DOUBLE_EQ(m.at("bytes_down.sum"), 2 * per);
  EXPECT_DOUBLE_EQ(m.at("bytes_down.sum.check"), 2 * per);
  EXPECT_DOUBLE_EQ(m.at("bytes_up"), 160);
  EXPECT_DOUBLE_EQ(m.at("bytes_down"), m.at("bytes_down.sum") + m.at("bytes_down.sum.check"));
}

// Every member of the newest task answers x = 1.
void AnswerAll(RoundEngine* engine, const RecordingOutbox& outbox) {
  for (auto& [peer, m] : outbox.LastAssignments()) {
    wire::Message res;
    res.envelope = m.envelope;
    res.body = wire::TaskResult{{}, 1.0, {{"x", 1.0}}};
    engine->OnMessage(peer, res);
  }
  engine->Tick();
}

// A task may name which of the previous task's members it goes to (secure aggregation's steps go
// to the previous step's survivors); names outside the previous members are ignored.
TEST_F(EngineTest, ATaskCanGoToChosenMembersOnly) {
  class Narrowing : public SumAlgorithm {
   public:
    StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) override {
      reports.push_back(report);
      if (reports.size() == 1) {
        TaskSpec next = SumTask();
        next.members = std::vector<std::string>{"client-1", "client-9"};
        return std::optional<TaskSpec>(next);
      }
      return std::optional<TaskSpec>();
    }
  } narrowing;
  EngineConfig config = Config(3, 1, 1);
  engine_ = std::make_unique<RoundEngine>(config, &narrowing, &outbox_, [this] { return now_; }, 7);
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  for (auto p : {"client-0", "client-1", "client-2"}) Answer(p, 1);
  auto second = outbox_.LastAssignments();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second.count("client-1"), 1u);
  Answer("client-1", 1);
  EXPECT_TRUE(engine_->done());
}

// Poisson sampling: the round waits for the whole population, then each client is in with
// probability cohort / clients; over many rounds the mean cohort is near the expectation and the
// sizes vary. A round whose sample is below min_results is aborted without sending anything.
TEST_F(EngineTest, PoissonSamplingDrawsEachClientIndependently) {
  EngineConfig config = Config(10, 1, 400);
  config.cohort = 3;  // q = 0.3
  config.poisson_sampling = true;
  Make(config, 11);
  for (int i = 0; i < 9; ++i) Join("client-" + std::to_string(i));
  EXPECT_EQ(algo_.begun, 0) << "started before the whole population was present";
  Join("client-9");
  std::map<size_t, int> sizes;
  size_t total = 0;
  int rounds = 0, empty = 0;
  while (!engine_->done() && rounds++ < 1000) AnswerAll(engine_.get(), outbox_);
  for (const auto& line : lines_) {
    const auto n = static_cast<size_t>(line.at("cohort"));
    ++sizes[n];
    total += n;
    if (n == 0) {
      ++empty;
      EXPECT_EQ(line.count("aborted"), 1u);
    }
  }
  ASSERT_EQ(lines_.size(), 400u);
  const double mean = static_cast<double>(total) / lines_.size();
  // Binomial(10, 0.3): mean 3, sd of the mean over 400 rounds 0.072; 5 sd is 0.36.
  EXPECT_NEAR(mean, 3.0, 0.36);
  EXPECT_GE(sizes.size(), 5u) << "cohort sizes do not vary";
  // P(empty) = 0.7^10 = 2.8 %: about 11 of 400.
  EXPECT_GT(empty, 0);
}

// Cohorts sampled from 6 clients, 2 per round: a restored engine continues the same sequence.
TEST(EngineStateTest, RestoredEngineSamplesTheSameCohorts) {
  // The checkpointed state is taken mid-round (the next round has started after the last
  // answers), as a coordinator killed mid-round leaves it: the restored engine redoes that round.
  auto run = [](int rounds_before_restore, std::map<uint64_t, std::string>* cohorts) {
    double now = 0;
    RecordingOutbox outbox;
    SumAlgorithm algo;
    EngineConfig c = Config(6, 0, 4);
    c.cohort = 2;
    EngineState state;
    {
      RoundEngine engine(c, &algo, &outbox, [&] { return now; }, 11);
      for (int i = 0; i < 6; ++i) engine.OnJoined("client-" + std::to_string(i), {"sum"});
      engine.Tick();
      for (int r = 0; r < rounds_before_restore; ++r) AnswerAll(&engine, outbox);
      state = engine.state();
    }
    RecordingOutbox outbox2;
    RoundEngine engine(c, &algo, &outbox2, [&] { return now; }, 11);
    engine.RestoreState(state);
    for (int i = 0; i < 6; ++i) engine.OnJoined("client-" + std::to_string(i), {"sum"});
    engine.Tick();
    while (!engine.done()) AnswerAll(&engine, outbox2);
    *cohorts = algo.cohort_by_round;
  };
  std::map<uint64_t, std::string> straight, restored;
  run(4, &straight);   // all four rounds before the "restore" (which then has nothing to do)
  run(2, &restored);   // two rounds, restore in round 3, the rest
  ASSERT_EQ(straight.size(), 4u);
  EXPECT_EQ(straight, restored);
  // Sampling really varies between rounds (the same pair every time would hide a bug).
  std::set<std::string> distinct;
  for (const auto& [round, names] : straight) distinct.insert(names);
  EXPECT_GT(distinct.size(), 1u);
}


// Regression: after one client's process died for good, every later round waited
// wait_for_clients_s for a full cohort again. Reported as exited, it is not waited for: the next
// round starts at once with the clients left, and a restarted process is expected again.
TEST_F(EngineTest, ExitedClientIsNotWaitedFor) {
  EngineConfig c = Config(3, 2, 3);
  c.wait_for_clients_s = 120;
  Make(c);
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  Answer("client-0", 1);
  Answer("client-1", 1);
  engine_->OnClientExited("client-2");  // mid-task: counted as dropped at once
  engine_->Tick();
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0].count("aborted"), 0u);
  EXPECT_EQ(lines_[0].at("results"), 2);
  EXPECT_EQ(lines_[0].at("dropped"), 1);
  EXPECT_EQ(engine_->expected_clients(), 2);
  // Round 2 went out without any wait, to the two clients left.
  auto second = outbox_.LastAssignments();
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second.count("client-2"), 0u);
  Answer("client-0", 1);
  Answer("client-1", 1);
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_EQ(lines_[1].at("cohort"), 2);
  // Round 3 went out at once too; a restarted process joins again and is expected again.
  Join("client-2");
  EXPECT_EQ(engine_->expected_clients(), 3);
  Answer("client-0", 1);
  Answer("client-1", 1);
  EXPECT_TRUE(engine_->done());
  EXPECT_EQ(now_, 0.0);  // no round waited on the clock
}

// A client that exits between rounds is not waited for either; a cohort count larger than the
// clients left shrinks to them.
TEST_F(EngineTest, ExitedClientBetweenRoundsShrinksTheCohort) {
  EngineConfig c = Config(3, 1, 2);
  c.cohort = 3;
  c.wait_for_clients_s = 120;
  Make(c);
  Join("client-0");
  Join("client-1");
  EXPECT_TRUE(outbox_.sent.empty());
  engine_->OnClientExited("client-2");  // never joined: its process ended at start-up
  engine_->Tick();
  ASSERT_EQ(outbox_.LastAssignments().size(), 2u);
}

// Exits that leave fewer clients than min_results end the run at once, saying why, instead of
// waiting wait_for_clients_s.
TEST_F(EngineTest, TooFewClientsLeftFailsAtOnce) {
  EngineConfig c = Config(3, 2, 2);
  c.wait_for_clients_s = 120;
  Make(c);
  Join("client-0");
  engine_->OnClientExited("client-1");
  engine_->OnClientExited("client-2");
  engine_->Tick();
  ASSERT_TRUE(engine_->done());
  EXPECT_FALSE(engine_->status().ok());
  EXPECT_NE(engine_->status().message().find("ended"), std::string::npos);
}

// Under Poisson sampling the round waits for the population less the exited clients, and each
// client left is still sampled with q = cohort / federation.clients (what the accountant is told):
// the mean cohort shrinks with the population, q does not grow.
TEST_F(EngineTest, PoissonSamplingKeepsQAfterAClientExits) {
  EngineConfig config = Config(10, 1, 400);
  config.cohort = 3;  // q = 0.3
  config.poisson_sampling = true;
  config.wait_for_clients_s = 120;
  Make(config, 11);
  for (int i = 0; i < 5; ++i) Join("client-" + std::to_string(i));
  for (int i = 5; i < 10; ++i) engine_->OnClientExited("client-" + std::to_string(i));
  engine_->Tick();
  EXPECT_GT(algo_.begun + static_cast<int>(lines_.size()), 0) << "waited for exited clients";
  int rounds = 0;
  size_t total = 0;
  while (!engine_->done() && rounds++ < 1000) AnswerAll(engine_.get(), outbox_);
  ASSERT_EQ(lines_.size(), 400u);
  for (const auto& line : lines_) total += static_cast<size_t>(line.at("cohort"));
  // Binomial(5, 0.3): mean 1.5, sd of the mean over 400 rounds 0.051; 5 sd is 0.26.
  EXPECT_NEAR(static_cast<double>(total) / lines_.size(), 1.5, 0.26);
}

// Regression: under secure aggregation the round line said "20/4 results", the sum of the
// answers to every step. "results" is what the round's first task accepted; each task kind's
// count is under task_results.<kind>.
TEST_F(EngineTest, ResultsCountTheFirstTaskNotEveryStep) {
  algo_.chain = true;
  Make(Config(3, 2, 1));
  for (auto p : {"client-0", "client-1", "client-2"}) Join(p);
  for (auto p : {"client-0", "client-1", "client-2"}) Answer(p, 1);
  Answer("client-0", 1);
  Answer("client-1", 1);
  engine_->OnLost("client-2");
  engine_->Tick();
  ASSERT_TRUE(engine_->done());
  ASSERT_EQ(lines_.size(), 1u);
  const auto& m = lines_[0];
  EXPECT_EQ(m.at("results"), 3);
  EXPECT_EQ(m.at("cohort"), 3);
  EXPECT_EQ(m.at("task_results.sum"), 3);
  EXPECT_EQ(m.at("task_results.sum.check"), 2);
}

}  // namespace
}  // namespace tandem

// ---- Streamed contributions: a FedAvg round whose deltas are folded in as they arrive. ----

namespace tandem {
namespace {

std::unique_ptr<FedAvgServer> MakeFedAvg() {
  auto config = ModelPreset("slm-micro");
  EXPECT_TRUE(config.ok());
  auto model = std::make_unique<Gpt>(*config);
  model->InitWeights(3);
  auto strategy = MakeStrategy(StrategyConfig{});
  EXPECT_TRUE(strategy.ok());
  FedAvgServerConfig fc;
  fc.eval_tokens = 64;
  return std::make_unique<FedAvgServer>(fc, std::move(model), std::move(*strategy),
                                        std::vector<Record>{{"hello world, hello world\n", "x"}});
}

// A client's delta for a round: values of several magnitudes, so float sums would depend on order.
std::vector<float> Delta(size_t n, int client, uint64_t round) {
  Rng rng(1000 * round + client);
  std::vector<float> d(n);
  for (float& v : d) v = static_cast<float>(rng.Normal() * std::pow(10.0, -5.0 + 3 * rng.Uniform()));
  return d;
}

// A FedAvg server (slm-micro) behind an engine with three joined clients, round 1 dispatched.
struct StreamRig {
  StreamRig() {
    fedavg_ = MakeFedAvg();
    n_ = fedavg_->model().params().size();
    EngineConfig c;
    c.expected_clients = 3;
    c.rounds = 2;
    c.round_deadline_s = 10;
    engine_ = std::make_unique<RoundEngine>(c, fedavg_.get(), &outbox_, [this] { return now_; }, 5);
    engine_->SetRoundEndCallback([this](uint64_t, const std::map<std::string, double>& m) {
      lines_.push_back(m);
      return Status::Ok();
    });
    for (auto p : {"client-0", "client-1", "client-2"}) {
      engine_->OnJoined(p, {"fedavg.train"});
      engine_->Tick();
    }
  }
  std::vector<float> Params() const {
    auto p = fedavg_->model().params();
    return {p.begin(), p.end()};
  }
  wire::Message ResultFor(const std::string& peer, int client, bool with_values) {
    engine_->Tick();  // a round that just ended is followed by the next
    auto assigned = outbox_.LastAssignments();
    EXPECT_TRUE(assigned.count(peer)) << peer;
    wire::Message m;
    m.envelope = assigned[peer].envelope;
    m.envelope.sequence = 40 + client;
    const std::vector<float> d = Delta(n_, client, m.envelope.round);
    wire::Tensor t = wire::Tensor::Float32("delta", {n_}, d);
    if (!with_values) t.data.clear();
    m.body = wire::TaskResult{{t}, 1.0 + client, {{"train_loss", 1.0}}};
    return m;
  }
  wire::Message Whole(const std::string& peer, int client) { return ResultFor(peer, client, true); }
  // Offers the upload; true when the engine streams it.
  bool Offer(const std::string& peer, int client, double weight_offset = 0.0) {
    const wire::Message m = ResultFor(peer, client, false);
    return engine_->OnUploadOffered(
        peer, UploadOffer{m.envelope.sequence, m.envelope.round, m.envelope.task_id,
                          1.0 + client + weight_offset, n_});
  }
  // Sends the delta's values in pieces of uneven sizes, values [from, to).
  void Values(const std::string& peer, int client, size_t from, size_t to) {
    const std::vector<float> d = Delta(n_, client, engine_->current_round());
    Rng rng(client);
    for (size_t at = from; at < to;) {
      const size_t k = std::min<size_t>(to - at, 1 + rng.Below(70000));
      engine_->OnUploadValues(peer, 40 + client, at, std::span<const float>(d).subspan(at, k));
      at += k;
    }
  }
  void Streamed(const std::string& peer, int client) {
    ASSERT_TRUE(Offer(peer, client));
    Values(peer, client, 0, n_);
    engine_->OnMessage(peer, ResultFor(peer, client, false));
    engine_->Tick();
  }

  double now_ = 0.0;
  RecordingOutbox outbox_;
  std::unique_ptr<FedAvgServer> fedavg_;
  size_t n_ = 0;
  std::unique_ptr<RoundEngine> engine_;
  std::vector<std::map<std::string, double>> lines_;
};

class StreamTest : public ::testing::Test, public StreamRig {};

TEST_F(StreamTest, StreamedAggregateIsBitIdenticalToWholeMessages) {
  // Reference: the same two rounds with every result whole, in another engine.
  StreamRig reference;
  for (uint64_t round = 1; round <= 2; ++round) {
    for (int c : {2, 0, 1}) {
      reference.engine_->OnMessage("client-" + std::to_string(c),
                                   reference.Whole("client-" + std::to_string(c), c));
      reference.engine_->Tick();
    }
  }
  ASSERT_TRUE(reference.engine_->done());
  // Round 1: every result streamed, in another order; round 2: mixed.
  Streamed("client-0", 0);
  Streamed("client-1", 1);
  Streamed("client-2", 2);
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_FALSE(lines_[0].count("aborted"));
  EXPECT_EQ(lines_[0].at("results"), 3);
  Streamed("client-1", 1);
  engine_->OnMessage("client-0", Whole("client-0", 0));
  Streamed("client-2", 2);
  ASSERT_TRUE(engine_->done());
  EXPECT_TRUE(engine_->status().ok());
  const std::vector<float> got = Params(), want = reference.Params();
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
  EXPECT_DOUBLE_EQ(lines_[1].at("train_loss"), 1.0);
}

TEST_F(StreamTest, RefusedOffersNeverTouchTheSum) {
  const std::vector<float> before = Params();
  const wire::Message m = ResultFor("client-0", 0, false);
  const uint64_t task = m.envelope.task_id, round = m.envelope.round;
  // Wrong task, wrong round, wrong length, not a member: all come whole instead.
  EXPECT_FALSE(engine_->OnUploadOffered("client-0", {40, round, task + 1, 1.0, n_}));
  EXPECT_FALSE(engine_->OnUploadOffered("client-0", {40, round + 1, task, 1.0, n_}));
  EXPECT_FALSE(engine_->OnUploadOffered("client-0", {40, round, task, 1.0, n_ - 1}));
  EXPECT_FALSE(engine_->OnUploadOffered("client-9", {40, round, task, 1.0, n_}));
  EXPECT_FALSE(engine_->OnUploadOffered("client-0", {40, round, task, -1.0, n_}));  // bad weight
  // Values for an upload that was not streamed are ignored.
  Values("client-0", 0, 0, n_);
  // A client that answered already is not streamed again.
  engine_->OnMessage("client-0", Whole("client-0", 0));
  EXPECT_FALSE(Offer("client-0", 0));
  Streamed("client-1", 1);
  Streamed("client-2", 2);
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_FALSE(lines_[0].count("aborted"));
  // The model moved by exactly the three deltas: compare with a fresh whole-message run.
  StreamRig reference;
  for (int c : {0, 1, 2}) {
    reference.engine_->OnMessage("client-" + std::to_string(c),
                                 reference.Whole("client-" + std::to_string(c), c));
  }
  EXPECT_EQ(std::memcmp(Params().data(), reference.Params().data(), n_ * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(Params().data(), before.data(), n_ * sizeof(float)), 0);
}

TEST_F(StreamTest, MalformedFirstChunkIsRejectedAndChangesNothing) {
  const std::vector<float> d = Delta(n_, 0, 1);
  std::vector<float> nan(d.begin(), d.begin() + 100);
  nan[7] = std::numeric_limits<float>::quiet_NaN();
  const wire::Message leftover = ResultFor("client-0", 0, false);
  // Three uploads, each refused at its first piece: wrong offset, a NaN, past the end.
  ASSERT_TRUE(Offer("client-0", 0));
  engine_->OnUploadValues("client-0", 40, 5, std::span<const float>(d).first(100));
  ASSERT_TRUE(Offer("client-1", 1));
  engine_->OnUploadValues("client-1", 41, 0, nan);
  ASSERT_TRUE(Offer("client-2", 2));
  std::vector<float> too_many(n_ + 1, 0.0f);
  engine_->OnUploadValues("client-2", 42, 0, too_many);
  // Each result was rejected with nothing folded; the round ends with too few results, not void.
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0].at("rejected"), 3);
  EXPECT_EQ(lines_[0].at("aborted"), 1);
  EXPECT_FALSE(lines_[0].count("voided"));
  EXPECT_TRUE(engine_->stream_barred().empty());
  // Their remainders, if the transport completes them, are dropped (late: the task closed).
  engine_->OnMessage("client-0", leftover);
  // The next round streams and aggregates as if nothing happened.
  const std::vector<float> before = Params();
  for (int c : {0, 1, 2}) Streamed("client-" + std::to_string(c), c);
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_FALSE(lines_[1].count("aborted"));
  EXPECT_NE(std::memcmp(Params().data(), before.data(), n_ * sizeof(float)), 0);
}

TEST_F(StreamTest, UploadFailingHalfWayVoidsTheRoundAndTheNextRoundWorks) {
  const std::vector<float> before = Params();
  Streamed("client-0", 0);
  ASSERT_TRUE(Offer("client-1", 1));
  Values("client-1", 1, 0, n_ / 2);
  // The transport gives up on it (or a later chunk is malformed: the same path).
  engine_->OnUploadFailed("client-1", 41, "a chunk was malformed");
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0].at("aborted"), 1);
  EXPECT_EQ(lines_[0].at("voided"), 1);
  EXPECT_EQ(engine_->stream_barred(), std::set<std::string>{"client-1"});
  EXPECT_EQ(std::memcmp(Params().data(), before.data(), n_ * sizeof(float)), 0)
      << "a voided round changed the model";
  // Round 2: client-1's upload is not streamed again; it comes whole and counts.
  Streamed("client-0", 0);
  EXPECT_FALSE(Offer("client-1", 1));
  engine_->OnMessage("client-1", Whole("client-1", 1));
  Streamed("client-2", 2);
  ASSERT_TRUE(engine_->done());
  EXPECT_TRUE(engine_->status().ok());
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_FALSE(lines_[1].count("aborted"));
  EXPECT_EQ(lines_[1].at("results"), 3);
  EXPECT_NE(std::memcmp(Params().data(), before.data(), n_ * sizeof(float)), 0);
}

TEST_F(StreamTest, LaterMalformedChunkOrRemainderVoidsTheRound) {
  // A NaN after half the values were folded: they cannot be taken out, so the round is void.
  ASSERT_TRUE(Offer("client-0", 0));
  Values("client-0", 0, 0, n_ / 2);
  std::vector<float> nan(10, std::numeric_limits<float>::infinity());
  engine_->OnUploadValues("client-0", 40, n_ / 2, nan);
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0].at("voided"), 1);
  // Round 2: a remainder whose weight disagrees with its offer voids it too.
  ASSERT_TRUE(Offer("client-2", 2, 0.5));
  Values("client-2", 2, 0, n_);
  engine_->OnMessage("client-2", ResultFor("client-2", 2, false));
  ASSERT_EQ(lines_.size(), 2u);
  EXPECT_EQ(lines_[1].at("voided"), 1);
  EXPECT_EQ(engine_->stream_barred(), (std::set<std::string>{"client-0", "client-2"}));
}

TEST_F(StreamTest, DeadlineWaitsForAStreamPartWayIn) {
  Streamed("client-0", 0);
  Streamed("client-1", 1);
  ASSERT_TRUE(Offer("client-2", 2));
  Values("client-2", 2, 0, n_ / 3);
  now_ += 11;  // past the deadline
  engine_->Tick();
  EXPECT_TRUE(lines_.empty()) << "the task closed with half an upload in the sum";
  Values("client-2", 2, n_ / 3, n_);
  engine_->OnMessage("client-2", ResultFor("client-2", 2, false));
  engine_->Tick();
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_FALSE(lines_[0].count("aborted"));
  EXPECT_EQ(lines_[0].at("results"), 3);
}

}  // namespace
}  // namespace tandem

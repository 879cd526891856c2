// RunSession, the client's side of a run, against a coordinator played by the test (a
// wire::Server, or a raw ROUTER that never answers): join and answer tasks, Bye, the re-Hello
// backoff, giving up, a restarted coordinator, cancelled tasks and the stop flag. Every wait is
// bounded; wall-clock checks are lower bounds or generous upper bounds.
#include <zmq.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/base_sink.h>

#include "client/session.h"
#include "client/task_params.h"
#include "core/logging.h"
#include "core/timer.h"
#include "tests/temp_dir.h"
#include "wire/message.h"
#include "wire/transport.h"

namespace tandem {
namespace {

using std::chrono::milliseconds;
using Kind = wire::TransportEvent::Kind;

constexpr uint64_t kRun = 0x5E5510;
constexpr auto kWait = milliseconds(5000);  // upper bound for anything that should happen
constexpr const char* kIdentity = "client-4";

wire::TransportOptions ServerOptions(const std::string& endpoint, uint64_t run = kRun) {
  wire::TransportOptions o;
  o.endpoint = endpoint;
  o.run_id = run;
  o.heartbeat_interval_ms = 100;
  o.peer_timeout_ms = 600;
  return o;
}

wire::TransportOptions ClientOptions(const std::string& endpoint) {
  wire::TransportOptions o;
  o.endpoint = endpoint;
  o.identity = kIdentity;
  o.heartbeat_interval_ms = 100;
  o.peer_timeout_ms = 300;  // until a Welcome sets the session's own
  o.reconnect_interval_ms = 20;
  o.reconnect_interval_max_ms = 100;
  return o;
}

wire::Message Make(wire::Body body, uint64_t round = 0, uint64_t task = 0) {
  wire::Message m;
  m.envelope.round = round;
  m.envelope.task_id = task;
  m.body = std::move(body);
  return m;
}

wire::Message Assign(uint64_t round, uint64_t task, float x) {
  wire::TaskAssign a;
  a.kind = "test.double";
  a.params["x"] = static_cast<double>(x);
  return Make(std::move(a), round, task);
}

// Answers "test.double" with 2·x; fails "test.fail". A task whose x is negative blocks in Run
// until Release(): the test can act while the session is busy.
class RecordingHandler : public TaskHandler {
 public:
  std::vector<std::string> Capabilities() const override { return {"test.double", "test.fail"}; }
  void OnWelcome(uint32_t client_index) override {
    std::lock_guard<std::mutex> lock(mu_);
    welcomes_.push_back(client_index);
  }
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override {
    StatusOr<double> param = RealParam(task.params, "x", -1e9, 1e9);
    if (!param.ok()) return param.status();
    const double x = *param;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ran_.push_back(x);
      cv_.notify_all();
      if (x < 0) {
        // Bounded: a test that forgets to release fails rather than hangs.
        cv_.wait_for(lock, std::chrono::seconds(20), [&] { return released_; });
      }
    }
    if (task.kind == "test.fail") return Status::Internal("asked to fail");
    result->tensors.push_back(
        wire::Tensor::Float32("y", {1}, std::vector<float>{static_cast<float>(2 * x)}));
    result->weight = 1.0;
    result->metrics["round"] = static_cast<double>(round);
    return Status::Ok();
  }

  // True once Run has been entered with `x` (within `timeout`).
  bool WaitUntilRunning(double x, milliseconds timeout = kWait) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (double r : ran_) {
        if (r == x) return true;
      }
      return false;
    });
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  std::vector<double> ran() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ran_;
  }
  std::vector<uint32_t> welcomes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return welcomes_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<double> ran_;
  std::vector<uint32_t> welcomes_;
  bool released_ = false;
};

// RunSession on a thread of its own; its outcome within a bound.
class SessionThread {
 public:
  SessionThread(wire::Client* link, TaskHandler* handler, SessionOptions options)
      : options_(options) {
    options_.stop = &stop_;
    future_ = std::async(std::launch::async,
                         [=, this] { return RunSession(link, handler, options_); });
  }
  ~SessionThread() {
    stop_ = true;  // a failed test must not leave the session running
    if (future_.valid()) future_.wait();
  }
  // The session's outcome, or nullopt if it is still running after `timeout`.
  std::optional<StatusOr<SessionSummary>> Result(milliseconds timeout = kWait) {
    if (future_.wait_for(timeout) != std::future_status::ready) return std::nullopt;
    return future_.get();
  }
  void Stop() { stop_ = true; }

 private:
  std::atomic<bool> stop_{false};
  SessionOptions options_;
  std::future<StatusOr<SessionSummary>> future_;
};

// The next event of `kind` within `timeout`; the others are collected in `others`.
std::optional<wire::TransportEvent> WaitFor(wire::Server& server, Kind kind, milliseconds timeout,
                                            std::vector<wire::TransportEvent>* others = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    StatusOr<std::optional<wire::TransportEvent>> event = server.Receive(left);
    EXPECT_TRUE(event.ok()) << event.status().ToString();
    if (!event.ok() || !event->has_value()) return std::nullopt;
    if ((*event)->kind == kind) return std::move(**event);
    if (others) others->push_back(std::move(**event));
  }
}

// The next message (not a join or a loss) within `timeout`.
std::optional<wire::Message> NextMessage(wire::Server& server, milliseconds timeout = kWait) {
  std::optional<wire::TransportEvent> e = WaitFor(server, Kind::kMessage, timeout);
  if (!e) return std::nullopt;
  return std::move(e->message);
}

// Waits for the session's Hello and welcomes it as client `index`.
void Welcome(wire::Server& server, uint32_t index = 4) {
  std::optional<wire::TransportEvent> joined = WaitFor(server, Kind::kPeerJoined, kWait);
  ASSERT_TRUE(joined.has_value()) << "no Hello";
  EXPECT_EQ(joined->peer, kIdentity);
  const auto& hello = std::get<wire::Hello>(joined->message.body);
  EXPECT_EQ(hello.agent, "tandem-test/2");
  EXPECT_EQ(hello.capabilities, (std::vector<std::string>{"test.double", "test.fail"}));
  ASSERT_TRUE(NextMessage(server).has_value());  // the Hello again, as a message
  ASSERT_TRUE(server.Send(kIdentity, Make(wire::Welcome{index, 100, 600})).ok());
}

// Sends task `task` of `round` with x and expects its result, 2·x.
void ExpectAnswered(wire::Server& server, uint64_t round, uint64_t task, float x) {
  ASSERT_TRUE(server.Send(kIdentity, Assign(round, task, x)).ok());
  std::optional<wire::Message> reply = NextMessage(server);
  ASSERT_TRUE(reply.has_value()) << "no answer to task " << task;
  EXPECT_EQ(reply->envelope.round, round);
  EXPECT_EQ(reply->envelope.task_id, task);
  const auto* result = std::get_if<wire::TaskResult>(&reply->body);
  ASSERT_NE(result, nullptr) << "task " << task << " answered with a " << wire::MessageTypeName(reply->type());
  ASSERT_EQ(result->tensors.size(), 1u);
  EXPECT_EQ(result->tensors[0].ToFloat32(), std::vector<float>{2 * x});
  EXPECT_EQ(result->metrics.at("round"), static_cast<double>(round));
}

// True once the client's transport has accepted `count` messages (heartbeats excluded): what the
// coordinator sent is in the session's queue.
bool Delivered(const wire::Client& link, uint64_t count) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (link.stats().messages_received < count) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return true;
}

SessionOptions Options() {
  SessionOptions o;
  o.agent = "tandem-test/2";
  o.hello_backoff_s = 0.05;
  o.hello_backoff_max_s = 0.4;
  o.give_up_s = 30.0;
  return o;
}

// A ROUTER that takes Hellos and never answers: the coordinator of a session that cannot join.
class MuteCoordinator {
 public:
  explicit MuteCoordinator(const std::string& endpoint) {
    socket_ = zmq_socket(ctx_, ZMQ_ROUTER);
    int zero = 0, one = 1;
    zmq_setsockopt(socket_, ZMQ_LINGER, &zero, sizeof(zero));
    // A reconnecting client comes back with the same routing id on a new connection.
    zmq_setsockopt(socket_, ZMQ_ROUTER_HANDOVER, &one, sizeof(one));
    EXPECT_EQ(zmq_bind(socket_, endpoint.c_str()), 0) << zmq_strerror(zmq_errno());
  }
  ~MuteCoordinator() {
    zmq_close(socket_);
    zmq_ctx_term(ctx_);
  }
  // The arrival times (steady clock, seconds since `clock` started) of the first `count` Hellos,
  // within `timeout`.
  std::vector<double> HelloTimes(size_t count, const Stopwatch& clock, milliseconds timeout) {
    std::vector<double> times;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (times.size() < count && std::chrono::steady_clock::now() < deadline) {
      zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&item, 1, 50) <= 0) continue;
      std::vector<std::string> frames;
      int more = 1;
      while (more) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, socket_, 0) < 0) {
          zmq_msg_close(&msg);
          break;
        }
        frames.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
        more = zmq_msg_more(&msg);
        zmq_msg_close(&msg);
      }
      if (frames.size() != 2) continue;  // [routing id, frame]
      StatusOr<wire::Message> m = wire::DecodeMessage(std::string_view(frames[1]));
      if (m.ok() && m->type() == wire::MessageType::kHello) times.push_back(clock.Seconds());
    }
    return times;
  }

 private:
  void* ctx_ = zmq_ctx_new();
  void* socket_ = nullptr;
};

// Collects what the "client" logger writes, for the values the session decided on.
class LogCapture : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines_.emplace_back(msg.payload.data(), msg.payload.size());
  }
  void flush_() override {}

 private:
  std::vector<std::string> lines_;
};

class SessionTest : public testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    endpoint_ = "ipc://" + Path("coordinator.sock");
    log_ = GetLogger("client");
    capture_ = std::make_shared<LogCapture>();
    log_->sinks().push_back(capture_);
  }
  void TearDown() override {
    auto& sinks = log_->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), capture_), sinks.end());
    TempDirTest::TearDown();
  }
  std::unique_ptr<wire::Server> Bind(uint64_t run = kRun) {
    StatusOr<std::unique_ptr<wire::Server>> server = wire::Server::Bind(ServerOptions(endpoint_, run));
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    return server.ok() ? std::move(*server) : nullptr;
  }
  std::unique_ptr<wire::Client> Connect() {
    StatusOr<std::unique_ptr<wire::Client>> client = wire::Client::Connect(ClientOptions(endpoint_));
    EXPECT_TRUE(client.ok()) << client.status().ToString();
    return client.ok() ? std::move(*client) : nullptr;
  }
  // The waits the session announced before reconnecting ("reconnecting in 0.20 s"), in order.
  std::vector<double> AnnouncedBackoffs() {
    static const std::regex re("reconnecting in ([0-9.]+) s");
    std::vector<double> waits;
    for (const std::string& line : capture_->lines()) {
      std::smatch m;
      if (std::regex_search(line, m, re)) waits.push_back(std::strtod(m[1].str().c_str(), nullptr));
    }
    return waits;
  }

  std::string endpoint_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<LogCapture> capture_;
};

// ---------------------------------------------------------------------------------------------

TEST_F(SessionTest, AnswersTasksReportsFailuresAndEndsOkOnBye) {
  std::unique_ptr<wire::Server> server = Bind();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionThread session(link.get(), &handler, Options());
  Welcome(*server, 7);
  ExpectAnswered(*server, 1, 11, 1.5f);
  ExpectAnswered(*server, 2, 12, 1.0f);
  // A handler's error is a failed task, reported with its message; the session goes on.
  wire::Message fail = Assign(2, 13, 3.0f);
  std::get<wire::TaskAssign>(fail.body).kind = "test.fail";
  ASSERT_TRUE(server->Send(kIdentity, std::move(fail)).ok());
  std::optional<wire::Message> error = NextMessage(*server);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->envelope.task_id, 13u);
  const auto* e = std::get_if<wire::Error>(&error->body);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, wire::ErrorCode::kTaskFailed);
  EXPECT_NE(e->message.find("asked to fail"), std::string::npos) << e->message;
  ExpectAnswered(*server, 3, 14, 4.0f);

  ASSERT_TRUE(server->Send(kIdentity, Make(wire::Bye{"the run is complete"}, 3)).ok());
  std::optional<StatusOr<SessionSummary>> result = session.Result();
  ASSERT_TRUE(result.has_value()) << "the session did not end on Bye";
  ASSERT_TRUE(result->ok()) << result->status().ToString();
  EXPECT_EQ((*result)->tasks_done, 3u);
  EXPECT_EQ((*result)->tasks_failed, 1u);
  EXPECT_EQ((*result)->joins, 1u);
  EXPECT_EQ(handler.welcomes(), std::vector<uint32_t>{7});
}

TEST_F(SessionTest, TaskBeforeWelcomeIsIgnored) {
  std::unique_ptr<wire::Server> server = Bind();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionThread session(link.get(), &handler, Options());
  ASSERT_TRUE(WaitFor(*server, Kind::kPeerJoined, kWait).has_value());
  ASSERT_TRUE(NextMessage(*server).has_value());
  // The transport delivers it (the run id comes with it), but the session has not been welcomed.
  ASSERT_TRUE(server->Send(kIdentity, Assign(1, 1, 5.0f)).ok());
  EXPECT_FALSE(NextMessage(*server, milliseconds(400)).has_value());
  // A coordinator welcomes at its current round (older rounds are stale to the client now).
  ASSERT_TRUE(server->Send(kIdentity, Make(wire::Welcome{4, 100, 600}, 1)).ok());
  ExpectAnswered(*server, 1, 2, 6.0f);
  EXPECT_EQ(handler.ran(), std::vector<double>{6.0});
  session.Stop();
  std::optional<StatusOr<SessionSummary>> result = session.Result();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok());
  EXPECT_EQ((*result)->tasks_done, 1u);
}

TEST_F(SessionTest, HelloBackoffDoublesUpToTheMaximum) {
  // A coordinator that never answers: each Hello ends with the transport's peer timeout (0.3 s,
  // ClientOptions), then the session waits its backoff: 0.1, 0.2, 0.4, 0.4, ... s.
  MuteCoordinator mute(endpoint_);
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionOptions options = Options();
  options.hello_backoff_s = 0.1;
  options.hello_backoff_max_s = 0.4;
  Stopwatch clock;
  SessionThread session(link.get(), &handler, options);
  const std::vector<double> hellos = mute.HelloTimes(6, clock, milliseconds(20000));
  ASSERT_EQ(hellos.size(), 6u);
  const std::vector<double> expected = {0.1, 0.2, 0.4, 0.4, 0.4};
  // What the session decided: the waits, exactly.
  std::vector<double> announced = AnnouncedBackoffs();
  ASSERT_GE(announced.size(), expected.size());
  announced.resize(expected.size());
  EXPECT_EQ(announced, expected);
  // And that it waited them: every gap is at least the timeout plus the wait (lower bounds hold
  // on a loaded machine); the gaps grow, then stay flat (generous upper bound).
  constexpr double kTimeout = 0.3;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double gap = hellos[i + 1] - hellos[i];
    EXPECT_GE(gap, 0.95 * (kTimeout + expected[i])) << "gap " << i;
    EXPECT_LT(gap, kTimeout + expected[i] + 1.5) << "gap " << i;
  }
  EXPECT_GT(hellos[3] - hellos[2], hellos[1] - hellos[0]);  // 0.7 s against 0.4 s
  session.Stop();
  std::optional<StatusOr<SessionSummary>> result = session.Result();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok());
  EXPECT_EQ((*result)->joins, 0u);
  EXPECT_TRUE(handler.welcomes().empty());
}

TEST_F(SessionTest, GivesUpWithAnErrorWhenNoCoordinatorAnswers) {
  std::unique_ptr<wire::Client> link = Connect();  // nothing is bound at the endpoint
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionOptions options = Options();
  options.give_up_s = 1.0;
  Stopwatch clock;
  SessionThread session(link.get(), &handler, options);
  std::optional<StatusOr<SessionSummary>> result = session.Result(milliseconds(10000));
  ASSERT_TRUE(result.has_value()) << "the session did not give up";
  const double took = clock.Seconds();
  ASSERT_FALSE(result->ok());
  EXPECT_EQ(result->status().code(), StatusCode::kUnavailable);
  EXPECT_NE(result->status().message().find("giving up"), std::string::npos)
      << result->status().ToString();
  EXPECT_GE(took, 1.0);
  EXPECT_GE(AnnouncedBackoffs().size(), 2u);  // it kept trying meanwhile
}

TEST_F(SessionTest, GiveUpClockStartsWhenTheCoordinatorIsLost) {
  // Joined for longer than give_up_s: losing the coordinator then must not end the session at
  // once; it gets give_up_s from the loss.
  std::unique_ptr<wire::Server> server = Bind();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionOptions options = Options();
  options.give_up_s = 1.0;
  SessionThread session(link.get(), &handler, options);
  Welcome(*server);
  ExpectAnswered(*server, 1, 1, 1.0f);
  // Heartbeats keep the session alive past give_up_s.
  EXPECT_FALSE(session.Result(milliseconds(1500)).has_value());
  server.reset();
  Stopwatch since_loss;
  std::optional<StatusOr<SessionSummary>> result = session.Result(milliseconds(10000));
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->status().code(), StatusCode::kUnavailable);
  EXPECT_GE(since_loss.Seconds(), 1.0);
}

TEST_F(SessionTest, RejoinsACoordinatorRestartedAtTheSameEndpoint) {
  std::unique_ptr<wire::Server> server = Bind();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionThread session(link.get(), &handler, Options());
  Welcome(*server, 4);
  ExpectAnswered(*server, 1, 1, 1.0f);
  // The coordinator's process ends without a Bye; a new one (a new run id, as a resumed
  // coordinator has) binds the same ipc path.
  server.reset();
  server = Bind(kRun + 2);
  ASSERT_NE(server, nullptr);
  std::vector<wire::TransportEvent> before;
  std::optional<wire::TransportEvent> joined =
      WaitFor(*server, Kind::kPeerJoined, milliseconds(10000), &before);
  ASSERT_TRUE(joined.has_value()) << "the session did not come back";
  EXPECT_TRUE(before.empty());
  EXPECT_EQ(joined->peer, kIdentity);
  EXPECT_EQ(joined->message.envelope.run_id, 0u);  // a fresh Hello: the old run forgotten
  ASSERT_TRUE(NextMessage(*server).has_value());
  ASSERT_TRUE(server->Send(kIdentity, Make(wire::Welcome{4, 100, 600})).ok());
  // The next task is answered (round 2: the restarted run goes on where it was).
  ExpectAnswered(*server, 2, 2, 2.5f);
  ASSERT_TRUE(server->Send(kIdentity, Make(wire::Bye{"done"}, 2)).ok());
  std::optional<StatusOr<SessionSummary>> result = session.Result();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok()) << result->status().ToString();
  EXPECT_EQ((*result)->joins, 2u);
  EXPECT_EQ((*result)->tasks_done, 2u);
  EXPECT_EQ(handler.welcomes(), (std::vector<uint32_t>{4, 4}));
}

TEST_F(SessionTest, StopEndsAnIdleSessionPromptly) {
  std::unique_ptr<wire::Server> server = Bind();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionThread session(link.get(), &handler, Options());
  Welcome(*server);
  ExpectAnswered(*server, 1, 1, 1.0f);
  Stopwatch clock;
  session.Stop();
  // The session polls its transport every 100 ms.
  std::optional<StatusOr<SessionSummary>> result = session.Result(milliseconds(1000));
  ASSERT_TRUE(result.has_value()) << "stop did not end the session within 1 s";
  EXPECT_LT(clock.Seconds(), 1.0);
  ASSERT_TRUE(result->ok());
  EXPECT_EQ((*result)->tasks_done, 1u);
  EXPECT_EQ((*result)->joins, 1u);
}

TEST_F(SessionTest, TaskCancelledWhileItRunsSendsNoResult) {
  std::unique_ptr<wire::Server> server = Bind();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionThread session(link.get(), &handler, Options());
  Welcome(*server);
  ASSERT_TRUE(server->Send(kIdentity, Assign(1, 5, -1.0f)).ok());  // blocks in Run
  ASSERT_TRUE(handler.WaitUntilRunning(-1.0));
  // The coordinator closes the task at its deadline (RoundEngine::CloseTask).
  ASSERT_TRUE(server->Send(kIdentity, Make(wire::TaskCancel{"the task closed"}, 1, 5)).ok());
  ASSERT_TRUE(Delivered(*link, 3));  // Welcome, the task, its cancel
  handler.Release();
  // Its result would be dropped as late: it is not sent. The next task is answered.
  ExpectAnswered(*server, 2, 6, 3.0f);
  EXPECT_EQ(handler.ran(), (std::vector<double>{-1.0, 3.0}));
  session.Stop();
  std::optional<StatusOr<SessionSummary>> result = session.Result();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok());
  EXPECT_EQ((*result)->tasks_done, 1u);
  EXPECT_EQ((*result)->tasks_failed, 0u);
}

TEST_F(SessionTest, TaskCancelledWhileQueuedBehindAnotherIsNotRun) {
  // A straggler still runs task 5 when the coordinator sends task 6 and, at 6's deadline,
  // cancels it: the cancel arrives behind the assignment, and 6 must not be run for nothing.
  std::unique_ptr<wire::Server> server = Bind();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionThread session(link.get(), &handler, Options());
  Welcome(*server);
  ASSERT_TRUE(server->Send(kIdentity, Assign(1, 5, -2.0f)).ok());  // blocks in Run
  ASSERT_TRUE(handler.WaitUntilRunning(-2.0));
  ASSERT_TRUE(server->Send(kIdentity, Assign(1, 6, 7.0f)).ok());
  ASSERT_TRUE(server->Send(kIdentity, Make(wire::TaskCancel{"the task closed"}, 1, 6)).ok());
  ASSERT_TRUE(Delivered(*link, 4));  // Welcome, two tasks, the cancel
  handler.Release();
  std::optional<wire::Message> first = NextMessage(*server);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->envelope.task_id, 5u);
  EXPECT_TRUE(std::holds_alternative<wire::TaskResult>(first->body));
  ExpectAnswered(*server, 2, 7, 8.0f);  // the next message is task 7's: nothing for task 6
  EXPECT_EQ(handler.ran(), (std::vector<double>{-2.0, 8.0}));
  session.Stop();
  std::optional<StatusOr<SessionSummary>> result = session.Result();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok());
  EXPECT_EQ((*result)->tasks_done, 2u);
}

TEST_F(SessionTest, StaleReconnectIsCancelledWhenAPausedClientRejoinsOnItsOldConnection) {
  // A client paused (SIGSTOP) for longer than its peer timeout finds the coordinator silent when
  // it continues and arms a reconnect; the coordinator's frames then arrive on the same
  // connection, it rejoins there and runs the next task. The reconnect armed before must not
  // fire after that: it would drop the result's upload ("restarted during task").
  wire::TransportOptions server_options = ServerOptions(endpoint_);
  server_options.heartbeat_interval_ms = 5000;  // the coordinator stays quiet unless the test speaks
  server_options.peer_timeout_ms = 20000;
  StatusOr<std::unique_ptr<wire::Server>> bound = wire::Server::Bind(server_options);
  ASSERT_TRUE(bound.ok()) << bound.status().ToString();
  wire::Server& server = **bound;
  std::unique_ptr<wire::Client> link = Connect();
  ASSERT_NE(link, nullptr);
  RecordingHandler handler;
  SessionOptions options = Options();
  options.hello_backoff_s = 1.0;  // the pending reconnect falls due while the task runs
  options.hello_backoff_max_s = 1.0;
  SessionThread session(link.get(), &handler, options);
  ASSERT_NO_FATAL_FAILURE(Welcome(server, 4));
  ASSERT_TRUE(server.Send(kIdentity, Make(wire::Welcome{4, 100, 20000})).ok());
  // Past the Hello backoff, so that the rejoin below can say Hello at once.
  std::this_thread::sleep_for(milliseconds(1200));
  // A 300 ms peer timeout with the coordinator quiet: the session sees it go silent, as a client
  // does when it continues after a pause.
  ASSERT_TRUE(server.Send(kIdentity, Make(wire::Welcome{4, 100, 300})).ok());
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (AnnouncedBackoffs().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_FALSE(AnnouncedBackoffs().empty()) << "the session never saw the coordinator go silent";
  // The coordinator had dropped the session and answers on the old connection with kNotJoined
  // (played here without ending the server's session, which would race the answer); the session
  // says Hello on that connection and is welcomed again (now with a timeout the test keeps).
  ASSERT_TRUE(server.Send(kIdentity, Make(wire::Error{wire::ErrorCode::kNotJoined, "send Hello first"})).ok());
  std::optional<wire::TransportEvent> rejoined = WaitFor(server, Kind::kPeerJoined, kWait);
  ASSERT_TRUE(rejoined.has_value()) << "the session did not say Hello again";
  ASSERT_TRUE(NextMessage(server).has_value());  // the Hello as a message
  ASSERT_TRUE(server.Send(kIdentity, Make(wire::Welcome{4, 100, 20000})).ok());
  // The next task runs past the time the stale reconnect was due.
  ASSERT_TRUE(server.Send(kIdentity, Assign(2, 9, -3.0f)).ok());
  ASSERT_TRUE(handler.WaitUntilRunning(-3.0));
  std::this_thread::sleep_for(milliseconds(1500));  // > hello_backoff_s: a lower bound only
  handler.Release();
  std::vector<wire::TransportEvent> after;
  std::optional<wire::Message> reply = NextMessage(server);
  ASSERT_TRUE(reply.has_value()) << "the result never arrived";
  EXPECT_EQ(reply->envelope.task_id, 9u);
  EXPECT_TRUE(std::holds_alternative<wire::TaskResult>(reply->body));
  // No new connection and no new Hello follow the result.
  std::optional<wire::TransportEvent> again =
      WaitFor(server, Kind::kPeerJoined, milliseconds(1500), &after);
  EXPECT_FALSE(again.has_value()) << "the session reconnected after sending its result";
  for (const wire::TransportEvent& e : after) {
    EXPECT_FALSE(std::holds_alternative<wire::Hello>(e.message.body));
  }
  EXPECT_EQ(handler.welcomes(), (std::vector<uint32_t>{4, 4}));
  session.Stop();
  std::optional<StatusOr<SessionSummary>> result = session.Result();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok()) << result->status().ToString();
  EXPECT_EQ((*result)->tasks_done, 1u);
  EXPECT_EQ((*result)->joins, 2u);
}

}  // namespace
}  // namespace tandem

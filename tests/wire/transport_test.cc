// The ZeroMQ transport end to end, both sides together (wire/transport.h): round trips over
// inproc, ipc and tcp; a 64 MiB message; heartbeats keeping an idle session alive; invalid
// messages and options; frame bytes counted alike on both sides.
#include <zmq.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/temp_dir.h"
#include "tests/wire/transport_test_util.h"
#include "wire/transport.h"

namespace tandem::wire {
namespace {

using namespace testing;

class TransportTest : public tandem::testing::TempDirTest {};

TEST_F(TransportTest, InprocRoundTripWithSharedContext) {
  SharedContext ctx;
  TransportOptions so = BaseOptions("inproc://tandem-test-rt");
  so.zmq_context = ctx.ctx;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  TransportOptions co = so;
  co.identity = "client-0";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  Join(**server, **client, "client-0");
  RoundTrip(**server, **client, "client-0", 1);
  EXPECT_EQ((*server)->peers(), std::vector<std::string>{"client-0"});
  const TransportStats s = (*server)->stats();
  EXPECT_GE(s.messages_received, 2u);  // Hello, TaskResult
  EXPECT_GE(s.messages_sent, 2u);      // Welcome, TaskAssign
  EXPECT_EQ(s.rejected, 0u);
  EXPECT_EQ((*server)->peer_stats("client-0").messages_received, s.messages_received);
  EXPECT_EQ((*server)->peer_stats("nobody").bytes_received, 0u);
  client->reset();
  server->reset();
}

TEST_F(TransportTest, IpcRoundTrip) {
  TransportOptions so = BaseOptions("ipc://" + Path("tandem.sock"));
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  TransportOptions co = so;
  co.identity = "edge.7";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  Join(**server, **client, "edge.7");
  RoundTrip(**server, **client, "edge.7", 3);
}

TEST_F(TransportTest, SixtyFourMiBMessageArrivesIntact) {
  TransportOptions so = BaseOptions("tcp://127.0.0.1:0");
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  TransportOptions co = BaseOptions((*server)->endpoint());
  co.identity = "big";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok());
  Join(**server, **client, "big");
  const size_t n = 16 * kMiB;  // 16 Mi floats = 64 MiB
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = static_cast<float>(i % 4099) * 0.25f - 100.0f;
  const uint64_t frames_before = (*server)->stats().frames_received;
  ASSERT_TRUE((*client)->Send(ResultMessage(1, 9, values)).ok());
  std::optional<TransportEvent> got = WaitFor(**server, Kind::kMessage, milliseconds(20000));
  ASSERT_TRUE(got.has_value());
  const TaskResult& r = std::get<TaskResult>(got->message.body);
  ASSERT_EQ(r.tensors.size(), 1u);
  ASSERT_EQ(r.tensors[0].data.size(), n * 4);
  EXPECT_EQ(std::memcmp(r.tensors[0].data.data(), values.data(), n * 4), 0);
  EXPECT_GE((*server)->stats().frames_received - frames_before, 64u);  // it travelled chunked
  EXPECT_EQ((*server)->stats().rejected, 0u);
}

TEST_F(TransportTest, HeartbeatsKeepAnIdlePeerAliveAcrossTheTimeout) {
  TransportOptions so = BaseOptions("tcp://127.0.0.1:0");
  so.heartbeat_interval_ms = 100;
  so.peer_timeout_ms = 600;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  TransportOptions co = so;
  co.endpoint = (*server)->endpoint();
  co.identity = "idle";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Send(HelloMessage()).ok());
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  ASSERT_TRUE((*server)->Send("idle", Make(Welcome{0, 100, 600})).ok());
  ASSERT_TRUE(WaitFor(**client, Kind::kPeerJoined, kWait).has_value());
  // Both owners are "busy" for 2.5 timeouts, and on until ten heartbeats have arrived each way
  // however slowly a loaded machine sends them: no event at all may appear.
  const auto deadline = std::chrono::steady_clock::now() + milliseconds(1500);
  const auto last_resort = deadline + kWait;
  auto busy = [&] {
    const auto now = std::chrono::steady_clock::now();
    return now < deadline || (now < last_resort && ((*server)->stats().heartbeats_received < 10 ||
                                                    (*client)->stats().heartbeats_received < 10));
  };
  std::vector<TransportEvent> server_events, client_events;
  while (busy()) {
    if (auto e = AnyEvent(**server, milliseconds(20)); e && e->kind != Kind::kMessage) {
      server_events.push_back(*e);
    }
    if (auto e = AnyEvent(**client, milliseconds(20)); e && e->kind != Kind::kMessage) {
      client_events.push_back(*e);
    }
  }
  EXPECT_TRUE(server_events.empty());
  EXPECT_TRUE(client_events.empty());
  EXPECT_GE((*server)->stats().heartbeats_received, 10u);
  EXPECT_GE((*client)->stats().heartbeats_received, 10u);
  EXPECT_EQ((*server)->peers(), std::vector<std::string>{"idle"});
  RoundTrip(**server, **client, "idle", 4);
}

TEST_F(TransportTest, InvalidMessagesAndOptionsAreRefused) {
  SharedContext ctx;
  TransportOptions so = BaseOptions("inproc://tandem-test-invalid");
  so.zmq_context = ctx.ctx;
  TransportOptions bad = so;
  bad.run_id = 0;
  EXPECT_EQ(Server::Bind(bad).status().code(), StatusCode::kInvalidArgument);
  bad = so;
  bad.curve = true;
  bad.own_keys = *GenerateCurveKeyPair();
  EXPECT_TRUE(Server::Bind(bad).status().message().find("inproc") != std::string::npos);
  bad = so;
  bad.peer_timeout_ms = 10;
  EXPECT_FALSE(Server::Bind(bad).ok());
  bad = so;
  bad.identity = "has space";
  EXPECT_FALSE(Client::Connect(bad).ok());
  bad.identity = "";
  EXPECT_FALSE(Client::Connect(bad).ok());

  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  TransportOptions co = so;
  co.identity = "careful";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*server)->Send("careful", WelcomeMessage()).code(), StatusCode::kNotFound);
  Join(**server, **client, "careful");
  // An invalid message is refused at Send and uses up no sequence number.
  Message nan = ResultMessage(1, 1, {1.0f});
  std::get<TaskResult>(nan.body).tensors[0].data = FloatBytes(std::nanf(""));
  EXPECT_EQ((*client)->Send(nan).code(), StatusCode::kInvalidArgument);
  Message no_task = ResultMessage(1, 0, {1.0f});
  EXPECT_EQ((*client)->Send(no_task).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*client)->Send(ResultMessage(1, 1, {1.0f})).ok());
  std::optional<TransportEvent> got = WaitFor(**server, Kind::kMessage, kWait);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->message.envelope.sequence, 2u);  // Hello was 1
  EXPECT_EQ((*server)->stats().rejected, 0u);
  client->reset();
  server->reset();
}

TEST_F(TransportTest, FrameBytesAgreeOnBothSides) {
  TransportOptions so = BaseOptions("ipc://" + Path("bytes.sock"));
  so.heartbeat_interval_ms = 5000;
  so.peer_timeout_ms = 10000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  TransportOptions co = so;
  co.identity = "counted";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Send(HelloMessage()).ok());
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  ASSERT_TRUE((*server)->Send("counted", Make(Welcome{0, 5000, 10000})).ok());
  ASSERT_TRUE(WaitFor(**client, Kind::kMessage, kWait).has_value());
  ASSERT_TRUE((*client)->Send(ResultMessage(1, 1, std::vector<float>(3 * kMiB, 0.5f))).ok());
  ASSERT_TRUE(WaitFor(**server, Kind::kMessage, kWait).has_value());
  ASSERT_TRUE(WaitFor(**server, Kind::kMessage, kWait).has_value());
  const TransportStats c = (*client)->stats();
  const TransportStats s = (*server)->stats();
  EXPECT_GT(c.bytes_sent, 12 * kMiB);
  EXPECT_EQ(c.bytes_sent, s.bytes_received);
  EXPECT_EQ(c.frames_sent, s.frames_received);
  EXPECT_EQ(s.bytes_sent, c.bytes_received);
  EXPECT_EQ(c.messages_sent, 2u);
  EXPECT_EQ(s.messages_received, 2u);
}

}  // namespace
}  // namespace tandem::wire

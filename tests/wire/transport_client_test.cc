// The client side of the transport (wire/transport_client.h): a silent coordinator is reported
// lost once; a restarted client rejoins with its identity; Reconnect() starts a fresh session and
// drops an upload still waiting for its grant, while heartbeats keep a waiting uploader alive.
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

class TransportClientTest : public tandem::testing::TempDirTest {};

// How soon, against the timeout, is bench/transport_timing.cc's figure.
TEST_F(TransportClientTest, ClientReportsASilentCoordinatorLost) {
  TransportOptions so = BaseOptions("tcp://127.0.0.1:0");
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  TransportOptions co = BaseOptions((*server)->endpoint());
  co.identity = "watcher";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Send(HelloMessage()).ok());
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  ASSERT_TRUE((*server)->Send("watcher", Make(Welcome{0, 100, 500})).ok());  // adopted
  ASSERT_TRUE(WaitFor(**client, Kind::kPeerJoined, kWait).has_value());
  server->reset();
  ASSERT_TRUE(WaitFor(**client, Kind::kPeerLost, kWait).has_value());
  EXPECT_FALSE(AnyEvent(**client, milliseconds(700)).has_value());  // reported once
}

TEST_F(TransportClientTest, RestartedClientRejoinsWithTheSameIdentity) {
  TransportOptions so = BaseOptions("tcp://127.0.0.1:0");
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  TransportOptions co = BaseOptions((*server)->endpoint());
  co.identity = "client-3";
  {
    StatusOr<std::unique_ptr<Client>> first = Client::Connect(co);
    ASSERT_TRUE(first.ok());
    Join(**server, **first, "client-3");
    RoundTrip(**server, **first, "client-3", 1);
  }
  // A new process with the same identity, well before the old session times out.
  StatusOr<std::unique_ptr<Client>> second = Client::Connect(co);
  ASSERT_TRUE(second.ok());
  Join(**server, **second, "client-3");
  RoundTrip(**server, **second, "client-3", 2);
  EXPECT_EQ((*server)->peers(), std::vector<std::string>{"client-3"});

  // The same under CURVE: a new connection (new routing id), the same key.
  CurveSetup keys;
  StatusOr<std::unique_ptr<Server>> secure = Server::Bind(keys.ServerOptions());
  ASSERT_TRUE(secure.ok());
  const TransportOptions cc = keys.ClientOptions((*secure)->endpoint(), keys.client0);
  {
    StatusOr<std::unique_ptr<Client>> first = Client::Connect(cc);
    ASSERT_TRUE(first.ok());
    Join(**secure, **first, "client-0");
  }
  StatusOr<std::unique_ptr<Client>> again = Client::Connect(cc);
  ASSERT_TRUE(again.ok());
  Join(**secure, **again, "client-0");
  RoundTrip(**secure, **again, "client-0", 5);
}

TEST_F(TransportClientTest, ReconnectStartsAFreshSession) {
  TransportOptions so = BaseOptions("ipc://" + Path("re.sock"));
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  TransportOptions co = so;
  co.identity = "again";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok());
  Join(**server, **client, "again");
  RoundTrip(**server, **client, "again", 1);
  ASSERT_TRUE((*client)->Reconnect().ok());
  ASSERT_TRUE((*client)->Send(HelloMessage()).ok());
  std::optional<TransportEvent> joined = WaitFor(**server, Kind::kPeerJoined, kWait);
  ASSERT_TRUE(joined.has_value());
  EXPECT_EQ(joined->message.envelope.sequence, 1u);  // sequence numbers restarted
  EXPECT_EQ(joined->message.envelope.run_id, 0u);    // the run id was forgotten
  ASSERT_TRUE(WaitFor(**server, Kind::kMessage, kWait).has_value());
  ASSERT_TRUE((*server)->Send("again", WelcomeMessage()).ok());
  std::vector<TransportEvent> others;
  ASSERT_TRUE(WaitFor(**client, Kind::kMessage, kWait, &others).has_value());
  RoundTrip(**server, **client, "again", 2);
  EXPECT_EQ((*server)->stats().rejected, 0u);
}

TEST_F(TransportClientTest, AWaitingUploaderStaysAliveAndReconnectDropsItsUpload) {
  TransportOptions so = BaseOptions("ipc://" + Path("wait.sock"));
  so.heartbeat_interval_ms = 100;
  so.peer_timeout_ms = 600;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  std::vector<std::unique_ptr<Client>> clients;
  for (const char* name : {"first", "second"}) {
    TransportOptions co = so;
    co.identity = name;
    StatusOr<std::unique_ptr<Client>> c = Client::Connect(co);
    ASSERT_TRUE(c.ok());
    clients.push_back(std::move(*c));
    Join(**server, *clients.back(), name, Make(Welcome{0, 100, 600}));
  }
  Client& first = *clients[0];
  Client& second = *clients[1];
  ASSERT_TRUE(first.Send(ResultMessage(1, 1, Pattern(1200000, 1.0f))).ok());
  ASSERT_TRUE(Eventually([&] { return first.stats().uploads_granted == 1; }));
  ASSERT_TRUE(second.Send(ResultMessage(1, 2, Pattern(1200000, 2.0f))).ok());
  ASSERT_TRUE(Eventually([&] { return (*server)->stats().uploads_offered == 2; }));
  // The owner takes nothing for 2.5 peer timeouts: the first result waits in the event queue, so
  // the second upload waits for its grant, and heartbeats keep both sides alive.
  const uint64_t heartbeats = second.stats().heartbeats_sent;
  // (Waiting on, should a loaded machine send the heartbeats late, until five have gone.)
  const auto until = std::chrono::steady_clock::now() + milliseconds(1500);
  auto waiting = [&] {
    const auto now = std::chrono::steady_clock::now();
    return now < until ||
           (now < until + kWait && second.stats().heartbeats_sent - heartbeats < 5);
  };
  while (waiting()) {
    for (auto& c : clients) EXPECT_FALSE(AnyEvent(*c, milliseconds(20)).has_value());
  }
  EXPECT_EQ(second.stats().uploads_granted, 0u);
  EXPECT_GE(second.stats().heartbeats_sent - heartbeats, 5u);
  EXPECT_EQ((*server)->peers(), (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ((*server)->stats().uploads_granted, 1u);

  // The second client gives up on that connection: its held upload is dropped with it, and its
  // offer leaves the coordinator's queue when it says Hello again.
  const uint64_t dropped = second.stats().dropped;
  const uint64_t hellos = (*server)->peer_stats("second").messages_received;
  ASSERT_TRUE(second.Reconnect().ok());
  EXPECT_GE(second.stats().dropped - dropped, 5u);  // the five held chunks
  ASSERT_TRUE(second.Send(HelloMessage()).ok());
  ASSERT_TRUE(Eventually(
      [&] { return (*server)->peer_stats("second").messages_received == hellos + 1; }));
  // Only now does the owner take the first result: a slot is free, and nothing is waiting for it.
  std::vector<TransportEvent> seen;
  std::optional<TransportEvent> result = WaitFor(**server, Kind::kMessage, kWait, &seen);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->peer, "first");
  EXPECT_EQ(result->message.envelope.task_id, 1u);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait, &seen).has_value());
  ASSERT_TRUE(WaitFor(**server, Kind::kMessage, kWait, &seen).has_value());  // the Hello
  ASSERT_TRUE((*server)->Send("second", Make(Welcome{0, 100, 600})).ok());
  ASSERT_TRUE(WaitFor(second, Kind::kMessage, kWait).has_value());
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ((*server)->stats().uploads_granted, 1u);
  ASSERT_TRUE(second.Send(ResultMessage(1, 3, Pattern(1200000, 3.0f))).ok());
  std::optional<TransportEvent> got = WaitFor(**server, Kind::kMessage, kWait, &seen);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->peer, "second");
  EXPECT_EQ(got->message.envelope.task_id, 3u);  // never task 2: dropped with the connection
  for (const TransportEvent& e : seen) EXPECT_NE(e.kind, Kind::kPeerLost);
  EXPECT_EQ(second.stats().rejected, 0u);
  EXPECT_EQ((*server)->stats().uploads_granted, 2u);
  EXPECT_EQ((*server)->stats().reassemblies, 0u);
}

}  // namespace
}  // namespace tandem::wire

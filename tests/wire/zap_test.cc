// The ZAP handler (wire/zap.h) through a CURVE transport: the identity comes from the client's
// key (the allow-list NAME), a key not on the list gets nowhere, and two Servers in one ZeroMQ
// context share one handler, each with its own list.
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

class ZapTest : public tandem::testing::TempDirTest {};

TEST_F(ZapTest, TcpCurveRoundTripIdentityComesFromTheKey) {
  CurveSetup keys;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(keys.ServerOptions());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string endpoint = (*server)->endpoint();
  EXPECT_EQ(endpoint.rfind("tcp://127.0.0.1:", 0), 0u);
  EXPECT_NE(endpoint, "tcp://127.0.0.1:0");  // the real port
  TransportOptions co = keys.ClientOptions(endpoint, keys.client1);
  co.identity = "client-0";  // a claimed identity is ignored under CURVE
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  Join(**server, **client, "client-1");
  RoundTrip(**server, **client, "client-1", 2);
}

// One key, two sessions: the round session is the key's NAME, the service session the NAME plus
// ".serve"; both stay live side by side and each gets its own traffic.
TEST_F(ZapTest, ServiceSessionOfAKeyIsItsNamePlusServe) {
  CurveSetup keys;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(keys.ServerOptions());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string endpoint = (*server)->endpoint();
  StatusOr<std::unique_ptr<Client>> round =
      Client::Connect(keys.ClientOptions(endpoint, keys.client0));
  ASSERT_TRUE(round.ok()) << round.status().ToString();
  Join(**server, **round, "client-0");
  TransportOptions so = keys.ClientOptions(endpoint, keys.client0);
  so.service_session = true;
  so.identity = "client-1";  // a claimed identity is ignored under CURVE, suffix or not
  StatusOr<std::unique_ptr<Client>> service = Client::Connect(so);
  ASSERT_TRUE(service.ok()) << service.status().ToString();
  Join(**server, **service, "client-0.serve");
  RoundTrip(**server, **service, "client-0.serve", 3);
  RoundTrip(**server, **round, "client-0", 4);
  EXPECT_EQ((*server)->peers(), (std::vector<std::string>{"client-0", "client-0.serve"}));
}

TEST_F(ZapTest, KeyNotOnTheAllowListGetsNowhere) {
  CurveSetup keys;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(keys.ServerOptions());
  ASSERT_TRUE(server.ok());
  TransportOptions co = keys.ClientOptions((*server)->endpoint(), keys.stranger);
  co.identity = "client-0";
  co.peer_timeout_ms = 800;
  StatusOr<std::unique_ptr<Client>> stranger = Client::Connect(co);
  ASSERT_TRUE(stranger.ok());
  ASSERT_TRUE((*stranger)->Send(HelloMessage()).ok());
  // Nothing reaches the server, and the stranger hears nothing but its own loss of contact.
  EXPECT_FALSE(AnyEvent(**server, milliseconds(1200)).has_value());
  std::vector<TransportEvent> others;
  EXPECT_TRUE(WaitFor(**stranger, Kind::kPeerLost, kWait, &others).has_value());
  EXPECT_TRUE(others.empty());
  EXPECT_EQ((*server)->stats().frames_received, 0u);
  EXPECT_EQ((*stranger)->stats().frames_received, 0u);
  EXPECT_TRUE((*server)->peers().empty());
  // A listed client still gets in.
  StatusOr<std::unique_ptr<Client>> good =
      Client::Connect(keys.ClientOptions((*server)->endpoint(), keys.client0));
  ASSERT_TRUE(good.ok());
  Join(**server, **good, "client-0");
}

TEST_F(ZapTest, TwoCurveServersShareOneContextEachWithItsOwnList) {
  SharedContext ctx;
  CurveSetup a;
  CurveSetup b;
  StatusOr<std::unique_ptr<Server>> sa = Server::Bind(a.ServerOptions(ctx.ctx));
  ASSERT_TRUE(sa.ok()) << sa.status().ToString();
  StatusOr<std::unique_ptr<Server>> sb = Server::Bind(b.ServerOptions(ctx.ctx));
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  StatusOr<std::unique_ptr<Client>> ca = Client::Connect(a.ClientOptions((*sa)->endpoint(), a.client0));
  ASSERT_TRUE(ca.ok());
  Join(**sa, **ca, "client-0");
  // a's client0 key is not on b's list, even with b's server key.
  TransportOptions cross = b.ClientOptions((*sb)->endpoint(), a.client0);
  StatusOr<std::unique_ptr<Client>> cb = Client::Connect(cross);
  ASSERT_TRUE(cb.ok());
  ASSERT_TRUE((*cb)->Send(HelloMessage()).ok());
  EXPECT_FALSE(AnyEvent(**sb, milliseconds(600)).has_value());
  StatusOr<std::unique_ptr<Client>> good = Client::Connect(b.ClientOptions((*sb)->endpoint(), b.client1));
  ASSERT_TRUE(good.ok());
  Join(**sb, **good, "client-1");
  // The first server goes away; the second keeps authenticating through the shared handler.
  ca->reset();
  sa->reset();
  StatusOr<std::unique_ptr<Client>> late = Client::Connect(b.ClientOptions((*sb)->endpoint(), b.client0));
  ASSERT_TRUE(late.ok());
  Join(**sb, **late, "client-0");
  late->reset();
  good->reset();
  cb->reset();
  sb->reset();
}

}  // namespace
}  // namespace tandem::wire

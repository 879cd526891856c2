// The [federation] transport decision: CURVE follows the endpoint a process binds or connects to,
// not federation.transport (a `--bind tcp://...` on an ipc config once ran in the clear). A tcp://
// endpoint means CURVE unless the config says `federation.curve = false`, which warns; tcp without
// keys is an error saying how to make them or opt out; ipc:// and inproc:// are unaffected. And a
// client's coordinator address is resolved before it connects (an unresolvable host once looked
// like a lost coordinator for 600 s).
#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>

#include "core/config.h"
#include "core/logging.h"
#include "tests/temp_dir.h"
#include "wire/curve.h"
#include "wire/transport_config.h"

namespace tandem::wire {
namespace {

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class TransportConfigTest : public tandem::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    sink_ = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
    GetLogger("wire")->sinks().push_back(sink_);
  }
  void TearDown() override {
    auto& sinks = GetLogger("wire")->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
    TempDirTest::TearDown();
  }

  // The transport config of `federation` (the [federation] section's lines), keys in Path("keys").
  TransportConfig Read(const std::string& federation) {
    StatusOr<Config> config = Config::Parse("name = \"t\"\n[federation]\n" + federation + "\n" +
                                            "keys_dir = \"" + Path("keys") + "\"\n");
    TANDEM_CHECK(config.ok());
    StatusOr<TransportConfig> transport = TransportConfigFromConfig(*config, Path("run"));
    TANDEM_CHECK(transport.ok());
    return *transport;
  }
  void MakeKeys() { ASSERT_TRUE(Keygen(Path("keys"), 3, false).ok()); }
  std::string Log() {
    GetLogger("wire")->flush();
    return log_.str();
  }

  std::ostringstream log_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

// The reported defect: `tandem coordinator quickstart.toml --bind tcp://0.0.0.0:5555 --keys keys`
// (an ipc config) bound tcp with CURVE off.
TEST_F(TransportConfigTest, TcpBindOnAnIpcConfigUsesCurve) {
  MakeKeys();
  TransportConfig config = Read("transport = \"ipc\"");
  EXPECT_FALSE(config.curve_setting.has_value());
  EXPECT_TRUE(CurveFor(config, "tcp://0.0.0.0:5555"));
  StatusOr<TransportOptions> server = ServerTransportOptions(config, "tcp://0.0.0.0:5555", 7);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_TRUE(server->curve);
  EXPECT_EQ(server->allow_list.name_by_key.size(), 3u);
  EXPECT_FALSE(server->own_keys.secret_key.empty());
  EXPECT_TRUE(Contains(Log(), "CURVE on for tcp://0.0.0.0:5555")) << Log();
  EXPECT_FALSE(Contains(Log(), "in the clear")) << Log();
}

TEST_F(TransportConfigTest, TcpConnectOnAnIpcConfigUsesCurve) {
  MakeKeys();
  TransportConfig config = Read("transport = \"ipc\"");
  StatusOr<TransportOptions> client = ClientTransportOptions(config, "tcp://node01:5555", 2);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_TRUE(client->curve);
  EXPECT_FALSE(client->own_keys.secret_key.empty());
  EXPECT_FALSE(client->server_public_key.empty());
}

TEST_F(TransportConfigTest, TcpConfigWithoutCurveKeyUsesCurve) {
  MakeKeys();
  TransportConfig config = Read("transport = \"tcp\"");
  EXPECT_TRUE(config.curve);
  StatusOr<TransportOptions> server = ServerTransportOptions(config, config.endpoint, 1);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_TRUE(server->curve);
  StatusOr<TransportOptions> client = ClientTransportOptions(config, "tcp://127.0.0.1:4000", 0);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_TRUE(client->curve);
}

TEST_F(TransportConfigTest, CurveFalseOnTcpIsOffWithAWarning) {
  // No keys at all: an explicit opt-out needs none.
  TransportConfig config = Read("transport = \"tcp\"\ncurve = false");
  ASSERT_TRUE(config.curve_setting.has_value());
  EXPECT_FALSE(*config.curve_setting);
  StatusOr<TransportOptions> server = ServerTransportOptions(config, "tcp://0.0.0.0:5555", 1);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_FALSE(server->curve);
  const std::string server_log = Log();
  EXPECT_TRUE(Contains(server_log, "[warning]")) << server_log;
  EXPECT_TRUE(Contains(server_log, "federation.curve = false")) << server_log;
  EXPECT_TRUE(Contains(server_log, "tcp://0.0.0.0:5555 is in the clear")) << server_log;

  log_.str("");
  StatusOr<TransportOptions> client = ClientTransportOptions(config, "tcp://node01:5555", 0);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_FALSE(client->curve);
  EXPECT_EQ(client->identity, "client-0");
  EXPECT_TRUE(Contains(Log(), "tcp://node01:5555 is in the clear")) << Log();
}

TEST_F(TransportConfigTest, CurveFalseOnAnIpcConfigBoundToTcpIsOffWithAWarning) {
  TransportConfig config = Read("transport = \"ipc\"\ncurve = false");
  StatusOr<TransportOptions> server = ServerTransportOptions(config, "tcp://127.0.0.1:0", 1);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_FALSE(server->curve);
  EXPECT_TRUE(Contains(Log(), "in the clear")) << Log();
}

TEST_F(TransportConfigTest, TcpWithoutKeysFailsSayingHowToMakeThemOrOptOut) {
  TransportConfig config = Read("transport = \"ipc\"");
  StatusOr<TransportOptions> server = ServerTransportOptions(config, "tcp://0.0.0.0:5555", 1);
  ASSERT_FALSE(server.ok()) << "a tcp endpoint without keys was accepted";
  const std::string& s = server.status().message();
  EXPECT_TRUE(Contains(s, "tcp://0.0.0.0:5555")) << s;
  EXPECT_TRUE(Contains(s, "coordinator.key")) << s;
  EXPECT_TRUE(Contains(s, "tandem keygen --out " + Path("keys") + " --clients N")) << s;
  EXPECT_TRUE(Contains(s, "federation.curve = false")) << s;

  StatusOr<TransportOptions> client = ClientTransportOptions(config, "tcp://node01:5555", 4);
  ASSERT_FALSE(client.ok()) << "a tcp endpoint without keys was accepted";
  const std::string& c = client.status().message();
  EXPECT_TRUE(Contains(c, "client 4")) << c;
  EXPECT_TRUE(Contains(c, "client-4.key")) << c;
  EXPECT_TRUE(Contains(c, "tandem keygen --out DIR --clients N")) << c;
  EXPECT_TRUE(Contains(c, "federation.curve = false")) << c;
}

TEST_F(TransportConfigTest, TcpWithKeysButNoAllowListFails) {
  MakeKeys();
  std::filesystem::remove(Path("keys/allow-list.txt"));
  StatusOr<TransportOptions> server =
      ServerTransportOptions(Read("transport = \"tcp\""), "tcp://127.0.0.1:0", 1);
  ASSERT_FALSE(server.ok());
  EXPECT_TRUE(Contains(server.status().message(), "allow-list.txt")) << server.status().message();
  EXPECT_TRUE(Contains(server.status().message(), "tandem keygen")) << server.status().message();
}

TEST_F(TransportConfigTest, IpcAndInprocAreUnaffected) {
  // No keys: neither needs any, and neither warns.
  TransportConfig ipc = Read("transport = \"ipc\"");
  StatusOr<TransportOptions> server = ServerTransportOptions(ipc, ipc.endpoint, 1);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_FALSE(server->curve);
  StatusOr<TransportOptions> client = ClientTransportOptions(ipc, ipc.endpoint, 1);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_FALSE(client->curve);
  EXPECT_EQ(client->identity, "client-1");

  TransportConfig inproc = Read("transport = \"inproc\"");
  EXPECT_EQ(inproc.endpoint, "inproc://tandem-t");
  server = ServerTransportOptions(inproc, inproc.endpoint, 1);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_FALSE(server->curve);
  client = ClientTransportOptions(inproc, inproc.endpoint, 0);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_FALSE(client->curve);
  EXPECT_FALSE(Contains(Log(), "in the clear")) << Log();

  // A tcp config whose process is pointed at an ipc socket follows the endpoint too.
  EXPECT_FALSE(CurveFor(Read("transport = \"tcp\""), "ipc:///tmp/x.sock"));
  // An explicit setting is honoured on ipc as before.
  EXPECT_TRUE(CurveFor(Read("transport = \"ipc\"\ncurve = true"), "ipc:///tmp/x.sock"));
}

TEST(CheckCoordinatorAddressTest, UnresolvableHostIsAnErrorNamingIt) {
  Status s = CheckCoordinatorAddress("tcp://no-such-node.invalid:5555");
  ASSERT_FALSE(s.ok()) << "an unresolvable host passed";
  EXPECT_TRUE(Contains(s.message(), "'no-such-node.invalid'")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "tcp://no-such-node.invalid:5555")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "cannot resolve")) << s.message();
}

TEST(CheckCoordinatorAddressTest, ResolvableAddressesPass) {
  for (const char* endpoint :
       {"tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:65535",
        "tcp://127.0.0.1:0;127.0.0.1:5555"}) {
    Status s = CheckCoordinatorAddress(endpoint);
    EXPECT_TRUE(s.ok()) << endpoint << ": " << s.ToString();
  }
}

TEST(CheckCoordinatorAddressTest, MalformedTcpEndpointsAreErrors) {
  for (const char* endpoint : {"tcp://node01", "tcp://:5555", "tcp://node01:port",
                               "tcp://node01:70000", "tcp://node01:", "tcp://[::1]5555",
                               "tcp://127.0.0.1:*"}) {
    Status s = CheckCoordinatorAddress(endpoint);
    EXPECT_FALSE(s.ok()) << endpoint;
    EXPECT_TRUE(Contains(s.message(), endpoint)) << s.message();
  }
}

TEST(CheckCoordinatorAddressTest, IpcAndInprocAreNotChecked) {
  // The coordinator may create its socket later.
  EXPECT_TRUE(CheckCoordinatorAddress("ipc:///nonexistent/dir/coordinator.sock").ok());
  EXPECT_TRUE(CheckCoordinatorAddress("inproc://tandem-x").ok());
}

}  // namespace
}  // namespace tandem::wire

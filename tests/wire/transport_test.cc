// The ZeroMQ transport: round trips over inproc, ipc and tcp with CURVE; a 64 MiB message; liveness
// (heartbeats, silent peers, Bye); rejoin, restart and Reconnect(); the allow-list; hostile raw
// frames (truncated, oversized, wrong shape, NaN, replayed, stale) from a raw DEALER; queueing
// under a full high-water mark; the frame encoder the transport uses; Broadcast (one shared
// encoding for every peer); upload flow control (offers, grants, one reassembly at a time, a dead
// uploader's slot, chunks without a grant, waiting past the peer timeout).
#include <zmq.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/rng.h"
#include "core/timer.h"
#include "tests/temp_dir.h"
#include "wire/chunk.h"
#include "wire/curve.h"
#include "wire/message.h"
#include "wire/transport.h"

namespace tandem::wire {
namespace {

using std::chrono::milliseconds;
using Kind = TransportEvent::Kind;

constexpr uint64_t kRun = 0x7A11DE;
constexpr auto kWait = milliseconds(5000);  // upper bound for anything that should happen

TransportOptions BaseOptions(const std::string& endpoint) {
  TransportOptions o;
  o.endpoint = endpoint;
  o.run_id = kRun;
  o.heartbeat_interval_ms = 100;
  o.peer_timeout_ms = 2000;
  return o;
}

Message Make(Body body, uint64_t round = 0, uint64_t task = 0) {
  Message m;
  m.envelope.round = round;
  m.envelope.task_id = task;
  m.body = std::move(body);
  return m;
}

Message HelloMessage() { return Make(Hello{"tandem-test/1", {"fedavg.train"}}); }
Message WelcomeMessage(uint32_t index = 0) { return Make(Welcome{index, 100, 2000}); }

Message ResultMessage(uint64_t round, uint64_t task, const std::vector<float>& values) {
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("delta", {values.size()}, values));
  r.weight = 2.0;
  r.metrics["loss"] = 0.5;
  return Make(std::move(r), round, task);
}

Message AssignMessage(uint64_t round, uint64_t task, const std::vector<float>& values) {
  TaskAssign a;
  a.kind = "fedavg.train";
  a.params["lr"] = 0.1;
  a.tensors.push_back(Tensor::Float32("weights", {values.size()}, values));
  return Make(std::move(a), round, task);
}

// The next event of `kind` within `timeout`; events of other kinds are collected in `others`.
template <typename T>
std::optional<TransportEvent> WaitFor(T& transport, Kind kind, milliseconds timeout,
                                      std::vector<TransportEvent>* others = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline -
                                                                std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    StatusOr<std::optional<TransportEvent>> event = transport.Receive(left);
    EXPECT_TRUE(event.ok()) << event.status().ToString();
    if (!event.ok() || !event->has_value()) return std::nullopt;
    if ((*event)->kind == kind) return std::move(**event);
    if (others) others->push_back(std::move(**event));
  }
}

// No event at all for `window`.
template <typename T>
std::optional<TransportEvent> AnyEvent(T& transport, milliseconds window) {
  StatusOr<std::optional<TransportEvent>> event = transport.Receive(window);
  EXPECT_TRUE(event.ok());
  return event.ok() ? *event : std::nullopt;
}

// Hello -> kPeerJoined + Hello -> Welcome -> the client's kPeerJoined + Welcome.
void Join(Server& server, Client& client, const std::string& expected_identity,
          const Message& welcome_message = WelcomeMessage()) {
  ASSERT_TRUE(client.Send(HelloMessage()).ok());
  std::optional<TransportEvent> joined = WaitFor(server, Kind::kPeerJoined, kWait);
  ASSERT_TRUE(joined.has_value()) << "no kPeerJoined for " << expected_identity;
  EXPECT_EQ(joined->peer, expected_identity);
  std::optional<TransportEvent> hello = WaitFor(server, Kind::kMessage, kWait);
  ASSERT_TRUE(hello.has_value());
  EXPECT_EQ(hello->message.type(), MessageType::kHello);
  ASSERT_TRUE(server.Send(expected_identity, welcome_message).ok());
  std::optional<TransportEvent> welcome = WaitFor(client, Kind::kMessage, kWait);
  ASSERT_TRUE(welcome.has_value());
  ASSERT_EQ(welcome->message.type(), MessageType::kWelcome);
  EXPECT_EQ(welcome->message.envelope.run_id, kRun);
}

// A task one way and a result back, checked field by field.
void RoundTrip(Server& server, Client& client, const std::string& identity, uint64_t round) {
  const std::vector<float> weights = {1.0f, -2.0f, 0.5f};
  ASSERT_TRUE(server.Send(identity, AssignMessage(round, 7, weights)).ok());
  std::optional<TransportEvent> task = WaitFor(client, Kind::kMessage, kWait);
  ASSERT_TRUE(task.has_value());
  ASSERT_EQ(task->message.type(), MessageType::kTaskAssign);
  EXPECT_EQ(task->peer, "coordinator");
  EXPECT_EQ(task->message.envelope.round, round);
  EXPECT_EQ(task->message.envelope.task_id, 7u);
  EXPECT_EQ(std::get<TaskAssign>(task->message.body).tensors[0].ToFloat32(), weights);

  const std::vector<float> delta = {0.25f, 0.125f};
  ASSERT_TRUE(client.Send(ResultMessage(round, 7, delta)).ok());
  std::optional<TransportEvent> result = WaitFor(server, Kind::kMessage, kWait);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->peer, identity);
  ASSERT_EQ(result->message.type(), MessageType::kTaskResult);
  EXPECT_EQ(result->message.envelope.run_id, kRun);  // learned from the Welcome
  EXPECT_EQ(result->message.envelope.round, round);
  const TaskResult& r = std::get<TaskResult>(result->message.body);
  EXPECT_EQ(r.tensors[0].ToFloat32(), delta);
  EXPECT_EQ(r.weight, 2.0);
}

struct SharedContext {
  void* ctx = zmq_ctx_new();
  ~SharedContext() { zmq_ctx_term(ctx); }
};

// A raw DEALER, for frames the transport would never produce.
class RawPeer {
 public:
  RawPeer(void* ctx, const std::string& endpoint, const std::string& identity, int rcvhwm = 1000) {
    socket_ = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(socket_, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(socket_, ZMQ_RCVHWM, &rcvhwm, sizeof(rcvhwm));
    zmq_setsockopt(socket_, ZMQ_ROUTING_ID, identity.data(), identity.size());
    int ivl = 20;
    zmq_setsockopt(socket_, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl));
    EXPECT_EQ(zmq_connect(socket_, endpoint.c_str()), 0);
  }
  ~RawPeer() { zmq_close(socket_); }
  void Send(std::string_view bytes) {
    ASSERT_EQ(zmq_send(socket_, bytes.data(), bytes.size(), 0), static_cast<int>(bytes.size()));
  }
  void Send(Message m, uint64_t sequence, uint64_t run = kRun) {
    m.envelope.sequence = sequence;
    m.envelope.run_id = run;
    StatusOr<std::string> bytes = EncodeMessage(m);
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    Send(*bytes);
  }
  // The next non-heartbeat message, decoded (chunks are not expected here).
  std::optional<Message> Receive(milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::optional<std::string> bytes = NextFrame(deadline)) {
      StatusOr<Message> m = DecodeMessage(*bytes);
      EXPECT_TRUE(m.ok()) << m.status().ToString();
      if (m.ok() && m->type() != MessageType::kHeartbeat) return *m;
    }
    return std::nullopt;
  }
  // The next frame of `type` (e.g. a ChunkGrant), raw; frames of other types are discarded.
  std::optional<std::string> ReceiveFrameOf(MessageType type, milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::optional<std::string> bytes = NextFrame(deadline)) {
      StatusOr<MessageType> got = PeekType(*bytes);
      if (got.ok() && *got == type) return bytes;
    }
    return std::nullopt;
  }
  void* socket() { return socket_; }

 private:
  // The next frame's bytes, or nullopt once `deadline` has passed.
  std::optional<std::string> NextFrame(std::chrono::steady_clock::time_point deadline) {
    while (std::chrono::steady_clock::now() < deadline) {
      zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
      const auto left = std::chrono::duration_cast<milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (zmq_poll(&item, 1, std::max<long>(1, left.count())) <= 0) continue;
      zmq_msg_t msg;
      zmq_msg_init(&msg);
      zmq_msg_recv(&msg, socket_, 0);
      std::string bytes(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
      zmq_msg_close(&msg);
      return bytes;
    }
    return std::nullopt;
  }

  void* socket_;
};

std::string Encoded(const Message& m) {
  StatusOr<std::string> bytes = EncodeMessage(m);
  TANDEM_CHECK(bytes.ok());
  return *bytes;
}

// Replaces the first occurrence of `from` in `bytes` (which must hold it).
std::string Patch(std::string bytes, const std::string& from, const std::string& to) {
  const size_t at = bytes.find(from);
  TANDEM_CHECK(at != std::string::npos && from.size() == to.size());
  bytes.replace(at, from.size(), to);
  return bytes;
}

std::string FloatBytes(float f) {
  std::string out(4, '\0');
  std::memcpy(out.data(), &f, 4);
  return out;
}

class TransportTest : public tandem::testing::TempDirTest {};

// ---------------------------------------------------------------------------------------------

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

struct CurveSetup {
  CurveKeyPair server = *GenerateCurveKeyPair();
  CurveKeyPair client0 = *GenerateCurveKeyPair();
  CurveKeyPair client1 = *GenerateCurveKeyPair();
  CurveKeyPair stranger = *GenerateCurveKeyPair();
  AllowList list;
  CurveSetup() {
    list.name_by_key[client0.public_key] = "client-0";
    list.name_by_key[client1.public_key] = "client-1";
  }
  TransportOptions ServerOptions(void* ctx = nullptr) const {
    TransportOptions o = BaseOptions("tcp://127.0.0.1:0");
    o.curve = true;
    o.own_keys = server;
    o.allow_list = list;
    o.zmq_context = ctx;
    return o;
  }
  TransportOptions ClientOptions(const std::string& endpoint, const CurveKeyPair& keys) const {
    TransportOptions o = BaseOptions(endpoint);
    o.curve = true;
    o.own_keys = keys;
    o.server_public_key = server.public_key;
    return o;
  }
};

TEST_F(TransportTest, TcpCurveRoundTripIdentityComesFromTheKey) {
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

TEST_F(TransportTest, KeyNotOnTheAllowListGetsNowhere) {
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

TEST_F(TransportTest, TwoCurveServersShareOneContextEachWithItsOwnList) {
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
  // Both owners are "busy" for 2.5 timeouts: no event at all may appear.
  const auto deadline = std::chrono::steady_clock::now() + milliseconds(1500);
  std::vector<TransportEvent> server_events, client_events;
  while (std::chrono::steady_clock::now() < deadline) {
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

TEST_F(TransportTest, SilentPeerIsLostWithinTheTimeoutAndByeEndsASession) {
  TransportOptions so = BaseOptions("tcp://127.0.0.1:0");
  so.peer_timeout_ms = 400;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  TransportOptions co = BaseOptions((*server)->endpoint());
  co.identity = "gone";
  StatusOr<std::unique_ptr<Client>> client = Client::Connect(co);
  ASSERT_TRUE(client.ok());
  Join(**server, **client, "gone");
  client->reset();  // no Bye: silence
  Stopwatch watch;
  std::optional<TransportEvent> lost = WaitFor(**server, Kind::kPeerLost, kWait);
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->peer, "gone");
  EXPECT_LT(watch.Seconds(), 0.4 + 1.0);  // the timeout, plus slack for a loaded machine
  EXPECT_TRUE((*server)->peers().empty());
  EXPECT_EQ((*server)->Send("gone", WelcomeMessage()).code(), StatusCode::kNotFound);

  co.identity = "polite";
  StatusOr<std::unique_ptr<Client>> polite = Client::Connect(co);
  ASSERT_TRUE(polite.ok());
  Join(**server, **polite, "polite");
  ASSERT_TRUE((*polite)->Send(Make(Bye{"done"})).ok());
  std::optional<TransportEvent> bye = WaitFor(**server, Kind::kPeerLost, kWait);
  ASSERT_TRUE(bye.has_value());
  EXPECT_EQ(bye->peer, "polite");
  EXPECT_EQ(std::get<Bye>(bye->message.body).reason, "done");
  EXPECT_TRUE((*server)->peers().empty());
}

TEST_F(TransportTest, ClientReportsASilentCoordinatorLost) {
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
  Stopwatch watch;
  ASSERT_TRUE(WaitFor(**client, Kind::kPeerLost, kWait).has_value());
  EXPECT_LT(watch.Seconds(), 0.5 + 1.0);
  EXPECT_FALSE(AnyEvent(**client, milliseconds(700)).has_value());  // reported once
}

TEST_F(TransportTest, RestartedClientRejoinsWithTheSameIdentity) {
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

TEST_F(TransportTest, ReconnectStartsAFreshSession) {
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

TEST_F(TransportTest, HostileFramesAreRejectedCountedAndTheSessionSurvives) {
  TransportOptions so = BaseOptions("tcp://127.0.0.1:0");
  so.peer_timeout_ms = 5000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  RawPeer raw(ctx.ctx, (*server)->endpoint(), "raw-0");
  raw.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  ASSERT_TRUE(WaitFor(**server, Kind::kMessage, kWait).has_value());
  ASSERT_TRUE((*server)->Send("raw-0", WelcomeMessage()).ok());
  std::optional<Message> welcome = raw.Receive(kWait);
  ASSERT_TRUE(welcome.has_value());
  EXPECT_EQ(welcome->type(), MessageType::kWelcome);

  uint64_t expected_rejected = 0;
  auto expect_rejected = [&](const std::string& what, std::optional<ErrorCode> reply) {
    ++expected_rejected;
    if (reply) {
      std::optional<Message> error = raw.Receive(kWait);
      ASSERT_TRUE(error.has_value()) << what;
      ASSERT_EQ(error->type(), MessageType::kError) << what;
      EXPECT_EQ(std::get<Error>(error->body).code, *reply) << what;
    }
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while ((*server)->stats().rejected < expected_rejected &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(5));
    }
    EXPECT_EQ((*server)->stats().rejected, expected_rejected) << what;
  };

  const std::vector<float> good = {1.0f, 2.0f, 3.0f, 4.0f};
  Message result = ResultMessage(1, 5, good);
  result.envelope.run_id = kRun;

  // Truncated.
  result.envelope.sequence = 2;
  const std::string whole = Encoded(result);
  raw.Send(std::string_view(whole).substr(0, whole.size() - 3));
  expect_rejected("truncated", ErrorCode::kBadMessage);
  // Wrong shape: shape [4] rewritten to [5] for 4 floats.
  raw.Send(Patch(whole, std::string("shape\x91\x04", 7), std::string("shape\x91\x05", 7)));
  expect_rejected("wrong shape", ErrorCode::kBadMessage);
  // NaN.
  raw.Send(Patch(whole, FloatBytes(2.0f), FloatBytes(std::nanf(""))));
  expect_rejected("NaN", ErrorCode::kBadMessage);
  // Oversized for one frame: 5 MiB unchunked (above the 4 MiB threshold).
  {
    Message big = ResultMessage(1, 5, std::vector<float>(5 * kMiB / 4, 1.0f));
    big.envelope.run_id = kRun;
    big.envelope.sequence = 2;
    raw.Send(Encoded(big));
    expect_rejected("unchunked 5 MiB", ErrorCode::kBadMessage);
  }
  // Not one of those changed the session: sequence 2 is still fresh.
  raw.Send(whole);
  std::optional<TransportEvent> accepted = WaitFor(**server, Kind::kMessage, kWait);
  ASSERT_TRUE(accepted.has_value());
  EXPECT_EQ(accepted->message.envelope.sequence, 2u);
  EXPECT_EQ(std::get<TaskResult>(accepted->message.body).tensors[0].ToFloat32(), good);
  // Replayed.
  raw.Send(whole);
  expect_rejected("replay", ErrorCode::kStale);
  // Stale round.
  (*server)->AdvanceRound(5);
  raw.Send(ResultMessage(3, 5, good), 3);
  expect_rejected("stale round", ErrorCode::kStale);
  // A heartbeat from an old round is not stale, and is not delivered.
  raw.Send(Make(Heartbeat{}, 1), 4);
  // The session still works.
  raw.Send(ResultMessage(5, 6, good), 5);
  std::optional<TransportEvent> fresh = WaitFor(**server, Kind::kMessage, kWait);
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->message.envelope.round, 5u);
  EXPECT_EQ(fresh->message.envelope.sequence, 5u);
  EXPECT_EQ((*server)->stats().rejected, expected_rejected);
  EXPECT_GE((*server)->stats().heartbeats_received, 1u);

  // Above ZMQ_MAXMSGSIZE: libzmq drops the frame and the connection (uncounted: it never reaches
  // the transport); the DEALER reconnects with the same routing id and the session goes on.
  raw.Send(std::string(kMaxFrameBytes + 1024, 'x'));
  uint64_t sequence = 6;
  std::optional<TransportEvent> after;
  for (int attempt = 0; attempt < 50 && !after; ++attempt) {
    raw.Send(ResultMessage(5, 7, good), sequence++);
    after = WaitFor(**server, Kind::kMessage, milliseconds(100));
  }
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->peer, "raw-0");
  // Retries still in flight arrive too; all of them from raw-0, none refused.
  while (std::optional<TransportEvent> late = AnyEvent(**server, milliseconds(300))) {
    EXPECT_EQ(late->kind, Kind::kMessage);
    EXPECT_EQ(late->peer, "raw-0");
  }
  EXPECT_EQ((*server)->stats().rejected, expected_rejected);

  // A peer that never said Hello is told so, and nothing is delivered.
  RawPeer stranger(ctx.ctx, (*server)->endpoint(), "raw-1");
  stranger.Send(ResultMessage(5, 1, good), 1);
  std::optional<Message> not_joined = stranger.Receive(kWait);
  ASSERT_TRUE(not_joined.has_value());
  ASSERT_EQ(not_joined->type(), MessageType::kError);
  EXPECT_EQ(std::get<Error>(not_joined->body).code, ErrorCode::kNotJoined);
  EXPECT_FALSE(AnyEvent(**server, milliseconds(200)).has_value());
}

TEST_F(TransportTest, FullQueuesDelayFramesButNeverLoseThem) {
  TransportOptions so = BaseOptions("tcp://127.0.0.1:0");
  so.high_water_mark = 2;
  so.peer_timeout_ms = 10000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  RawPeer slow(ctx.ctx, (*server)->endpoint(), "slow", /*rcvhwm=*/1);
  slow.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  // 80 unchunked messages of half a MiB while the peer reads nothing: far beyond ZeroMQ's queues
  // and the socket buffers.
  constexpr int kMessages = 80;
  Stopwatch watch;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE((*server)->Send("slow", AssignMessage(1, i + 1, std::vector<float>(kChunkThresholdBytes / 8, i))).ok());
  }
  EXPECT_LT(watch.Seconds(), 2.0);  // Send queues; it does not wait for the network
  std::this_thread::sleep_for(milliseconds(300));
  uint64_t last_sequence = 0;
  for (int i = 0; i < kMessages; ++i) {
    std::optional<Message> m = slow.Receive(kWait);
    ASSERT_TRUE(m.has_value()) << "message " << i;
    ASSERT_EQ(m->type(), MessageType::kTaskAssign);
    EXPECT_EQ(m->envelope.task_id, static_cast<uint64_t>(i + 1));
    EXPECT_GT(m->envelope.sequence, last_sequence);
    last_sequence = m->envelope.sequence;
  }
  EXPECT_EQ((*server)->stats().dropped, 0u);
  EXPECT_GT((*server)->stats().retries, 0u);  // the full queue was met, and waited out
}

TEST_F(TransportTest, SendsToAVanishedPeerAreDroppedWithoutBlocking) {
  TransportOptions so = BaseOptions("tcp://127.0.0.1:0");
  so.peer_timeout_ms = 10000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  {
    SharedContext ctx;
    RawPeer raw(ctx.ctx, (*server)->endpoint(), "vanishing");
    raw.Send(HelloMessage(), 1, 0);
    ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  }  // the connection closes; the session lives on until its timeout
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while ((*server)->stats().dropped == 0 && std::chrono::steady_clock::now() < deadline) {
    Stopwatch watch;
    EXPECT_TRUE((*server)->Send("vanishing", AssignMessage(1, 1, {1.0f})).ok());
    EXPECT_LT(watch.Seconds(), 0.1);
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_GT((*server)->stats().dropped, 0u);
  EXPECT_EQ((*server)->peers(), std::vector<std::string>{"vanishing"});
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

// ---- Broadcast and upload flow control. ----

// The process's resident memory, from /proc/self/status.
size_t ResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6)) * 1024;
  }
  return 0;
}

// Waits until `done` holds, up to kWait.
template <typename F>
bool Eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

std::vector<float> Pattern(size_t n, float seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = seed + static_cast<float>(i % 977) * 0.125f;
  return v;
}

// The frames a sender would produce for `m`, and the offer that announces them.
struct Upload {
  std::vector<std::string> frames;
  ChunkOffer offer;
};
Upload Frames(const Message& m) {
  Upload u;
  u.offer.message_id = m.envelope.sequence;
  EXPECT_TRUE(EncodeMessageFrames(
                  m, kChunkBytes,
                  [&](uint64_t total, bool chunked, uint32_t count) {
                    EXPECT_TRUE(chunked);
                    u.offer.total_bytes = total;
                    u.offer.count = count;
                  },
                  [&](Frame f) { u.frames.emplace_back(f.bytes()); })
                  .ok());
  return u;
}

TEST_F(TransportTest, BroadcastEncodesOnceAndKeepsEveryPeersSequence) {
  TransportOptions so = BaseOptions("ipc://" + Path("bc.sock"));
  so.heartbeat_interval_ms = 5000;  // no heartbeats take sequence numbers during the test
  so.peer_timeout_ms = 10000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  std::vector<std::unique_ptr<Client>> clients;
  for (int k = 0; k < 3; ++k) {
    TransportOptions co = so;
    co.identity = "c" + std::to_string(k);
    StatusOr<std::unique_ptr<Client>> c = Client::Connect(co);
    ASSERT_TRUE(c.ok());
    clients.push_back(std::move(*c));
    Join(**server, *clients.back(), co.identity);
  }
  // c0 is two messages ahead: its last sequence is 3, the others' 1.
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE((*server)->Send("c0", Make(TaskCancel{"ahead"}, 0, 1)).ok());
    ASSERT_TRUE(WaitFor(*clients[0], Kind::kMessage, kWait).has_value());
  }
  const std::vector<float> weights = Pattern(3 * kMiB, -3.0f);  // 12 MiB: chunked
  const TransportStats before = (*server)->stats();
  std::vector<std::string> unreachable;
  ASSERT_TRUE((*server)
                  ->Broadcast({"c2", "c0", "ghost", "c1", "c0"}, AssignMessage(1, 9, weights),
                              &unreachable)
                  .ok());
  EXPECT_EQ(unreachable, std::vector<std::string>{"ghost"});
  for (auto& client : clients) {
    std::optional<TransportEvent> got = WaitFor(*client, Kind::kMessage, kWait);
    ASSERT_TRUE(got.has_value());
    ASSERT_EQ(got->message.type(), MessageType::kTaskAssign);
    EXPECT_EQ(got->message.envelope.sequence, 4u);  // one above every target's last
    EXPECT_EQ(got->message.envelope.task_id, 9u);
    const Tensor& t = std::get<TaskAssign>(got->message.body).tensors[0];
    ASSERT_EQ(t.data.size(), weights.size() * 4);
    EXPECT_EQ(std::memcmp(t.data.data(), weights.data(), t.data.size()), 0);
  }
  const TransportStats after = (*server)->stats();
  const uint64_t encoded = after.bytes_encoded - before.bytes_encoded;
  EXPECT_GE(encoded, weights.size() * 4);
  EXPECT_LT(encoded, weights.size() * 4 + 64 * 1024);  // encoded once, not three times
  EXPECT_GE(after.bytes_sent - before.bytes_sent, 3 * weights.size() * 4);
  EXPECT_EQ(after.messages_sent - before.messages_sent, 3u);

  // Sends after it are accepted: each peer's sequence went on from the broadcast's.
  for (auto& client : clients) {
    const std::string name = &client == &clients[0] ? "c0" : &client == &clients[1] ? "c1" : "c2";
    ASSERT_TRUE((*server)->Send(name, Make(TaskCancel{"after"}, 1, 9)).ok());
    std::optional<TransportEvent> got = WaitFor(*client, Kind::kMessage, kWait);
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(got->message.envelope.sequence, 5u);
  }
  // An invalid message is refused before anything is sent or any sequence number used.
  Message nan = AssignMessage(1, 10, {1.0f});
  std::get<TaskAssign>(nan.body).tensors[0].data = FloatBytes(std::nanf(""));
  unreachable.clear();
  EXPECT_EQ((*server)->Broadcast({"c0", "c1", "nobody"}, nan, &unreachable).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*server)->Broadcast({"x", "y"}, nan, nullptr).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*server)->Broadcast({"y", "x"}, AssignMessage(1, 10, {1.0f}), &unreachable).ok());
  EXPECT_EQ(unreachable, (std::vector<std::string>{"x", "y"}));
  ASSERT_TRUE((*server)->Broadcast({"c2"}, AssignMessage(1, 11, {2.0f}), nullptr).ok());
  std::optional<TransportEvent> got = WaitFor(*clients[2], Kind::kMessage, kWait);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->message.envelope.sequence, 6u);
  EXPECT_EQ(got->message.envelope.task_id, 11u);
  EXPECT_EQ((*server)->stats().rejected, 0u);
  for (auto& client : clients) EXPECT_EQ(client->stats().rejected, 0u);
}

TEST_F(TransportTest, BroadcastFramesAreSharedNotCopied) {
  // Eight peers that read nothing: every frame stays queued to all of them. With shared frames
  // that is one encoding's worth of memory; with a copy per peer it would be eight.
  TransportOptions so = BaseOptions("ipc://" + Path("shared.sock"));
  so.peer_timeout_ms = 10000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  std::vector<std::unique_ptr<RawPeer>> peers;
  std::vector<std::string> names;
  for (int k = 0; k < 8; ++k) {
    names.push_back("idle-" + std::to_string(k));
    peers.push_back(std::make_unique<RawPeer>(ctx.ctx, (*server)->endpoint(), names.back(), 1));
    peers.back()->Send(HelloMessage(), 1, 0);
    ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  }
  const size_t model_bytes = 48 * kMiB;
  const Message assign = AssignMessage(1, 1, std::vector<float>(model_bytes / 4, 0.5f));
  const size_t rss_before = ResidentBytes();
  std::vector<std::string> unreachable;
  ASSERT_TRUE((*server)->Broadcast(names, assign, &unreachable).ok());  // a copy, freed on return
  EXPECT_TRUE(unreachable.empty());
  ASSERT_TRUE(Eventually([&] { return (*server)->stats().frames_sent >= 8 * 48; }));
  std::this_thread::sleep_for(milliseconds(100));
  const double growth = static_cast<double>(ResidentBytes()) - static_cast<double>(rss_before);
  EXPECT_LT(growth, 2.5 * model_bytes) << "frames were copied per peer";
  EXPECT_LT((*server)->stats().bytes_encoded, model_bytes + kMiB);
  peers.clear();
}

TEST_F(TransportTest, TwentyUploadersAreGrantedOneAtATime) {
  for (size_t max_active : {size_t{1}, size_t{3}}) {
    SCOPED_TRACE("max_active_uploads " + std::to_string(max_active));
    TransportOptions so = BaseOptions("ipc://" + Path("up" + std::to_string(max_active) + ".sock"));
    so.max_active_uploads = max_active;
    so.peer_timeout_ms = 10000;
    StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
    ASSERT_TRUE(server.ok());
    constexpr int kClients = 20;
    std::vector<std::unique_ptr<Client>> clients;
    for (int k = 0; k < kClients; ++k) {
      TransportOptions co = so;
      char name[16];  // (not "u" + std::to_string(k): a GCC 12 -Wrestrict false positive)
      std::snprintf(name, sizeof(name), "u%d", k);
      co.identity = name;
      StatusOr<std::unique_ptr<Client>> c = Client::Connect(co);
      ASSERT_TRUE(c.ok());
      clients.push_back(std::move(*c));
      Join(**server, *clients.back(), co.identity);
    }
    const size_t floats = 1200000;  // 4.8 MB: above the chunking threshold
    for (int k = 0; k < kClients; ++k) {
      ASSERT_TRUE(clients[k]->Send(ResultMessage(1, k + 1, Pattern(floats, k))).ok());
    }
    // Every offer arrives; while the first finished upload waits to be taken, nothing more is
    // granted.
    ASSERT_TRUE(Eventually([&] { return (*server)->stats().uploads_offered == kClients; }));
    std::this_thread::sleep_for(milliseconds(200));
    const uint64_t granted_early = (*server)->stats().uploads_granted;
    EXPECT_GE(granted_early, 1u);
    EXPECT_LE(granted_early, max_active);
    std::map<std::string, uint64_t> tasks;
    for (int n = 0; n < kClients; ++n) {
      std::optional<TransportEvent> got = WaitFor(**server, Kind::kMessage, kWait);
      ASSERT_TRUE(got.has_value()) << n << " results arrived";
      const int k = std::stoi(got->peer.substr(1));
      const TaskResult& r = std::get<TaskResult>(got->message.body);
      const std::vector<float> expected = Pattern(floats, k);
      ASSERT_EQ(r.tensors[0].data.size(), floats * 4);
      EXPECT_EQ(std::memcmp(r.tensors[0].data.data(), expected.data(), floats * 4), 0);
      tasks[got->peer] = got->message.envelope.task_id;
    }
    EXPECT_EQ(tasks.size(), static_cast<size_t>(kClients));
    const TransportStats s = (*server)->stats();
    EXPECT_EQ(s.uploads_granted, static_cast<uint64_t>(kClients));
    EXPECT_GE(s.reassemblies_peak, 1u);
    EXPECT_LE(s.reassemblies_peak, max_active);  // never more reassemblies than slots
    EXPECT_EQ(s.reassemblies, 0u);
    EXPECT_EQ(s.rejected, 0u);
    for (auto& c : clients) {
      EXPECT_EQ(c->stats().uploads_offered, 1u);
      EXPECT_EQ(c->stats().uploads_granted, 1u);
    }
  }
}

TEST_F(TransportTest, AnUploaderKilledMidUploadReleasesItsSlot) {
  TransportOptions so = BaseOptions("ipc://" + Path("killed.sock"));
  so.peer_timeout_ms = 1000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  auto dying = std::make_unique<RawPeer>(ctx.ctx, (*server)->endpoint(), "dying");
  dying->Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  TransportOptions co = so;
  co.identity = "next";
  StatusOr<std::unique_ptr<Client>> next = Client::Connect(co);
  ASSERT_TRUE(next.ok());
  Join(**server, **next, "next", Make(Welcome{1, 100, 600}));

  Message big = ResultMessage(1, 1, Pattern(1200000, 1.0f));
  big.envelope.run_id = kRun;
  big.envelope.sequence = 2;
  const Upload upload = Frames(big);
  dying->Send(EncodeChunkOffer(upload.offer));
  std::optional<std::string> grant = dying->ReceiveFrameOf(MessageType::kChunkGrant, kWait);
  ASSERT_TRUE(grant.has_value());
  EXPECT_EQ(DecodeChunkGrant(*grant)->message_id, 2u);
  dying->Send(upload.frames[0]);  // one chunk of five, then nothing
  ASSERT_TRUE(Eventually([&] { return (*server)->stats().reassemblies == 1; }));

  ASSERT_TRUE((*next)->Send(ResultMessage(1, 7, Pattern(1200000, 2.0f))).ok());
  ASSERT_TRUE(Eventually([&] { return (*server)->stats().uploads_offered == 2; }));
  dying->Send(Make(Heartbeat{}, 1), 3);  // alive (and later than its offer's sequence) until killed
  EXPECT_FALSE(AnyEvent(**server, milliseconds(250)).has_value());  // the slot is taken
  EXPECT_EQ((*server)->stats().uploads_granted, 1u);

  dying.reset();  // killed mid-upload: its session times out and frees the slot
  std::vector<TransportEvent> before;
  std::optional<TransportEvent> got = WaitFor(**server, Kind::kMessage, kWait, &before);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->peer, "next");
  EXPECT_EQ(got->message.envelope.task_id, 7u);
  ASSERT_EQ(before.size(), 1u);
  EXPECT_EQ(before[0].kind, Kind::kPeerLost);
  EXPECT_EQ(before[0].peer, "dying");
  const TransportStats s = (*server)->stats();
  EXPECT_EQ(s.uploads_granted, 2u);
  EXPECT_EQ(s.reassemblies, 0u);
  EXPECT_EQ(s.reassemblies_peak, 1u);
}

TEST_F(TransportTest, AStuckUploaderLosesItsGrantButNotItsSession) {
  TransportOptions so = BaseOptions("ipc://" + Path("stuck.sock"));
  so.peer_timeout_ms = 300;  // the grant goes after twice this without a chunk
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  RawPeer stuck(ctx.ctx, (*server)->endpoint(), "stuck");
  stuck.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  Message big = ResultMessage(1, 1, Pattern(1200000, 1.0f));
  big.envelope.run_id = kRun;
  big.envelope.sequence = 2;
  const Upload upload = Frames(big);
  stuck.Send(EncodeChunkOffer(upload.offer));
  ASSERT_TRUE(stuck.ReceiveFrameOf(MessageType::kChunkGrant, kWait).has_value());
  Stopwatch granted;
  TransportOptions co = so;
  co.identity = "patient";
  StatusOr<std::unique_ptr<Client>> patient = Client::Connect(co);
  ASSERT_TRUE(patient.ok());
  Join(**server, **patient, "patient", Make(Welcome{1, 100, 1000}));
  ASSERT_TRUE((*patient)->Send(ResultMessage(1, 5, Pattern(1200000, 2.0f))).ok());
  // The stuck peer stays alive (heartbeats) but sends no chunk: its grant is withdrawn.
  std::optional<TransportEvent> got;
  std::vector<TransportEvent> others;
  for (uint64_t sequence = 3; !got && granted.Seconds() < 5; ++sequence) {
    stuck.Send(Make(Heartbeat{}, 1), sequence);
    got = WaitFor(**server, Kind::kMessage, milliseconds(80), &others);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->peer, "patient");
  EXPECT_GE(granted.Seconds(), 0.6 * 0.9);
  EXPECT_TRUE(others.empty());  // no kPeerLost
  EXPECT_EQ((*server)->peers(), (std::vector<std::string>{"patient", "stuck"}));
  const uint64_t rejected = (*server)->stats().rejected;
  stuck.Send(upload.frames[0]);  // too late
  EXPECT_TRUE(Eventually([&] { return (*server)->stats().rejected == rejected + 1; }));
  EXPECT_EQ((*server)->stats().reassemblies, 0u);
}

TEST_F(TransportTest, ChunksNeedAGrantAndTheOfferHoldsTheirSequence) {
  TransportOptions so = BaseOptions("ipc://" + Path("grant.sock"));
  so.peer_timeout_ms = 10000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  RawPeer raw(ctx.ctx, (*server)->endpoint(), "raw-up");
  raw.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  ASSERT_TRUE(WaitFor(**server, Kind::kMessage, kWait).has_value());
  uint64_t rejected = 0;
  auto expect_rejected = [&](uint64_t more, const std::string& what) {
    rejected += more;
    EXPECT_TRUE(Eventually([&] { return (*server)->stats().rejected == rejected; }))
        << what << ": rejected " << (*server)->stats().rejected << ", expected " << rejected;
  };

  const std::vector<float> values = Pattern(1200000, 5.0f);
  Message big = ResultMessage(1, 3, values);
  big.envelope.run_id = kRun;
  big.envelope.sequence = 2;
  const Upload upload = Frames(big);
  ASSERT_EQ(upload.frames.size(), 5u);
  // Chunks without an offer: every one refused, nothing reassembled, nothing delivered.
  for (const std::string& frame : upload.frames) raw.Send(frame);
  expect_rejected(upload.frames.size(), "chunks without a grant");
  EXPECT_EQ((*server)->stats().reassemblies_peak, 0u);
  // A malformed offer: six fields.
  std::string six = EncodeChunkOffer(upload.offer);
  ASSERT_EQ(six[0], '\x95');  // fixarray of 5
  six[0] = '\x96';
  six += '\x01';
  raw.Send(six);
  expect_rejected(1, "an offer of six fields");
  EXPECT_EQ((*server)->stats().uploads_offered, 0u);

  raw.Send(EncodeChunkOffer(upload.offer));
  std::optional<std::string> grant = raw.ReceiveFrameOf(MessageType::kChunkGrant, kWait);
  ASSERT_TRUE(grant.has_value());
  EXPECT_EQ(DecodeChunkGrant(*grant)->message_id, 2u);
  // The same offer again, and one that replays an older sequence number (the Hello's).
  raw.Send(EncodeChunkOffer(upload.offer));
  expect_rejected(1, "a second offer");
  raw.Send(EncodeChunkOffer({1, upload.offer.count, upload.offer.total_bytes}));
  expect_rejected(1, "a replayed sequence");
  // While the upload is on its way the peer goes on with later sequence numbers.
  raw.Send(Make(Heartbeat{}, 1), 3);
  raw.Send(ResultMessage(1, 4, {1.0f, 2.0f}), 4);
  std::optional<TransportEvent> small = WaitFor(**server, Kind::kMessage, kWait);
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->message.envelope.sequence, 4u);
  // A chunk that disagrees with the offer is refused and changes nothing.
  StatusOr<Chunk> first = DecodeChunk(upload.frames[0]);
  ASSERT_TRUE(first.ok());
  Chunk odd = *first;
  odd.count += 1;
  raw.Send(EncodeChunk(odd));
  expect_rejected(1, "a chunk disagreeing with its offer");
  EXPECT_EQ((*server)->stats().reassemblies, 0u);
  // The granted chunks: the message completes with the sequence its offer reserved.
  for (const std::string& frame : upload.frames) raw.Send(frame);
  std::optional<TransportEvent> got = WaitFor(**server, Kind::kMessage, kWait);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->message.envelope.sequence, 2u);
  EXPECT_EQ(got->message.envelope.task_id, 3u);
  EXPECT_EQ(std::get<TaskResult>(got->message.body).tensors[0].ToFloat32(), values);
  // The grant is used up: its chunks again are refused; the session goes on.
  raw.Send(upload.frames[0]);
  expect_rejected(1, "a chunk of a completed upload");
  raw.Send(ResultMessage(1, 5, {3.0f}), 5);
  std::optional<TransportEvent> later = WaitFor(**server, Kind::kMessage, kWait);
  ASSERT_TRUE(later.has_value());
  EXPECT_EQ(later->message.envelope.sequence, 5u);
  const TransportStats s = (*server)->stats();
  EXPECT_EQ(s.uploads_offered, 1u);
  EXPECT_EQ(s.uploads_granted, 1u);
  EXPECT_EQ(s.reassemblies, 0u);
  EXPECT_EQ(s.rejected, rejected);
}

TEST_F(TransportTest, AWaitingUploaderStaysAliveAndReconnectDropsItsUpload) {
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
  const auto until = std::chrono::steady_clock::now() + milliseconds(1500);
  while (std::chrono::steady_clock::now() < until) {
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

// ---- The frame encoder and in-place decoding the transport relies on. ----

TEST(FrameEncodingTest, FramesEqualEncodeThenSplitByteForByte) {
  for (size_t floats : {size_t{10}, size_t{3 * kMiB}}) {  // one frame; 12 MiB in chunks
    std::vector<float> values(floats);
    for (size_t i = 0; i < floats; ++i) values[i] = static_cast<float>(i) * 0.5f;
    Message m = ResultMessage(2, 3, values);
    m.envelope.sequence = 77;
    const std::string whole = Encoded(m);
    std::vector<std::string> expected;
    if (whole.size() <= kChunkThresholdBytes) {
      expected.push_back(whole);
    } else {
      for (const Chunk& c : SplitIntoChunks(whole, 77, 64 * 1024)) expected.push_back(EncodeChunk(c));
    }
    std::vector<std::string> frames;
    ASSERT_TRUE(EncodeMessageFrames(m, 64 * 1024, [&](Frame f) {
                  frames.emplace_back(f.bytes());
                }).ok());
    ASSERT_EQ(frames.size(), expected.size());
    for (size_t i = 0; i < frames.size(); ++i) ASSERT_EQ(frames[i], expected[i]) << i;
  }
  Message invalid = ResultMessage(1, 1, {1.0f});
  std::get<TaskResult>(invalid.body).weight = -1;
  int emitted = 0;
  EXPECT_EQ(EncodeMessageFrames(invalid, kChunkBytes, [&](Frame) { ++emitted; }).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(emitted, 0);
}

TEST(FrameEncodingTest, InPlaceDecodeEqualsCopyingDecodeAndReassemblyKeepsOrder) {
  std::vector<float> values(300000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(static_cast<float>(i));
  Message m = ResultMessage(1, 2, values);
  std::get<TaskResult>(m.body).tensors.push_back(Tensor::Float32("small", {2}, std::vector<float>{1, 2}));
  const std::string bytes = Encoded(m);
  StatusOr<Message> copied = DecodeMessage(std::string_view(bytes));
  StatusOr<Message> in_place = DecodeMessage(std::string(bytes));
  ASSERT_TRUE(copied.ok());
  ASSERT_TRUE(in_place.ok());
  EXPECT_EQ(*copied, *in_place);
  EXPECT_EQ(*in_place, m);
  // A NaN is still caught on the in-place path.
  std::string poisoned = Patch(bytes, FloatBytes(values[5]), FloatBytes(std::nanf("")));
  EXPECT_FALSE(DecodeMessage(std::move(poisoned)).ok());

  // Chunks 0, 2, 1, 3: the early one waits, the rest go straight into place.
  std::vector<Chunk> chunks = SplitIntoChunks(bytes, 1, bytes.size() / 4 + 1);
  ASSERT_EQ(chunks.size(), 4u);
  ChunkReassembler r;
  std::vector<std::string> frames;
  for (const Chunk& c : chunks) frames.push_back(EncodeChunk(c));
  for (int i : {0, 2, 1}) {
    StatusOr<ChunkView> view = DecodeChunkView(frames[i]);
    ASSERT_TRUE(view.ok());
    ASSERT_FALSE(r.Add(*view).value().has_value());
  }
  EXPECT_FALSE(r.Add(*DecodeChunkView(frames[2])).ok());  // duplicate of an early chunk
  EXPECT_FALSE(r.Add(*DecodeChunkView(frames[1])).ok());  // duplicate of a placed chunk
  StatusOr<std::optional<std::string>> done = r.Add(*DecodeChunkView(frames[3]));
  ASSERT_TRUE(done.ok());
  ASSERT_TRUE(done->has_value());
  EXPECT_EQ(**done, bytes);
  EXPECT_EQ(r.pending_bytes(), 0u);
}

// Reassembles `frames` in order with a detaching reassembler and decodes the result.
StatusOr<Message> ReassembleDetached(const std::vector<std::string>& frames, bool* detached) {
  ChunkReassembler r(kMaxReassemblyBytes, kMaxPendingChunkedMessages, /*detach_large_bins=*/true);
  for (const std::string& frame : frames) {
    TANDEM_ASSIGN_OR_RETURN(const ChunkView view, DecodeChunkView(frame));
    TANDEM_ASSIGN_OR_RETURN(std::optional<AssembledMessage> done, r.AddAssembled(view));
    if (done) {
      if (detached) *detached = done->bin.has_value();
      return DecodeAssembled(std::move(*done));
    }
  }
  return Status::Internal("incomplete");
}

std::vector<std::string> ChunkFrames(const std::string& bytes, size_t chunk_bytes) {
  std::vector<std::string> frames;
  for (const Chunk& c : SplitIntoChunks(bytes, 1, chunk_bytes)) frames.push_back(EncodeChunk(c));
  return frames;
}

TEST(FrameEncodingTest, DetachedBinDecodesLikeTheWholeMessage) {
  std::vector<float> values(20000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.001f * static_cast<float>(i);
  Message m = ResultMessage(1, 2, values);
  m.envelope.run_id = kRun;
  const std::string bytes = Encoded(m);
  bool detached = false;
  StatusOr<Message> back = ReassembleDetached(ChunkFrames(bytes, kMinChunkBytes), &detached);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(detached);
  EXPECT_EQ(*back, m);

  // A NaN inside the detached bin is found (by the scan done while copying).
  const std::string poisoned = Patch(bytes, FloatBytes(values[12345]), FloatBytes(std::nanf("")));
  StatusOr<Message> nan = ReassembleDetached(ChunkFrames(poisoned, kMinChunkBytes), &detached);
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("element 12345 is NaN"), std::string::npos)
      << nan.status().ToString();
  // The same bit pattern in a u32 tensor is just a number.
  TaskResult masked;
  std::vector<uint32_t> words(20000, 0x7FC00000u);
  masked.tensors.push_back(Tensor::Uint32("masked", {words.size()}, words));
  Message u32 = Make(masked, 1, 2);
  StatusOr<Message> u32_back = ReassembleDetached(ChunkFrames(Encoded(u32), kMinChunkBytes), &detached);
  ASSERT_TRUE(u32_back.ok()) << u32_back.status().ToString();
  EXPECT_TRUE(detached);
  EXPECT_EQ(*u32_back, u32);
}

TEST(FrameEncodingTest, DetachedDecodingAgreesWithDecodeMessageOnCorruptedFrames) {
  // Whatever a corruption does to the headers (the bin's own length included), reassembling with
  // a detached bin must accept and reject exactly what decoding the whole message does.
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("small", {3}, std::vector<float>{1, 2, 3}));
  r.tensors.push_back(Tensor::Float32("big", {6000}, std::vector<float>(6000, 0.25f)));
  r.weight = 4.0;
  r.metrics["loss"] = 1.0;
  const std::string bytes = Encoded(Make(r, 1, 2));
  Rng rng(11);
  int accepted = 0;
  int detached_count = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string corrupted = bytes;
    const int flips = 1 + static_cast<int>(rng.Below(3));
    for (int f = 0; f < flips; ++f) {
      // Mostly the first bytes, where the structure is; sometimes anywhere.
      const size_t at = rng.Below(4) == 0 ? rng.Below(corrupted.size()) : rng.Below(160);
      corrupted[at] = static_cast<char>(rng.Below(256));
    }
    StatusOr<Message> whole = DecodeMessage(std::string_view(corrupted));
    bool detached = false;
    StatusOr<Message> pieces = ReassembleDetached(ChunkFrames(corrupted, kMinChunkBytes), &detached);
    ASSERT_EQ(whole.ok(), pieces.ok())
        << "trial " << trial << ": " << whole.status().ToString() << " vs "
        << pieces.status().ToString();
    if (whole.ok()) {
      ASSERT_EQ(*whole, *pieces) << "trial " << trial;
      ++accepted;
    }
    detached_count += detached ? 1 : 0;
  }
  EXPECT_GT(accepted, 100);         // the comparison covered accepted messages
  EXPECT_GT(detached_count, 1000);  // and the detached path
}

}  // namespace
}  // namespace tandem::wire

// Helpers for the transport tests (transport_test, transport_server_test, transport_client_test,
// zap_test): options, waiting for events, a join and a round trip, a raw DEALER for frames the
// transport would never produce, CURVE keys, and the frames of an offered upload.
#pragma once

#include <zmq.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/wire/test_messages.h"
#include "wire/chunk.h"
#include "wire/curve.h"
#include "wire/message.h"
#include "wire/transport.h"

namespace tandem::wire::testing {

using std::chrono::milliseconds;
using Kind = TransportEvent::Kind;

constexpr uint64_t kRun = 0x7A11DE;
constexpr auto kWait = milliseconds(5000);  // upper bound for anything that should happen

inline TransportOptions BaseOptions(const std::string& endpoint) {
  TransportOptions o;
  o.endpoint = endpoint;
  o.run_id = kRun;
  o.heartbeat_interval_ms = 100;
  o.peer_timeout_ms = 2000;
  return o;
}

inline Message HelloMessage() { return Make(Hello{"tandem-test/1", {"fedavg.train"}}); }
inline Message WelcomeMessage(uint32_t index = 0) { return Make(Welcome{index, 100, 2000}); }

// The next event of `kind` within `timeout`; events of other kinds are collected in `others`.
template <typename T>
inline std::optional<TransportEvent> WaitFor(T& transport, Kind kind, milliseconds timeout,
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
inline std::optional<TransportEvent> AnyEvent(T& transport, milliseconds window) {
  StatusOr<std::optional<TransportEvent>> event = transport.Receive(window);
  EXPECT_TRUE(event.ok());
  return event.ok() ? *event : std::nullopt;
}

// Hello -> kPeerJoined + Hello -> Welcome -> the client's kPeerJoined + Welcome.
inline void Join(Server& server, Client& client, const std::string& expected_identity,
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
inline void RoundTrip(Server& server, Client& client, const std::string& identity, uint64_t round) {
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

// The process's resident memory, from /proc/self/status.
inline size_t ResidentBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6)) * 1024;
  }
  return 0;
}

// Waits until `done` holds, up to kWait.
template <typename F>
inline bool Eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

inline std::vector<float> Pattern(size_t n, float seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = seed + static_cast<float>(i % 977) * 0.125f;
  return v;
}

// The frames a sender would produce for `m`, and the offer that announces them.
struct Upload {
  std::vector<std::string> frames;
  ChunkOffer offer;
};
inline Upload Frames(const Message& m) {
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

}  // namespace tandem::wire::testing

// The coordinator side of the transport (wire/transport_server.h): a silent peer is lost and Bye
// ends a session; hostile raw frames (truncated, oversized, wrong shape, NaN, replayed, stale) from
// a raw DEALER; queueing under a full high-water mark; Broadcast (one shared encoding for every
// peer); upload flow control (offers, grants, one reassembly at a time, a dead or stuck uploader's
// slot, chunks without a grant).
#include <zmq.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/sanitizers.h"
#include "core/timer.h"
#include "tests/temp_dir.h"
#include "tests/wire/transport_test_util.h"
#include "wire/transport.h"

namespace tandem::wire {
namespace {

using namespace testing;

class TransportServerTest : public tandem::testing::TempDirTest {};

// How soon a silent peer is lost, against its timeout, is bench/transport_timing.cc's figure.
TEST_F(TransportServerTest, SilentPeerIsLostAndByeEndsASession) {
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
  std::optional<TransportEvent> lost = WaitFor(**server, Kind::kPeerLost, kWait);
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->peer, "gone");
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

TEST_F(TransportServerTest, HostileFramesAreRejectedCountedAndTheSessionSurvives) {
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

TEST_F(TransportServerTest, FullQueuesDelayFramesButNeverLoseThem) {
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
  const uint64_t sent_before = (*server)->stats().messages_sent;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE((*server)->Send("slow", AssignMessage(1, i + 1, std::vector<float>(kChunkThresholdBytes / 8, i))).ok());
  }
  // Send queues; it does not wait for the network: every Send has returned while most of the
  // 40 MiB cannot have left (the peer reads nothing, and its queues hold a few MiB at most). How
  // long a Send takes is bench/transport_timing.cc's figure.
  EXPECT_LT((*server)->stats().messages_sent - sent_before, static_cast<uint64_t>(kMessages));
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

TEST_F(TransportServerTest, SendsToAVanishedPeerAreDroppedWithoutBlocking) {
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
  // Every Send returns (queued) while the I/O thread finds the peer gone; how long one takes is
  // bench/transport_timing.cc's figure.
  while ((*server)->stats().dropped == 0 && std::chrono::steady_clock::now() < deadline) {
    EXPECT_TRUE((*server)->Send("vanishing", AssignMessage(1, 1, {1.0f})).ok());
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_GT((*server)->stats().dropped, 0u);
  EXPECT_EQ((*server)->peers(), std::vector<std::string>{"vanishing"});
}

TEST_F(TransportServerTest, BroadcastEncodesOnceAndKeepsEveryPeersSequence) {
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

TEST_F(TransportServerTest, BroadcastFramesAreSharedNotCopied) {
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
  // Under ThreadSanitizer the resident size also holds the shadow of every byte written and the
  // freed copy, which TSan's allocator keeps: about 3x for one shared encoding. A copy per peer
  // would still be at least 8x.
#if defined(TANDEM_THREAD_SANITIZER)
  const double growth_bound = 5.0 * model_bytes;
#else
  const double growth_bound = 2.5 * model_bytes;
#endif
  EXPECT_LT(growth, growth_bound) << "frames were copied per peer";
  EXPECT_LT((*server)->stats().bytes_encoded, model_bytes + kMiB);
  peers.clear();
}

TEST_F(TransportServerTest, TwentyUploadersAreGrantedOneAtATime) {
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

TEST_F(TransportServerTest, TheNextUploadWaitsUntilTheOwnerIsDoneWithTheLastOne) {
  // Coordinator memory: an upload reassembled while the owner still folds in the one it took
  // would put two updates in memory at once. The owner is done with a message when it calls
  // Receive again; only then is the next upload granted.
  TransportOptions so = BaseOptions("ipc://" + Path("lent.sock"));
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  std::vector<std::unique_ptr<Client>> clients;
  for (const char* name : {"a", "b"}) {
    TransportOptions co = so;
    co.identity = name;
    StatusOr<std::unique_ptr<Client>> c = Client::Connect(co);
    ASSERT_TRUE(c.ok());
    clients.push_back(std::move(*c));
    Join(**server, *clients.back(), name);
  }
  for (size_t k = 0; k < clients.size(); ++k) {
    ASSERT_TRUE(clients[k]->Send(ResultMessage(1, k + 1, Pattern(1200000, 1.0f + k))).ok());
  }
  std::optional<TransportEvent> first = WaitFor(**server, Kind::kMessage, kWait);
  ASSERT_TRUE(first.has_value());
  // Held by the owner (not yet back in Receive): nothing more is granted.
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ((*server)->stats().uploads_granted, 1u);
  EXPECT_EQ((*server)->stats().reassemblies, 0u);
  first.reset();
  std::optional<TransportEvent> second = WaitFor(**server, Kind::kMessage, kWait);
  ASSERT_TRUE(second.has_value());
  EXPECT_NE(second->peer, "");
  EXPECT_EQ((*server)->stats().uploads_granted, 2u);
  EXPECT_EQ((*server)->stats().reassemblies_peak, 1u);
}

TEST_F(TransportServerTest, AnUploaderKilledMidUploadReleasesItsSlot) {
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

TEST_F(TransportServerTest, AStuckUploaderLosesItsGrantButNotItsSession) {
  TransportOptions so = BaseOptions("ipc://" + Path("stuck.sock"));
  so.peer_timeout_ms = 300;  // a started upload's grant goes after twice this without a chunk
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
  // Started before the offer is sent, so before the grant: the span it measures holds the whole
  // stall, however late this thread runs, and the lower bound below cannot be broken by load.
  Stopwatch granted;
  stuck.Send(EncodeChunkOffer(upload.offer));
  ASSERT_TRUE(stuck.ReceiveFrameOf(MessageType::kChunkGrant, kWait).has_value());
  stuck.Send(upload.frames[0]);  // one chunk of five, then nothing
  TransportOptions co = so;
  co.identity = "patient";
  StatusOr<std::unique_ptr<Client>> patient = Client::Connect(co);
  ASSERT_TRUE(patient.ok());
  Join(**server, **patient, "patient", Make(Welcome{1, 100, 1000}));
  ASSERT_TRUE((*patient)->Send(ResultMessage(1, 5, Pattern(1200000, 2.0f))).ok());
  // The stuck peer stays alive (heartbeats) but sends no more chunks: its grant is withdrawn.
  std::optional<TransportEvent> got;
  std::vector<TransportEvent> others;
  for (uint64_t sequence = 3; !got && granted.Seconds() < 5; ++sequence) {
    stuck.Send(Make(Heartbeat{}, 1), sequence);
    got = WaitFor(**server, Kind::kMessage, milliseconds(80), &others);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->peer, "patient");
  EXPECT_GE(granted.Seconds(), 0.6);  // held for the stall limit, twice the peer timeout
  EXPECT_TRUE(others.empty());  // no kPeerLost
  EXPECT_EQ((*server)->peers(), (std::vector<std::string>{"patient", "stuck"}));
  const uint64_t rejected = (*server)->stats().rejected;
  stuck.Send(upload.frames[1]);  // too late
  EXPECT_TRUE(Eventually([&] { return (*server)->stats().rejected == rejected + 1; }));
  EXPECT_EQ((*server)->stats().reassemblies, 0u);
}

TEST_F(TransportServerTest, AnUploaderThatNeverUsesItsGrantLosesItAndGoesToTheBack) {
  // An allow-listed peer offers uploads and never sends them. Each grant it lets lapse must free
  // the slot within the grant timeout (not the 2 x peer_timeout_ms a started upload may stall),
  // and it must not be granted again while an honest peer waits.
  TransportOptions so = BaseOptions("ipc://" + Path("noshow.sock"));
  so.peer_timeout_ms = 4000;  // a stall would hold the slot for 8 s
  so.upload_grant_timeout_ms = 300;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  RawPeer offender(ctx.ctx, (*server)->endpoint(), "offender");
  offender.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  TransportOptions co = so;
  co.identity = "honest";
  StatusOr<std::unique_ptr<Client>> honest = Client::Connect(co);
  ASSERT_TRUE(honest.ok());
  Join(**server, **honest, "honest", Make(Welcome{1, 100, 4000}));

  // Two offers from the offender, then the honest peer's: first come first served would grant
  // the offender twice before the honest peer.
  Message big = ResultMessage(1, 1, Pattern(1200000, 1.0f));
  big.envelope.run_id = kRun;
  big.envelope.sequence = 2;
  const Upload first = Frames(big);
  offender.Send(EncodeChunkOffer(first.offer));
  ASSERT_TRUE(offender.ReceiveFrameOf(MessageType::kChunkGrant, kWait).has_value());
  offender.Send(EncodeChunkOffer({3, first.offer.count, first.offer.total_bytes}));
  ASSERT_TRUE(Eventually([&] { return (*server)->stats().uploads_offered == 2; }));
  Stopwatch waited;
  ASSERT_TRUE((*honest)->Send(ResultMessage(1, 5, Pattern(1200000, 2.0f))).ok());
  ASSERT_TRUE(Eventually([&] { return (*server)->stats().uploads_offered == 3; }));

  // The honest peer's grant comes once the offender's lapses, before its second offer. The
  // offender stays alive throughout (heartbeats): only its grants lapse.
  uint64_t sequence = 4;
  while ((*honest)->stats().uploads_granted == 0 && waited.Seconds() < 10) {
    offender.Send(Make(Heartbeat{}, 1), sequence++);
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_EQ((*honest)->stats().uploads_granted, 1u) << "the honest peer was never granted";
  EXPECT_EQ((*server)->peer_stats("offender").uploads_granted, 1u)
      << "the offender was granted again while the honest peer waited";
  std::optional<TransportEvent> got;
  std::vector<TransportEvent> others;
  for (; !got && waited.Seconds() < 10; ++sequence) {
    offender.Send(Make(Heartbeat{}, 1), sequence);
    got = WaitFor(**server, Kind::kMessage, milliseconds(100), &others);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->peer, "honest");
  EXPECT_EQ(got->message.envelope.task_id, 5u);
  // Promptly: the grant timeout plus the transfer, far from the 8 s stall limit (generous bound).
  EXPECT_LT(waited.Seconds(), 4.0);
  EXPECT_TRUE(others.empty());  // no kPeerLost: the offender keeps its session
  EXPECT_EQ((*server)->peers(), (std::vector<std::string>{"honest", "offender"}));
  // A chunk for the lapsed grant is refused.
  const uint64_t rejected = (*server)->stats().rejected;
  offender.Send(first.frames[0]);
  EXPECT_TRUE(Eventually([&] { return (*server)->stats().rejected == rejected + 1; }));
  EXPECT_EQ((*server)->stats().reassemblies, 0u);
}

TEST_F(TransportServerTest, ChunksNeedAGrantAndTheOfferHoldsTheirSequence) {
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

}  // namespace
}  // namespace tandem::wire

namespace tandem::wire {
namespace {

using namespace testing;

class StreamedUploadTest : public tandem::testing::TempDirTest {};

// Streamed contributions: the offer's declaration reaches the owner, nothing is granted before
// its answer, and a streamed upload's values arrive in order, whole words, before the result
// without them. An upload the owner wants whole arrives as before.
TEST_F(StreamedUploadTest, DeclaredContributionWaitsForTheOwnerThenStreamsItsValues) {
  TransportOptions so = BaseOptions("ipc://" + Path("stream.sock"));
  so.stream_contributions = true;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  std::vector<std::unique_ptr<Client>> clients;
  for (const char* name : {"a", "b"}) {
    TransportOptions co = so;
    co.identity = name;
    StatusOr<std::unique_ptr<Client>> c = Client::Connect(co);
    ASSERT_TRUE(c.ok());
    clients.push_back(std::move(*c));
    Join(**server, *clients.back(), name);
  }
  const std::vector<float> values = Pattern(1200001, 1.5f);  // 4.8 MB: five chunks
  ASSERT_TRUE(clients[0]->Send(ResultMessage(1, 5, values)).ok());
  std::optional<TransportEvent> offer = WaitFor(**server, Kind::kUploadOffered, kWait);
  ASSERT_TRUE(offer.has_value());
  EXPECT_EQ(offer->peer, "a");
  EXPECT_EQ(offer->round, 1u);
  EXPECT_EQ(offer->task_id, 5u);
  EXPECT_EQ(offer->weight, 2.0);
  EXPECT_EQ(offer->values_total, values.size());
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ((*server)->stats().uploads_granted, 0u) << "granted before the owner decided";

  (*server)->DecideUpload("a", offer->upload_id, true);
  std::string got;
  std::optional<TransportEvent> rest;
  while (!rest) {
    StatusOr<std::optional<TransportEvent>> e = (*server)->Receive(kWait);
    ASSERT_TRUE(e.ok() && e->has_value());
    TransportEvent& event = **e;
    if (event.kind == Kind::kUploadValues) {
      EXPECT_EQ(event.upload_id, offer->upload_id);
      EXPECT_EQ(event.value_offset * 4, got.size());
      EXPECT_EQ(event.values.size() % 4, 0u);
      got += event.values;
    } else if (event.kind == Kind::kMessage) {
      rest = std::move(event);
    } else {
      ADD_FAILURE() << "unexpected event " << static_cast<int>(event.kind);
    }
  }
  ASSERT_EQ(got.size(), values.size() * 4);
  EXPECT_EQ(std::memcmp(got.data(), values.data(), got.size()), 0);
  EXPECT_EQ(rest->message.envelope.sequence, offer->upload_id);
  const auto& result = std::get<TaskResult>(rest->message.body);
  ASSERT_EQ(result.tensors.size(), 1u);
  EXPECT_TRUE(result.tensors[0].data.empty());
  EXPECT_EQ(result.tensors[0].shape, std::vector<uint64_t>{values.size()});
  EXPECT_EQ(result.metrics.at("loss"), 0.5);

  // The owner wants the next one whole: no value events, the tensor in the message.
  ASSERT_TRUE(clients[1]->Send(ResultMessage(1, 5, values)).ok());
  offer = WaitFor(**server, Kind::kUploadOffered, kWait);
  ASSERT_TRUE(offer.has_value());
  (*server)->DecideUpload("b", offer->upload_id, false);
  std::vector<TransportEvent> others;
  rest = WaitFor(**server, Kind::kMessage, kWait, &others);
  ASSERT_TRUE(rest.has_value());
  EXPECT_TRUE(others.empty());
  EXPECT_EQ(std::get<TaskResult>(rest->message.body).tensors[0].ToFloat32(), values);
}

TEST_F(StreamedUploadTest, UploadBrokenPartWayIsReportedAsFailed) {
  TransportOptions so = BaseOptions("ipc://" + Path("broken.sock"));
  so.stream_contributions = true;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  RawPeer peer(ctx.ctx, (*server)->endpoint(), "raw");
  peer.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  Message big = ResultMessage(1, 9, Pattern(1200000, 1.0f));
  big.envelope.run_id = kRun;
  big.envelope.sequence = 2;
  Upload upload = Frames(big);
  upload.offer.contribution = ContributionOf(big, upload.offer.total_bytes);
  ASSERT_TRUE(upload.offer.contribution.has_value());
  peer.Send(EncodeChunkOffer(upload.offer));
  std::optional<TransportEvent> offer = WaitFor(**server, Kind::kUploadOffered, kWait);
  ASSERT_TRUE(offer.has_value());
  (*server)->DecideUpload("raw", 2, true);
  ASSERT_TRUE(peer.ReceiveFrameOf(MessageType::kChunkGrant, kWait).has_value());
  peer.Send(upload.frames[0]);
  std::optional<TransportEvent> values = WaitFor(**server, Kind::kUploadValues, kWait);
  ASSERT_TRUE(values.has_value());
  EXPECT_EQ(values->value_offset, 0u);
  // A second chunk carrying more bytes than the message has: the reassembler drops the message.
  Chunk bad;
  bad.message_id = 2;
  bad.index = 1;
  bad.count = upload.offer.count;
  bad.total_bytes = upload.offer.total_bytes;
  bad.data.assign(upload.offer.total_bytes - kChunkBytes + 1, 'x');
  peer.Send(EncodeChunk(bad));
  std::optional<TransportEvent> failed = WaitFor(**server, Kind::kUploadFailed, kWait);
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->peer, "raw");
  EXPECT_EQ(failed->upload_id, 2u);
  EXPECT_FALSE(failed->reason.empty());
  EXPECT_FALSE(WaitFor(**server, Kind::kMessage, milliseconds(300)).has_value());
}

// upload_hold_for_broadcast_ms: while the frames of a broadcast are still queued for a peer that
// has not read them, an offer is neither reported to the owner nor granted; once that peer has
// read them (the last copy released), the offer goes on at once, long before the bound.
TEST_F(StreamedUploadTest, AnOfferWaitsUntilTheBroadcastHasBeenSent) {
  TransportOptions so = BaseOptions("ipc://" + Path("hold.sock"));
  so.stream_contributions = true;
  so.upload_hold_for_broadcast_ms = 60000;
  so.peer_timeout_ms = 60000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  RawPeer idle(ctx.ctx, (*server)->endpoint(), "idle", /*rcvhwm=*/1);
  RawPeer uploader(ctx.ctx, (*server)->endpoint(), "uploader");
  idle.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  uploader.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  // 16 MiB in 1 MiB chunks: more than ZeroMQ's queue of one frame and the socket buffers hold.
  const Message model = AssignMessage(1, 1, std::vector<float>(4 * kMiB, 0.25f));
  ASSERT_TRUE((*server)->Broadcast({"idle", "uploader"}, model, nullptr).ok());

  Message big = ResultMessage(1, 1, Pattern(1200000, 1.0f));
  big.envelope.run_id = kRun;
  big.envelope.sequence = 2;
  Upload upload = Frames(big);
  upload.offer.contribution = ContributionOf(big, upload.offer.total_bytes);
  uploader.Send(EncodeChunkOffer(upload.offer));
  EXPECT_FALSE(WaitFor(**server, Kind::kUploadOffered, milliseconds(500)).has_value())
      << "reported while the broadcast's frames were still queued";

  const auto drained = std::chrono::steady_clock::now();
  int chunks = 0;
  while (idle.ReceiveFrameOf(MessageType::kChunk, milliseconds(500)).has_value()) ++chunks;
  EXPECT_GE(chunks, 16);  // 16 MiB of values and the message around them
  std::optional<TransportEvent> offer = WaitFor(**server, Kind::kUploadOffered, kWait);
  ASSERT_TRUE(offer.has_value());
  EXPECT_EQ(offer->peer, "uploader");
  EXPECT_LT(std::chrono::steady_clock::now() - drained, milliseconds(10000));
  (*server)->DecideUpload("uploader", 2, true);
  EXPECT_TRUE(uploader.ReceiveFrameOf(MessageType::kChunkGrant, kWait).has_value());
}

// The hold is bounded: with a peer that never reads the broadcast, an offer (here one that
// declares no contribution, so it would be granted at once) is granted once the bound has passed.
TEST_F(StreamedUploadTest, AnOfferHeldForABroadcastGoesOnAfterTheBound) {
  TransportOptions so = BaseOptions("ipc://" + Path("bound.sock"));
  so.stream_contributions = true;
  so.upload_hold_for_broadcast_ms = 400;
  so.peer_timeout_ms = 60000;
  StatusOr<std::unique_ptr<Server>> server = Server::Bind(so);
  ASSERT_TRUE(server.ok());
  SharedContext ctx;
  RawPeer idle(ctx.ctx, (*server)->endpoint(), "idle", /*rcvhwm=*/1);
  RawPeer uploader(ctx.ctx, (*server)->endpoint(), "uploader");
  idle.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  uploader.Send(HelloMessage(), 1, 0);
  ASSERT_TRUE(WaitFor(**server, Kind::kPeerJoined, kWait).has_value());
  const Message model = AssignMessage(1, 1, std::vector<float>(4 * kMiB, 0.25f));
  ASSERT_TRUE((*server)->Broadcast({"idle", "uploader"}, model, nullptr).ok());

  Message big = ResultMessage(1, 1, Pattern(1200000, 1.0f));
  big.envelope.run_id = kRun;
  big.envelope.sequence = 2;
  Upload upload = Frames(big);
  const auto offered = std::chrono::steady_clock::now();
  uploader.Send(EncodeChunkOffer(upload.offer));
  ASSERT_TRUE(uploader.ReceiveFrameOf(MessageType::kChunkGrant, kWait).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - offered, milliseconds(350));
  for (const std::string& frame : upload.frames) uploader.Send(frame);
  std::optional<TransportEvent> got = WaitFor(**server, Kind::kMessage, kWait);
  while (got && got->message.type() != MessageType::kTaskResult) {  // the peers' Hellos
    got = WaitFor(**server, Kind::kMessage, kWait);
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(std::get<TaskResult>(got->message.body).tensors[0].ToFloat32(), Pattern(1200000, 1.0f));
}

}  // namespace
}  // namespace tandem::wire

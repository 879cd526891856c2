// The ZeroMQ transport: the coordinator's Server (a ROUTER) and a client's Client (a DEALER) move
// tandem Messages, chunked when large, over tcp://, ipc:// or inproc://, with CURVE encryption and
// a ZAP allow-list on tcp. Each transport runs one I/O thread that owns its socket, validates
// every incoming frame (codec, chunks, session) and keeps heartbeats flowing while the owner is
// busy; the owner's threads only call Send, Broadcast and Receive. The coordinator's memory stays
// O(model): a broadcast is encoded once for all peers, and clients upload large messages only when
// granted (ChunkOffer / ChunkGrant). Behaviour: docs/protocol.md "Transport".
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "wire/curve.h"
#include "wire/message.h"
#include "wire/protocol.h"

namespace tandem::wire {

struct TransportOptions {
  // "tcp://127.0.0.1:0" (port 0 = any free port), "tcp://0.0.0.0:5555", "ipc:///path",
  // "inproc://name". Server: bind; Client: connect.
  std::string endpoint;
  // CURVE encryption and authentication (libzmq CURVE, plus a ZAP handler run by the Server).
  // Must be set explicitly by the caller; the config layer defaults it to true for tcp. Not
  // available on inproc:// (ZeroMQ runs no security handshake there).
  bool curve = false;
  CurveKeyPair own_keys;          // Server: its key pair; Client: its own key pair
  std::string server_public_key;  // Client, with curve
  AllowList allow_list;           // Server, with curve: only these keys may connect
  // Client without curve: the identity it claims (its ZeroMQ routing id), a valid client name
  // such as "client-3". Without curve the Server trusts it (local ipc/inproc use); with curve the
  // identity is the allow-list NAME of the client's key, set by ZAP, and this field is ignored.
  std::string identity;
  uint64_t run_id = 0;  // Server: the run id stamped on everything it sends; non-zero
  // Send a Heartbeat when nothing else went to a peer for this long. A Client adopts the
  // interval and timeout of the Welcome it accepts.
  uint32_t heartbeat_interval_ms = 1000;
  uint32_t peer_timeout_ms = 10000;  // a peer silent this long is lost
  size_t chunk_bytes = kChunkBytes;  // payload per chunk, kMinChunkBytes .. kMaxChunkBytes
  // Client: ZeroMQ's reconnect interval, doubled after each failed attempt up to the maximum.
  uint32_t reconnect_interval_ms = 100;
  uint32_t reconnect_interval_max_ms = 5000;
  // ZeroMQ's high-water mark in frames per peer (ZMQ_SNDHWM and ZMQ_RCVHWM; 0 = no limit). Frames
  // that meet a full queue wait in the transport's own queue and are retried, never dropped.
  int high_water_mark = 1000;
  // Optional shared ZeroMQ context (required to share inproc:// endpoints between transports in
  // one process); it must outlive the transport. Otherwise the transport owns one.
  void* zmq_context = nullptr;
  // Server: upload flow control (docs/protocol.md "Upload flow control"), which bounds the memory
  // that uploads from many clients take at once. A Client sends the chunks of a chunked message
  // only once the Server has granted its ChunkOffer; the Server grants at most this many uploads at
  // a time across all peers, in the order the offers arrived (>= 1)...
  size_t max_active_uploads = 1;
  // ...and only while the decoded messages waiting for Receive hold fewer tensor bytes than this
  // (>= 1). The default grants only when no large (chunked-size) message is waiting.
  size_t upload_queue_budget_bytes = kChunkThresholdBytes;
};

struct TransportEvent {
  enum class Kind { kMessage, kPeerJoined, kPeerLost };
  Kind kind = Kind::kMessage;
  std::string peer;  // Server: the client's identity; Client: "coordinator"
  // kMessage: the message (it passed the codec and the session checks). kPeerJoined on a Server:
  // the Hello (also delivered as a kMessage right after). kPeerLost: the Bye when the peer left
  // with one, otherwise a default Message.
  Message message;
};

// Counts since the transport started. Bytes are frame bytes (msgpack frames, chunk frames
// included; not ZeroMQ's own framing, routing ids or CURVE overhead).
struct TransportStats {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t frames_sent = 0;
  uint64_t frames_received = 0;
  uint64_t messages_sent = 0;      // complete messages handed to ZeroMQ, heartbeats excluded
  uint64_t messages_received = 0;  // accepted messages, heartbeats excluded
  uint64_t heartbeats_sent = 0;
  uint64_t heartbeats_received = 0;
  uint64_t rejected = 0;  // incoming frames refused (codec, chunk, session, unknown peer)
  uint64_t dropped = 0;   // outgoing frames dropped: the peer was gone (EHOSTUNREACH), or lost
  uint64_t retries = 0;   // sends deferred because ZeroMQ's queue to the peer was full (EAGAIN)
  // Frame bytes the encoder produced (messages, heartbeats and errors; not offers or grants). A
  // Broadcast counts its frames once, however many peers get them. Totals only (0 per peer).
  uint64_t bytes_encoded = 0;
  // Upload flow control. Server: offers accepted and grants sent; Client: offers queued and grants
  // accepted.
  uint64_t uploads_offered = 0;
  uint64_t uploads_granted = 0;
  // Server totals only: chunked messages being reassembled now, across all peers, and the most
  // there ever were at once (at most max_active_uploads).
  uint64_t reassemblies = 0;
  uint64_t reassemblies_peak = 0;
};

// Coordinator side: a ROUTER bound to the endpoint (ZMQ_ROUTER_MANDATORY, ZMQ_ROUTER_HANDOVER,
// linger 0, ZMQ_MAXMSGSIZE = kMaxFrameBytes so libzmq drops a bigger frame and the connection).
// A peer's session starts with an accepted Hello (kPeerJoined, then the Hello as kMessage) and
// ends with a Bye, silence for peer_timeout_ms (kPeerLost) or Disconnect().
class Server {
 public:
  static StatusOr<std::unique_ptr<Server>> Bind(const TransportOptions& options);
  ~Server();  // stops the I/O thread; closes with linger 0 (queued frames are dropped)
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound endpoint, with the real port when bound to port 0.
  std::string endpoint() const;

  // Thread-safe. Validates and encodes `message` (invalid: InvalidArgument), stamps the run id and
  // the peer's next sequence number (the caller sets round and task_id), chunks it when large and
  // queues it for the I/O thread; returns without waiting for the network. NotFound when `peer`
  // has no live session. Frames for a peer that is gone by the time they are sent are dropped and
  // counted (stats().dropped).
  Status Send(const std::string& peer, Message message);

  // Thread-safe. Sends one message to many peers, encoded once: every peer gets the same frames
  // (shared, reference-counted, lent to ZeroMQ without copying; freed when the last peer's copy is
  // sent), so a model sent to 100 clients takes the memory of one encoding. The sequence number is
  // one value S above every target's last sequence (per-peer sequences stay strictly increasing;
  // the protocol allows gaps), so the frames are byte-identical for all peers. Peers without a
  // live session are appended to *unreachable (may be null; sorted) and skipped; a peer listed
  // twice gets the message once. Errors only for an invalid message (InvalidArgument, nothing
  // sent) or a stopped transport. Holds the targets' send locks while encoding: a Send to one of
  // them waits for it.
  Status Broadcast(const std::vector<std::string>& peers, Message message,
                   std::vector<std::string>* unreachable);

  // One consumer thread. The next event, or an empty optional after `timeout` (normal). An error
  // only when the transport itself failed (its I/O thread stopped). Taking a large message may let
  // the transport grant the next waiting upload (see TransportOptions::max_active_uploads).
  StatusOr<std::optional<TransportEvent>> Receive(std::chrono::milliseconds timeout);

  // Thread-safe. From now on, messages from any peer with envelope.round < round are rejected as
  // stale (Heartbeat and Bye excepted: they are never stale). Never lowers the round.
  void AdvanceRound(uint64_t round);

  // Thread-safe. Forgets `peer`'s session (it must Hello again); frames already queued to it are
  // still sent. No kPeerLost event: the owner asked for it.
  void Disconnect(const std::string& peer);

  // Identities with a live session, sorted.
  std::vector<std::string> peers() const;

  TransportStats stats() const;                   // thread-safe
  TransportStats peer_stats(const std::string& peer) const;  // zeros for an unknown peer

  class Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Client side: a DEALER connected to the coordinator (linger 0, ZMQ_MAXMSGSIZE, reconnect with
// exponential backoff). ZeroMQ reconnects by itself after a network failure; the session is the
// owner's: it sends Hello, waits for Welcome, and after kPeerLost calls Reconnect() and says Hello
// again.
class Client {
 public:
  static StatusOr<std::unique_ptr<Client>> Connect(const TransportOptions& options);
  ~Client();  // stops the I/O thread; closes with linger 0 (sends no Bye: send one first)
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Thread-safe. As Server::Send: validates, stamps the next sequence number and the run id
  // learned from the coordinator's first accepted message (0 before it, as a first Hello
  // carries), chunks and queues. A chunked message is announced with a ChunkOffer and its chunks
  // are held until the coordinator's ChunkGrant arrives; other messages and heartbeats keep
  // flowing meanwhile.
  Status Send(Message message);

  // One consumer thread; as Server::Receive. Events: kPeerJoined when the first message of a
  // connection is accepted from the coordinator, kMessage, kPeerLost (nothing accepted for
  // peer_timeout_ms, counted from the connect or the last accepted frame; or a Bye).
  StatusOr<std::optional<TransportEvent>> Receive(std::chrono::milliseconds timeout);

  // Drops the connection and the session and connects again with a fresh socket: sequence
  // numbers restart, a new validator, the run id forgotten, queued frames and uploads waiting for
  // a grant dropped. The owner
  // then sends Hello again. Waits for the I/O thread to switch sockets (up to a few seconds).
  Status Reconnect();

  TransportStats stats() const;  // thread-safe

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::wire

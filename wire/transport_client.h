// The client side of the ZeroMQ transport (see wire/transport.h): a DEALER connected to the
// coordinator, an I/O thread that validates every frame, keeps heartbeats flowing and holds a
// large upload's chunks until the coordinator grants it. Behaviour: docs/protocol.md "Transport".
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include "core/status.h"
#include "wire/message.h"
#include "wire/transport_types.h"

namespace tandem::wire {

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

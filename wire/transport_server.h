// The coordinator side of the ZeroMQ transport (see wire/transport.h): a ROUTER bound to one
// endpoint, an I/O thread that validates every frame, keeps heartbeats flowing and grants uploads
// one at a time (ChunkOffer / ChunkGrant). Behaviour: docs/protocol.md "Transport".
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "wire/message.h"
#include "wire/transport_types.h"

namespace tandem::wire {

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
  // only when the transport itself failed (its I/O thread stopped). A large message returned here
  // counts against upload_queue_budget_bytes until the next call to Receive (the consumer is then
  // done with it): only then may the transport grant the next waiting upload, so that an upload
  // is not reassembled while the previous one is still being folded in.
  StatusOr<std::optional<TransportEvent>> Receive(std::chrono::milliseconds timeout);

  // Thread-safe. From now on, messages from any peer with envelope.round < round are rejected as
  // stale (Heartbeat and Bye excepted: they are never stale). Never lowers the round.
  void AdvanceRound(uint64_t round);

  // Thread-safe. The answer to a kUploadOffered event (TransportOptions::stream_contributions):
  // whether the upload's contribution streams (its values come as kUploadValues events as its
  // chunks arrive, then the result without them) or comes whole. The upload is granted only once
  // answered; an answer for an upload that is gone is ignored.
  void DecideUpload(const std::string& peer, uint64_t message_id, bool stream);

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

}  // namespace tandem::wire

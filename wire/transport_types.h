// The transport's public value types (see wire/transport.h): the options a Server or Client is
// built from, the events Receive() returns and the counters stats() reports. Behaviour:
// docs/protocol.md "Transport".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "wire/curve.h"
#include "wire/message.h"
#include "wire/protocol.h"

namespace tandem::wire {

// The suffix of a client's service session's identity ("client-3" asks as "client-3.serve"):
// TransportOptions.service_session.
inline constexpr std::string_view kServiceSessionSuffix = ".serve";

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
  // Client: open the client's service session (for serve/ requests only) rather than its round
  // session. Its identity is the client's own plus kServiceSessionSuffix: without CURVE appended
  // to `identity`; with CURVE the Server appends it to the key's allow-list NAME, so one key has
  // at most these two sessions and each keeps its own sequence numbers and liveness.
  bool service_session = false;
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
  // Server: a grant whose first chunk has not arrived this long after it was given is withdrawn
  // (the offer is dropped; later chunks are refused), so a peer that offers and never sends holds
  // the slot for this long, not for the 2 x peer_timeout_ms that stalls a started upload. Such a
  // no-show goes to the back: its next offer waits behind every other peer's, and is not granted
  // at all for a penalty that starts at this timeout and doubles with each no-show in a row (up to
  // 64 x), ended by an upload it completes. Capped at peer_timeout_ms. >= 1.
  uint32_t upload_grant_timeout_ms = 2000;
  // Server: streamed contributions (docs/protocol.md "Streamed contributions"). An offer that
  // declares a contribution is reported as kUploadOffered and is not granted until the owner
  // answers with Server::DecideUpload; a streamed upload's values then come as kUploadValues
  // events while its chunks arrive, and the result without them as kMessage (kUploadFailed if it
  // will not complete). Off: every upload is reassembled whole, as before.
  bool stream_contributions = false;
  // Server: while frames of a Broadcast are still held (some peer has not been sent them yet), an
  // offer that arrives waits up to this long before it is reported (kUploadOffered) or granted, so
  // the owner does not start a model-sized running sum while the model's frames are still in
  // memory. Ends early, for every waiting offer, when the last broadcast frame is released.
  // 0: offers are reported and granted as they arrive.
  uint32_t upload_hold_for_broadcast_ms = 0;
};

struct TransportEvent {
  // kUploadOffered, kUploadValues, kUploadFailed: streamed contributions (Server with
  // TransportOptions::stream_contributions; docs/protocol.md "Streamed contributions").
  enum class Kind { kMessage, kPeerJoined, kPeerLost, kUploadOffered, kUploadValues, kUploadFailed };
  Kind kind = Kind::kMessage;
  std::string peer;  // Server: the client's identity; Client: "coordinator"
  // kMessage: the message (it passed the codec and the session checks). kPeerJoined on a Server:
  // the Hello (also delivered as a kMessage right after). kPeerLost: the Bye when the peer left
  // with one, otherwise a default Message.
  Message message;
  // The upload events: the result's message id (its sequence number).
  uint64_t upload_id = 0;
  // kUploadOffered: what it contributes. The owner must answer with Server::DecideUpload.
  uint64_t round = 0, task_id = 0, values_total = 0;
  double weight = 0.0;
  // kUploadValues: little-endian float32 values of the contribution, from value `value_offset`.
  uint64_t value_offset = 0;
  std::string values;
  // kUploadFailed: why it will not complete.
  std::string reason;
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

}  // namespace tandem::wire

// What the transport's Server and Client share (see wire/transport.h): the owner-to-I/O-thread
// outbox, the event queue, the counters, the frame encoder's queueing and the codec part of the
// receive path, per docs/protocol.md "Transport". Internal to wire/ (namespace detail).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "wire/chunk.h"
#include "wire/message.h"
#include "wire/session.h"
#include "wire/transport_types.h"
#include "wire/zmq_socket.h"

namespace tandem::wire::detail {

using Clock = std::chrono::steady_clock;

// Work done per loop turn before timers and the other direction get their turn.
constexpr int kMaxFramesPerTurn = 256;
// Retry delays for a peer whose ZeroMQ queue is full (EAGAIN): doubled up to the maximum.
constexpr int kRetryInitialMs = 1;
constexpr int kRetryMaxMs = 50;

inline int64_t MillisBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

bool IsInproc(const std::string& endpoint);  // ZeroMQ runs no security handshake there

// A CURVE client's routing id: this many random bytes (unguessable, so no other client can take
// its connection over with ZMQ_ROUTER_HANDOVER), then kServiceSessionSuffix for its service
// session. The Server reads the identity from ZAP's User-Id and only the suffix from the id.
constexpr size_t kCurveRoutingIdBytes = 16;

// Counters behind TransportStats, updated from any thread.
struct AtomicStats {
  std::atomic<uint64_t> bytes_sent{0}, bytes_received{0}, frames_sent{0}, frames_received{0},
      messages_sent{0}, messages_received{0}, heartbeats_sent{0}, heartbeats_received{0},
      rejected{0}, dropped{0}, retries{0}, bytes_encoded{0}, uploads_offered{0},
      uploads_granted{0}, reassemblies{0}, reassemblies_peak{0};
  TransportStats Snapshot() const {
    TransportStats s;
    s.bytes_sent = bytes_sent.load();
    s.bytes_received = bytes_received.load();
    s.frames_sent = frames_sent.load();
    s.frames_received = frames_received.load();
    s.messages_sent = messages_sent.load();
    s.messages_received = messages_received.load();
    s.heartbeats_sent = heartbeats_sent.load();
    s.heartbeats_received = heartbeats_received.load();
    s.rejected = rejected.load();
    s.dropped = dropped.load();
    s.retries = retries.load();
    s.bytes_encoded = bytes_encoded.load();
    s.uploads_offered = uploads_offered.load();
    s.uploads_granted = uploads_granted.load();
    s.reassemblies = reassemblies.load();
    s.reassemblies_peak = reassemblies_peak.load();
    return s;
  }
};

inline void Add(std::atomic<uint64_t>& a, AtomicStats* peer,
                std::atomic<uint64_t> AtomicStats::*field, uint64_t n = 1) {
  a.fetch_add(n, std::memory_order_relaxed);
  if (peer != nullptr) (peer->*field).fetch_add(n, std::memory_order_relaxed);
}

// Something an owner thread hands the I/O thread: a frame to send, or a command.
struct OutItem {
  enum class Kind { kFrame, kDisconnect, kReconnect };
  Kind kind = Kind::kFrame;
  std::string peer;        // Server: identity
  std::string routing_id;  // Server: where the frame goes
  Frame frame;
  MessageType type = MessageType::kHeartbeat;  // of the message the frame belongs to, or
                                               // kChunkOffer / kChunkGrant for those frames
  bool last = true;                            // the frame completes its message
  // Client: a chunk of an upload, held until the coordinator grants `message_id` (also set on
  // the upload's ChunkOffer).
  bool held = false;
  uint64_t message_id = 0;
  uint64_t epoch = 0;                          // kDisconnect: the session it ends
  std::shared_ptr<std::promise<Status>> done;  // kReconnect
};

// The owner-to-I/O-thread queue. Pushing to an empty queue wakes the I/O thread, which always
// takes the whole queue after draining the eventfd, so no item waits for a later wake-up.
class Outbox {
 public:
  void Push(OutItem item) {
    bool was_empty;
    {
      std::lock_guard<std::mutex> lock(mu_);
      was_empty = items_.empty();
      items_.push_back(std::move(item));
    }
    if (was_empty) wake_.Signal();
  }
  std::deque<OutItem> TakeAll() {
    std::lock_guard<std::mutex> lock(mu_);
    std::deque<OutItem> out;
    out.swap(items_);
    return out;
  }
  WakeFd& wake() { return wake_; }

 private:
  std::mutex mu_;
  std::deque<OutItem> items_;
  WakeFd wake_;
};

// Where the frames of a message go: a peer's identity and the routing id of its connection.
struct Target {
  const std::string* peer;
  const std::string* routing_id;
};

// Validates and encodes `message` and pushes its frames, as they are produced, to every target
// (the previous frame is pushed when the next arrives, so the last can be marked). Several targets
// get the same frames, shared. With `offer` (a Client's upload), a message that goes as chunks is
// preceded by a ChunkOffer and its chunks are pushed held, for the I/O thread to keep until the
// grant. Nothing is pushed for an invalid message. With `shared_bytes`, the bytes of frames shared
// by several targets are added to it while any target's copy is alive (the last release, which
// may happen on a ZeroMQ thread, subtracts them).
Status QueueMessage(const Message& message, size_t chunk_bytes, Outbox& outbox,
                    const std::vector<Target>& targets, bool offer, AtomicStats& stats,
                    const std::shared_ptr<std::atomic<int64_t>>& shared_bytes = nullptr);

// Tensor bytes a decoded message holds: what a large message costs while it waits for the owner.
size_t PayloadBytes(const Message& message);

// Events from the I/O thread to the owner's Receive(). Counts the tensor bytes of the messages
// waiting, and of the last one taken until the (single) consumer comes back for the next: that is
// when it has folded the message in and let it go, so the bytes are in memory until then. Handing
// a message back that way wakes `on_take` (the Server's I/O thread, which may then grant an
// upload), so with the default budget the next upload is reassembled only once the previous one is
// done with, not while it is being folded in.
class EventQueue {
 public:
  explicit EventQueue(WakeFd* on_take = nullptr) : on_take_(on_take) {}
  void Push(TransportEvent event) {
    const size_t bytes = PayloadBytes(event.message) + event.values.size();
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(event));
      bytes_.fetch_add(bytes, std::memory_order_relaxed);
    }
    cv_.notify_one();
  }
  // Waiting, plus the message the consumer holds.
  size_t queued_bytes() const { return bytes_.load(std::memory_order_relaxed); }
  void Fail(Status status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      failed_ = std::move(status);
    }
    cv_.notify_all();
  }
  StatusOr<std::optional<TransportEvent>> Pop(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (lent_bytes_ > 0) {  // the consumer is back: it is done with the last one
      bytes_.fetch_sub(lent_bytes_, std::memory_order_relaxed);
      lent_bytes_ = 0;
      if (on_take_ != nullptr) on_take_->Signal();
    }
    cv_.wait_for(lock, timeout, [&] { return !events_.empty() || !failed_.ok(); });
    if (!events_.empty()) {
      TransportEvent event = std::move(events_.front());
      events_.pop_front();
      lent_bytes_ = PayloadBytes(event.message) + event.values.size();  // still counted in bytes_
      return std::optional<TransportEvent>(std::move(event));
    }
    if (!failed_.ok()) return failed_;
    return std::optional<TransportEvent>();
  }

 private:
  WakeFd* on_take_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TransportEvent> events_;
  std::atomic<size_t> bytes_{0};
  size_t lent_bytes_ = 0;  // of the event the consumer took last (under mu_)
  Status failed_;
};

// The option checks both sides make (InvalidArgument naming the option).
Status ValidateCommon(const TransportOptions& o);

// Timer granularity: heartbeats and timeouts are checked this often.
std::chrono::milliseconds TickFor(uint32_t heartbeat_interval_ms, uint32_t peer_timeout_ms);

// The messages the transport writes itself; the error text is cut to kMaxStringBytes.
Message HeartbeatMessage(uint64_t run_id, uint64_t round, uint64_t sequence);
Message ErrorMessage(uint64_t run_id, uint64_t round, uint64_t task_id, uint64_t sequence,
                     ErrorCode code, const std::string& text);

// Heartbeat and Bye carry nothing that belongs to a round: they are never stale. Everything else
// is checked as it is.
Status AcceptIntoSession(SessionValidator& validator, const Message& message);

// A frame that reached the codec: either a decoded message or the reason it was refused.
// `complete` is false while a chunked message waits for more chunks. `chunk`: the frame was a
// chunk that decoded, of message `chunk_id`.
struct Decoded {
  bool complete = false;
  std::optional<Message> message;
  Status error;
  bool chunk = false;
  uint64_t chunk_id = 0;
  bool reassembled = false;  // the chunk went to the reassembler (admitted)
  // A streamed bin (ChunkReassembler::StreamBin): the bytes this chunk completed, whole 4-byte
  // words, from byte `bin_offset` of the bin; `streamed`: the message completed without them.
  std::string bin_piece;
  uint64_t bin_offset = 0;
  bool streamed = false;
};

// Decides whether a decoded chunk may go to the reassembler (the Server: only granted uploads).
using ChunkAdmission = std::function<Status(const ChunkView&)>;

// The codec part of the incoming path, shared by both sides: size bound, PeekType, chunks into
// `reassembler` (null: chunks are refused, the peer has no session) if `admit` lets them,
// DecodeMessage. Offers and grants are handled by the callers, before this; here they are refused.
Decoded DecodeFrame(std::string_view bytes, ChunkReassembler* reassembler,
                    const ChunkAdmission& admit = nullptr);

}  // namespace tandem::wire::detail

// The ZeroMQ transport (see wire/transport.h): an I/O thread per transport owns the socket; owner
// threads hand it frames through a queue and an eventfd; the ZAP handler that enforces the
// allow-list runs on its own thread, one per ZeroMQ context. The Server's I/O thread also grants
// uploads (ChunkOffer -> ChunkGrant), so the memory that uploads take stays bounded. libzmq's C API
// is used directly, so every failure is an errno turned into a Status here.
#include "wire/transport.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "core/logging.h"
#include "wire/chunk.h"
#include "wire/session.h"

namespace tandem::wire {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr const char* kCoordinatorPeer = "coordinator";
// Work done per loop turn before timers and the other direction get their turn.
constexpr int kMaxFramesPerTurn = 256;
// Retry delays for a peer whose ZeroMQ queue is full (EAGAIN): doubled up to the maximum.
constexpr int kRetryInitialMs = 1;
constexpr int kRetryMaxMs = 50;
constexpr auto kReconnectWait = std::chrono::seconds(5);

int64_t MillisBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

Status ZmqError(const std::string& what) {
  const int err = zmq_errno();
  return Status::Unavailable(what + ": " + zmq_strerror(err));
}

Status SetOption(void* socket, int option, int value, const char* name) {
  if (zmq_setsockopt(socket, option, &value, sizeof(value)) != 0) {
    return ZmqError(std::string("cannot set ") + name);
  }
  return Status::Ok();
}

Status SetOption(void* socket, int option, const std::string& value, const char* name) {
  if (zmq_setsockopt(socket, option, value.data(), value.size()) != 0) {
    return ZmqError(std::string("cannot set ") + name);
  }
  return Status::Ok();
}

Status SetMaxMessageSize(void* socket) {
  const int64_t max = static_cast<int64_t>(kMaxFrameBytes);
  if (zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &max, sizeof(max)) != 0) {
    return ZmqError("cannot set ZMQ_MAXMSGSIZE");
  }
  return Status::Ok();
}

void CloseSocket(void*& socket) {
  if (socket == nullptr) return;
  int linger = 0;
  zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof(linger));
  zmq_close(socket);
  socket = nullptr;
}

bool IsInproc(const std::string& endpoint) { return endpoint.rfind("inproc://", 0) == 0; }

// The ZeroMQ context a transport uses: the caller's, or its own.
class Context {
 public:
  explicit Context(void* shared) : ctx_(shared), owned_(shared == nullptr) {
    if (owned_) ctx_ = zmq_ctx_new();
  }
  ~Context() {
    if (owned_ && ctx_ != nullptr) zmq_ctx_term(ctx_);
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_;
  bool owned_;
};

// Wakes an I/O thread blocked in zmq_poll: an eventfd polled next to the socket.
class WakeFd {
 public:
  WakeFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~WakeFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  WakeFd(const WakeFd&) = delete;
  WakeFd& operator=(const WakeFd&) = delete;
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void Signal() {
    const uint64_t one = 1;
    while (::write(fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
  }
  void Drain() {
    uint64_t value;
    while (::read(fd_, &value, sizeof(value)) < 0 && errno == EINTR) {
    }
  }

 private:
  int fd_;
};

// A Frame lent to ZeroMQ without copying: ZeroMQ frees it when done, unless the send failed and
// the frame is taken back (for a retry).
struct LentFrame {
  Frame frame;
  bool zmq_owns = true;
};

void ReleaseLentFrame(void*, void* hint) {
  auto* lent = static_cast<LentFrame*>(hint);
  if (lent->zmq_owns) delete lent;
}

// Sends `frame` zero-copy. Returns 0, or the errno with `frame` left intact.
int SendFrame(void* socket, Frame& frame, int flags) {
  auto* lent = new LentFrame{std::move(frame)};
  const std::string_view bytes = lent->frame.bytes();
  zmq_msg_t msg;
  zmq_msg_init_data(&msg, const_cast<char*>(bytes.data()), bytes.size(), &ReleaseLentFrame, lent);
  if (zmq_msg_send(&msg, socket, flags) >= 0) return 0;
  const int err = zmq_errno();
  lent->zmq_owns = false;
  zmq_msg_close(&msg);  // calls ReleaseLentFrame, which now leaves `lent` to us
  frame = std::move(lent->frame);
  delete lent;
  return err;
}

// One received ZeroMQ message part.
class ZmqMessage {
 public:
  ZmqMessage() { zmq_msg_init(&msg_); }
  ~ZmqMessage() { zmq_msg_close(&msg_); }
  ZmqMessage(const ZmqMessage&) = delete;
  ZmqMessage& operator=(const ZmqMessage&) = delete;
  zmq_msg_t* get() { return &msg_; }
  std::string_view bytes() { return {static_cast<const char*>(zmq_msg_data(&msg_)), zmq_msg_size(&msg_)}; }
  bool more() { return zmq_msg_more(&msg_) != 0; }
  // The ZAP User-Id of the connection it came from (CURVE), or null.
  const char* user_id() { return zmq_msg_gets(&msg_, "User-Id"); }

 private:
  zmq_msg_t msg_;
};

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

void Add(std::atomic<uint64_t>& a, AtomicStats* peer, std::atomic<uint64_t> AtomicStats::*field,
         uint64_t n = 1) {
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
// grant. Nothing is pushed for an invalid message.
Status QueueMessage(const Message& message, size_t chunk_bytes, Outbox& outbox,
                    const std::vector<Target>& targets, bool offer, AtomicStats& stats) {
  std::optional<Frame> pending;
  bool held = false;
  auto push = [&](Frame frame, bool last, MessageType type) {
    std::shared_ptr<const Frame> shared;
    if (targets.size() > 1) shared = std::make_shared<const Frame>(std::move(frame));
    for (const Target& target : targets) {
      OutItem item;
      item.peer = *target.peer;
      item.routing_id = *target.routing_id;
      item.frame = shared ? Frame(shared) : std::move(frame);
      item.type = type;
      item.last = last;
      item.held = held;
      item.message_id = message.envelope.sequence;
      outbox.Push(std::move(item));
    }
  };
  auto start = [&](uint64_t total_bytes, bool chunked, uint32_t count) {
    if (!offer || !chunked) return;
    push(Frame(EncodeChunkOffer({message.envelope.sequence, count, total_bytes})), true,
         MessageType::kChunkOffer);
    stats.uploads_offered.fetch_add(1, std::memory_order_relaxed);
    held = true;
  };
  Status status = EncodeMessageFrames(message, chunk_bytes, start, [&](Frame frame) {
    stats.bytes_encoded.fetch_add(frame.size(), std::memory_order_relaxed);
    if (pending) push(std::move(*pending), false, message.type());
    pending = std::move(frame);
  });
  if (!status.ok()) return status;
  push(std::move(*pending), true, message.type());
  return Status::Ok();
}

// Tensor bytes a decoded message holds: what a large message costs while it waits for the owner.
size_t PayloadBytes(const Message& message) {
  const std::vector<Tensor>* tensors = nullptr;
  if (const auto* r = std::get_if<TaskResult>(&message.body)) tensors = &r->tensors;
  if (const auto* a = std::get_if<TaskAssign>(&message.body)) tensors = &a->tensors;
  size_t bytes = 0;
  if (tensors != nullptr) {
    for (const Tensor& t : *tensors) bytes += t.data.size();
  }
  return bytes;
}

// Events from the I/O thread to the owner's Receive(). Counts the tensor bytes of the messages
// waiting; taking one that holds any wakes `on_take` (the Server's I/O thread, which may then
// grant an upload).
class EventQueue {
 public:
  explicit EventQueue(WakeFd* on_take = nullptr) : on_take_(on_take) {}
  void Push(TransportEvent event) {
    const size_t bytes = PayloadBytes(event.message);
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(event));
      bytes_.fetch_add(bytes, std::memory_order_relaxed);
    }
    cv_.notify_one();
  }
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
    cv_.wait_for(lock, timeout, [&] { return !events_.empty() || !failed_.ok(); });
    if (!events_.empty()) {
      TransportEvent event = std::move(events_.front());
      events_.pop_front();
      const size_t bytes = PayloadBytes(event.message);
      bytes_.fetch_sub(bytes, std::memory_order_relaxed);
      lock.unlock();
      if (bytes > 0 && on_take_ != nullptr) on_take_->Signal();
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
  Status failed_;
};

Status ValidateCommon(const TransportOptions& o) {
  if (o.endpoint.empty()) return Status::InvalidArgument("transport: no endpoint");
  if (o.heartbeat_interval_ms == 0) {
    return Status::InvalidArgument("transport: heartbeat_interval_ms must be positive");
  }
  if (o.peer_timeout_ms < o.heartbeat_interval_ms) {
    return Status::InvalidArgument("transport: peer_timeout_ms (" +
                                   std::to_string(o.peer_timeout_ms) +
                                   ") must be at least heartbeat_interval_ms (" +
                                   std::to_string(o.heartbeat_interval_ms) + ")");
  }
  if (o.chunk_bytes < kMinChunkBytes || o.chunk_bytes > kMaxChunkBytes) {
    return Status::InvalidArgument("transport: chunk_bytes " + std::to_string(o.chunk_bytes) +
                                   " outside " + std::to_string(kMinChunkBytes) + ".." +
                                   std::to_string(kMaxChunkBytes));
  }
  if (o.high_water_mark < 0) return Status::InvalidArgument("transport: negative high_water_mark");
  if (o.max_active_uploads == 0 || o.upload_queue_budget_bytes == 0) {
    return Status::InvalidArgument("transport: max_active_uploads and upload_queue_budget_bytes "
                                   "must be positive (zero would never grant an upload)");
  }
  if (o.curve && IsInproc(o.endpoint)) {
    return Status::InvalidArgument("transport: CURVE needs tcp:// or ipc://; ZeroMQ runs no "
                                   "security handshake on inproc:// (" + o.endpoint + ")");
  }
  return Status::Ok();
}

// Timer granularity: heartbeats and timeouts are checked this often.
std::chrono::milliseconds TickFor(uint32_t heartbeat_interval_ms, uint32_t peer_timeout_ms) {
  const uint32_t shortest = std::min(heartbeat_interval_ms, peer_timeout_ms);
  return std::chrono::milliseconds(std::clamp<uint32_t>(shortest / 4, 1, 250));
}

Message HeartbeatMessage(uint64_t run_id, uint64_t round, uint64_t sequence) {
  Message m;
  m.envelope.run_id = run_id;
  m.envelope.round = round;
  m.envelope.sequence = sequence;
  m.body = Heartbeat{};
  return m;
}

Message ErrorMessage(uint64_t run_id, uint64_t round, uint64_t task_id, uint64_t sequence,
                     ErrorCode code, const std::string& text) {
  Message m;
  m.envelope.run_id = run_id;
  m.envelope.round = round;
  m.envelope.task_id = task_id;
  m.envelope.sequence = sequence;
  m.body = Error{code, text.substr(0, kMaxStringBytes)};
  return m;
}

// Heartbeat and Bye carry nothing that belongs to a round: they are never stale. Everything else
// is checked as it is.
Status AcceptIntoSession(SessionValidator& validator, const Message& message) {
  const MessageType type = message.type();
  if ((type == MessageType::kHeartbeat || type == MessageType::kBye) &&
      message.envelope.round < validator.current_round()) {
    Message copy{message.envelope, message.body};
    copy.envelope.round = validator.current_round();
    return validator.Accept(copy);
  }
  return validator.Accept(message);
}

// A message that completed an offered upload. Its offer took its place in the sequence (checked
// and recorded then), so its sequence must be the offered id and is not checked again (the peer
// may have sent later numbers while the upload waited); everything else is checked as usual.
Status AcceptUpload(SessionValidator& validator, Message& message, uint64_t offered_id) {
  if (message.envelope.sequence != offered_id) {
    return Status::Corruption("chunked message carries sequence " +
                              std::to_string(message.envelope.sequence) + ", its offer said " +
                              std::to_string(offered_id));
  }
  message.envelope.sequence = validator.last_sequence().value_or(0) + 1;
  Status checked = validator.Check(message);
  message.envelope.sequence = offered_id;
  if (!checked.ok()) return checked;
  validator.AdvanceRound(message.envelope.round);  // as Accept does
  return Status::Ok();
}

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
};

// Decides whether a decoded chunk may go to the reassembler (the Server: only granted uploads).
using ChunkAdmission = std::function<Status(const ChunkView&)>;

// The codec part of the incoming path, shared by both sides: size bound, PeekType, chunks into
// `reassembler` (null: chunks are refused, the peer has no session) if `admit` lets them,
// DecodeMessage. Offers and grants are handled by the callers, before this; here they are refused.
Decoded DecodeFrame(std::string_view bytes, ChunkReassembler* reassembler,
                    const ChunkAdmission& admit = nullptr) {
  Decoded out;
  if (bytes.size() > kMaxFrameBytes) {
    out.error = Status::Corruption("frame of " + std::to_string(bytes.size()) +
                                   " bytes exceeds the limit of " + std::to_string(kMaxFrameBytes));
    return out;
  }
  StatusOr<MessageType> type = PeekType(bytes);
  if (!type.ok()) {
    out.error = type.status();
    return out;
  }
  if (*type == MessageType::kChunkOffer || *type == MessageType::kChunkGrant) {
    out.error = Status::Corruption("a " + std::string(MessageTypeName(*type)) +
                                   " frame, which only the other side receives");
    return out;
  }
  if (*type == MessageType::kChunk) {
    if (reassembler == nullptr) {
      out.error = Status::FailedPrecondition("a chunk from a peer that has not joined");
      return out;
    }
    StatusOr<ChunkView> chunk = DecodeChunkView(bytes);
    if (!chunk.ok()) {
      out.error = chunk.status();
      return out;
    }
    out.chunk = true;
    out.chunk_id = chunk->message_id;
    if (admit) {
      Status admitted = admit(*chunk);
      if (!admitted.ok()) {
        out.error = std::move(admitted);
        return out;
      }
    }
    out.reassembled = true;
    StatusOr<std::optional<AssembledMessage>> whole = reassembler->AddAssembled(*chunk);
    if (!whole.ok()) {
      out.error = whole.status();
      return out;
    }
    if (!whole->has_value()) return out;  // accepted, incomplete
    StatusOr<Message> message = DecodeAssembled(std::move(**whole));
    out.complete = true;
    if (!message.ok()) {
      out.error = message.status();
    } else {
      out.message = std::move(*message);
    }
    return out;
  }
  out.complete = true;
  if (bytes.size() > kChunkThresholdBytes) {
    out.error = Status::Corruption("unchunked message of " + std::to_string(bytes.size()) +
                                   " bytes; messages above " +
                                   std::to_string(kChunkThresholdBytes) + " bytes travel as chunks");
    return out;
  }
  StatusOr<Message> message = DecodeMessage(bytes);
  if (!message.ok()) {
    out.error = message.status();
  } else {
    out.message = std::move(*message);
  }
  return out;
}

// A Client's only target: the coordinator, over its one connection.
std::vector<Target> CoordinatorTarget() {
  static const std::string peer = kCoordinatorPeer;
  static const std::string routing_id;
  return {Target{&peer, &routing_id}};
}

std::string RandomRoutingId() {
  std::random_device rd;
  std::string id(16, '\0');
  for (char& c : id) c = static_cast<char>(rd() & 0xFF);
  if (id[0] == '\0') id[0] = 1;  // ids starting with 0 are reserved for ZeroMQ's own
  return id;
}

std::string Printable(std::string_view routing_id) {
  std::string out;
  for (unsigned char c : routing_id.substr(0, 64)) {
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// ---- ZAP: one handler per ZeroMQ context, shared by the Servers in it. ----

// Answers ZAP requests (RFC 27) for every CURVE Server in one context: each Server registers its
// allow-list under its own ZAP domain; a request is accepted only for mechanism CURVE and a
// client key on that domain's list, and the reply's User-Id is the key's allow-list NAME.
class ZapHandler {
 public:
  // The context's handler, started on first use. Fails when another ZAP handler (not ours) is
  // bound in the context.
  static StatusOr<std::shared_ptr<ZapHandler>> ForContext(void* ctx);

  ~ZapHandler();
  std::string Register(const AllowList& list);
  void Unregister(const std::string& domain);

 private:
  explicit ZapHandler(void* ctx) : ctx_(ctx) {}
  Status Start();
  void Run();
  void Handle();

  static std::mutex registry_mu_;
  static std::map<void*, std::weak_ptr<ZapHandler>> registry_;
  static std::atomic<uint64_t> next_domain_;

  void* ctx_;
  void* socket_ = nullptr;
  WakeFd wake_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, AllowList> lists_;  // by ZAP domain
  std::shared_ptr<spdlog::logger> log_ = GetLogger("wire");
};

std::mutex ZapHandler::registry_mu_;
std::map<void*, std::weak_ptr<ZapHandler>> ZapHandler::registry_;
std::atomic<uint64_t> ZapHandler::next_domain_{1};

StatusOr<std::shared_ptr<ZapHandler>> ZapHandler::ForContext(void* ctx) {
  std::shared_ptr<ZapHandler> handler;
  Status started;
  {
    std::lock_guard<std::mutex> lock(registry_mu_);
    if (auto existing = registry_[ctx].lock()) return existing;
    // The deleter takes the registry lock, so a handler being torn down has unbound its endpoint
    // before another can be created for the same context.
    handler.reset(new ZapHandler(ctx), [](ZapHandler* h) {
      std::lock_guard<std::mutex> registry_lock(registry_mu_);
      auto it = registry_.find(h->ctx_);
      if (it != registry_.end() && it->second.expired()) registry_.erase(it);
      delete h;
    });
    started = handler->Start();
    if (started.ok()) {
      registry_[ctx] = handler;
      return handler;
    }
  }
  return started;  // `handler` is destroyed after this, outside the registry lock
}

Status ZapHandler::Start() {
  if (!wake_.ok()) return Status::Internal("ZAP handler: cannot create an eventfd");
  socket_ = zmq_socket(ctx_, ZMQ_REP);
  if (socket_ == nullptr) return ZmqError("ZAP handler: cannot create a socket");
  TANDEM_RETURN_IF_ERROR(SetOption(socket_, ZMQ_LINGER, 0, "ZMQ_LINGER"));
  if (zmq_bind(socket_, kZapEndpoint) != 0) {
    Status s = ZmqError(std::string("ZAP handler: cannot bind ") + kZapEndpoint +
                        " (another ZAP handler in this ZeroMQ context?)");
    CloseSocket(socket_);
    return s;
  }
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) {
    wake_.Signal();
    thread_.join();
  }
  if (socket_ != nullptr) {
    zmq_unbind(socket_, kZapEndpoint);
    CloseSocket(socket_);
  }
}

std::string ZapHandler::Register(const AllowList& list) {
  const std::string domain = "tandem-" + std::to_string(next_domain_.fetch_add(1));
  std::lock_guard<std::mutex> lock(mu_);
  lists_[domain] = list;
  return domain;
}

void ZapHandler::Unregister(const std::string& domain) {
  std::lock_guard<std::mutex> lock(mu_);
  lists_.erase(domain);
}

void ZapHandler::Run() {
  while (!stop_.load()) {
    zmq_pollitem_t items[2] = {{socket_, 0, ZMQ_POLLIN, 0}, {nullptr, wake_.fd(), ZMQ_POLLIN, 0}};
    const int rc = zmq_poll(items, 2, 1000);
    if (rc < 0) {
      if (zmq_errno() == EINTR) continue;
      log_->error("ZAP handler stopped: {}", zmq_strerror(zmq_errno()));
      return;
    }
    if (items[1].revents & ZMQ_POLLIN) wake_.Drain();
    if (items[0].revents & ZMQ_POLLIN) Handle();
  }
}

void ZapHandler::Handle() {
  std::vector<std::string> parts;
  for (bool more = true; more;) {
    ZmqMessage part;
    if (zmq_msg_recv(part.get(), socket_, ZMQ_DONTWAIT) < 0) return;
    if (parts.size() < 16) parts.emplace_back(part.bytes());
    more = part.more();
  }
  // version, request_id, domain, address, routing_id, mechanism, credentials...
  std::string status = "400";
  std::string text = "malformed ZAP request";
  std::string user_id;
  if (parts.size() >= 6 && parts[0] == "1.0") {
    const std::string& domain = parts[2];
    const std::string& address = parts[3];
    const std::string& mechanism = parts[5];
    if (mechanism != "CURVE" || parts.size() != 7 || parts[6].size() != 32) {
      text = "only CURVE clients are accepted";
      log_->warn("refused a {} connection from {}: not CURVE", mechanism, address);
    } else {
      char z85[kCurveKeyChars + 1];
      zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(parts[6].data()), 32);
      std::lock_guard<std::mutex> lock(mu_);
      auto list = lists_.find(domain);
      if (list == lists_.end()) {
        text = "unknown ZAP domain";
        log_->warn("refused a connection from {}: unknown ZAP domain '{}'", address, domain);
      } else if (auto it = list->second.name_by_key.find(z85);
                 it != list->second.name_by_key.end()) {
        status = "200";
        text = "OK";
        user_id = it->second;
        log_->debug("accepted CURVE client '{}' from {}", user_id, address);
      } else {
        text = "key not on the allow-list";
        log_->warn("refused a connection from {}: its CURVE key is not on the allow-list",
                   address);
      }
    }
  }
  const std::string request_id = parts.size() > 1 ? parts[1] : "";
  const std::string reply[] = {"1.0", request_id, status, text, user_id, ""};
  for (size_t i = 0; i < 6; ++i) {
    zmq_send(socket_, reply[i].data(), reply[i].size(), i + 1 < 6 ? ZMQ_SNDMORE : 0);
  }
}

}  // namespace

// ============================== Server ==============================

class Server::Impl {
 public:
  explicit Impl(const TransportOptions& options)
      : options_(options),
        context_(options.zmq_context),
        tick_(TickFor(options.heartbeat_interval_ms, options.peer_timeout_ms)),
        events_(&outbox_.wake()) {}
  ~Impl();

  Status Start();
  std::string endpoint() const { return endpoint_; }
  Status Send(const std::string& peer, Message message);
  Status Broadcast(const std::vector<std::string>& peers, Message message,
                   std::vector<std::string>* unreachable);
  StatusOr<std::optional<TransportEvent>> Receive(std::chrono::milliseconds timeout) {
    return events_.Pop(timeout);
  }
  void AdvanceRound(uint64_t round) {
    uint64_t current = current_round_.load();
    while (current < round && !current_round_.compare_exchange_weak(current, round)) {
    }
  }
  void Disconnect(const std::string& peer);
  std::vector<std::string> peers() const;
  TransportStats stats() const { return stats_.Snapshot(); }
  TransportStats peer_stats(const std::string& peer) const;

 private:
  // What owner threads and the I/O thread share about one identity. Kept after a session ends,
  // so the sequence numbers this side sends keep increasing across a peer's sessions (a client
  // that rejoins without a fresh validator still accepts them).
  struct PeerState {
    std::mutex send_mu;  // held while stamping a sequence number and queueing the frames
    uint64_t sequence = 0;    // last sequence sent
    uint64_t last_round = 0;  // highest round sent: heartbeats carry it, so they are never stale
    std::atomic<bool> live{false};  // has a session (written under send_mu)
    uint64_t epoch = 0;       // counts sessions
    std::string routing_id;   // of the session's connection
    std::atomic<int64_t> last_sent_ms{0};  // since the I/O thread started; for heartbeats
    AtomicStats stats;
  };
  // A chunked message this peer offered: waiting for a grant, or granted and being reassembled.
  struct Upload {
    uint32_t count = 0;
    uint64_t total_bytes = 0;
    bool granted = false;
    Clock::time_point last_progress;  // granted, or its last chunk accepted
  };
  // I/O-thread-only state of a live session.
  struct Session {
    std::shared_ptr<PeerState> state;
    std::string routing_id;
    SessionValidator validator{Role::kCoordinator, 0};
    // A model update's tensor is copied once, from the chunks straight into the tensor.
    ChunkReassembler reassembler{kMaxReassemblyBytes, kMaxPendingChunkedMessages, true};
    std::map<uint64_t, Upload> uploads;  // by message_id (the message's sequence number)
    Clock::time_point last_heard;
    uint64_t epoch = 0;
  };
  // An offer in the grant queue; skipped when its session or upload is gone by its turn.
  struct WaitingUpload {
    std::string identity;
    uint64_t epoch = 0;
    uint64_t message_id = 0;
  };
  struct PeerQueue {
    std::deque<OutItem> frames;
    Clock::time_point retry_at;
    int backoff_ms = 0;
    bool dropping = false;  // dropping the frames of a message: logged once
  };

  std::shared_ptr<PeerState> FindPeer(const std::string& identity) const;
  std::shared_ptr<PeerState> GetOrCreatePeer(const std::string& identity);
  int64_t NowMs() const { return MillisBetween(started_, Clock::now()); }

  void Run();
  void TakeOutbox();
  bool SendQueued();  // true when frames are left that can be sent right away
  void ReceiveFrames();
  void HandleFrame(std::string_view routing_id, ZmqMessage& payload);
  void HandleOffer(const std::string& identity, std::string_view routing_id, Session* session,
                   AtomicStats* peer_stats, std::string_view bytes);
  // `upload`: the message completed an offered upload with this id (its sequence was checked
  // against the session when the offer arrived).
  void HandleMessage(const std::string& identity, std::string_view routing_id, Session* session,
                     Message message, std::optional<uint64_t> upload = std::nullopt);
  void GrantUploads();
  void EndUpload(Session& session, uint64_t message_id);  // frees its slot if granted
  void EndUploads(Session& session);                      // all of a session's, as it ends
  void CountReassemblies();
  void Tick();
  void EndSession(const std::string& identity, const std::string& reason, bool report,
                  Message bye = {});
  void Reject(const std::string& who, AtomicStats* peer, const std::string& reason);
  void ReplyError(const std::string& identity, std::string_view routing_id, ErrorCode code,
                  const std::string& text, uint64_t task_id);
  void QueueHeartbeat(const std::string& identity, PeerState& state);

  const TransportOptions options_;
  Context context_;
  void* socket_ = nullptr;
  std::string endpoint_;
  std::shared_ptr<ZapHandler> zap_;
  std::string zap_domain_;
  std::shared_ptr<spdlog::logger> log_ = GetLogger("wire");
  const std::chrono::milliseconds tick_;
  const Clock::time_point started_ = Clock::now();

  Outbox outbox_;
  EventQueue events_;
  AtomicStats stats_;
  std::atomic<uint64_t> current_round_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};  // the I/O thread stopped on an error
  std::thread thread_;

  mutable std::mutex peers_mu_;
  std::map<std::string, std::shared_ptr<PeerState>> peers_;  // by identity

  // I/O thread only.
  std::map<std::string, Session> sessions_;  // by identity
  std::map<std::string, PeerQueue> queues_;  // by identity
  std::deque<WaitingUpload> waiting_;        // offers in arrival order
  size_t active_uploads_ = 0;                // granted and not yet complete, all sessions
};

Status Server::Impl::Start() {
  TANDEM_RETURN_IF_ERROR(ValidateCommon(options_));
  if (options_.run_id == 0) return Status::InvalidArgument("server: run_id must be non-zero");
  if (options_.curve) {
    TANDEM_RETURN_IF_ERROR(ValidateKeyPair(options_.own_keys).WithContext("server CURVE keys"));
    if (options_.allow_list.name_by_key.empty()) {
      log_->warn("CURVE server with an empty allow-list: no client can connect");
    }
  }
  if (context_.get() == nullptr) return ZmqError("cannot create a ZeroMQ context");
  if (!outbox_.wake().ok()) return Status::Internal("cannot create an eventfd");
  if (options_.curve) {
    // The handler must be bound before the socket accepts anything: libzmq lets every CURVE
    // client in when no ZAP handler is bound.
    TANDEM_ASSIGN_OR_RETURN(zap_, ZapHandler::ForContext(context_.get()));
    zap_domain_ = zap_->Register(options_.allow_list);
  }
  socket_ = zmq_socket(context_.get(), ZMQ_ROUTER);
  if (socket_ == nullptr) return ZmqError("cannot create a ROUTER socket");
  TANDEM_RETURN_IF_ERROR(SetOption(socket_, ZMQ_LINGER, 0, "ZMQ_LINGER"));
  TANDEM_RETURN_IF_ERROR(SetOption(socket_, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY"));
  TANDEM_RETURN_IF_ERROR(SetOption(socket_, ZMQ_ROUTER_HANDOVER, 1, "ZMQ_ROUTER_HANDOVER"));
  TANDEM_RETURN_IF_ERROR(SetMaxMessageSize(socket_));
  TANDEM_RETURN_IF_ERROR(SetOption(socket_, ZMQ_SNDHWM, options_.high_water_mark, "ZMQ_SNDHWM"));
  TANDEM_RETURN_IF_ERROR(SetOption(socket_, ZMQ_RCVHWM, options_.high_water_mark, "ZMQ_RCVHWM"));
  if (options_.curve) {
    TANDEM_RETURN_IF_ERROR(SetOption(socket_, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER"));
    TANDEM_RETURN_IF_ERROR(
        SetOption(socket_, ZMQ_CURVE_SECRETKEY, options_.own_keys.secret_key, "ZMQ_CURVE_SECRETKEY"));
    TANDEM_RETURN_IF_ERROR(SetOption(socket_, ZMQ_ZAP_DOMAIN, zap_domain_, "ZMQ_ZAP_DOMAIN"));
  }
  if (zmq_bind(socket_, options_.endpoint.c_str()) != 0) {
    return ZmqError("cannot bind " + options_.endpoint);
  }
  char last[1024];
  size_t size = sizeof(last);
  if (zmq_getsockopt(socket_, ZMQ_LAST_ENDPOINT, last, &size) != 0) {
    return ZmqError("cannot read the bound endpoint");
  }
  endpoint_ = std::string(last, strnlen(last, size));
  log_->info("coordinator transport bound to {} (CURVE {})", endpoint_,
             options_.curve ? "on" : "off");
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

Server::Impl::~Impl() {
  stop_ = true;
  if (thread_.joinable()) {
    outbox_.wake().Signal();
    thread_.join();
  }
  CloseSocket(socket_);
  if (zap_) {
    zap_->Unregister(zap_domain_);
    zap_.reset();  // before the context terminates
  }
}

std::shared_ptr<Server::Impl::PeerState> Server::Impl::FindPeer(const std::string& identity) const {
  std::lock_guard<std::mutex> lock(peers_mu_);
  auto it = peers_.find(identity);
  return it == peers_.end() ? nullptr : it->second;
}

std::shared_ptr<Server::Impl::PeerState> Server::Impl::GetOrCreatePeer(
    const std::string& identity) {
  std::lock_guard<std::mutex> lock(peers_mu_);
  std::shared_ptr<PeerState>& p = peers_[identity];
  if (!p) p = std::make_shared<PeerState>();
  return p;
}

Status Server::Impl::Send(const std::string& peer, Message message) {
  if (failed_) return Status::Unavailable("the coordinator transport has stopped");
  std::shared_ptr<PeerState> state = FindPeer(peer);
  if (!state) return Status::NotFound("no session with '" + peer + "'");
  std::lock_guard<std::mutex> lock(state->send_mu);
  if (!state->live) return Status::NotFound("no session with '" + peer + "'");
  message.envelope.run_id = options_.run_id;
  message.envelope.sequence = state->sequence + 1;
  TANDEM_RETURN_IF_ERROR(QueueMessage(message, options_.chunk_bytes, outbox_,
                                      {Target{&peer, &state->routing_id}}, false, stats_));
  state->sequence += 1;
  state->last_round = std::max(state->last_round, message.envelope.round);
  state->last_sent_ms = NowMs();
  return Status::Ok();
}

Status Server::Impl::Broadcast(const std::vector<std::string>& peers, Message message,
                               std::vector<std::string>* unreachable) {
  if (failed_) return Status::Unavailable("the coordinator transport has stopped");
  // Sorted and unique: every broadcast takes the send locks in this order, so two never deadlock;
  // Send and the I/O thread never hold more than one at a time.
  std::vector<std::string> names(peers);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::vector<std::string> missing;
  std::vector<std::pair<const std::string*, std::shared_ptr<PeerState>>> found;
  for (const std::string& name : names) {
    std::shared_ptr<PeerState> state = FindPeer(name);
    if (state) {
      found.emplace_back(&name, std::move(state));
    } else {
      missing.push_back(name);
    }
  }
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(found.size());
  std::vector<PeerState*> live;
  std::vector<Target> targets;
  uint64_t last = 0;
  for (auto& [name, state] : found) {
    locks.emplace_back(state->send_mu);
    if (!state->live) {
      missing.push_back(*name);
      continue;
    }
    live.push_back(state.get());
    targets.push_back(Target{name, &state->routing_id});
    last = std::max(last, state->sequence);
  }
  std::sort(missing.begin(), missing.end());
  message.envelope.run_id = options_.run_id;
  message.envelope.sequence = last + 1;
  if (targets.empty()) {
    TANDEM_RETURN_IF_ERROR(ValidateMessage(message));
  } else {
    TANDEM_RETURN_IF_ERROR(
        QueueMessage(message, options_.chunk_bytes, outbox_, targets, false, stats_));
  }
  const int64_t now_ms = NowMs();
  for (PeerState* state : live) {
    state->sequence = message.envelope.sequence;
    state->last_round = std::max(state->last_round, message.envelope.round);
    state->last_sent_ms = now_ms;
  }
  if (unreachable != nullptr) {
    unreachable->insert(unreachable->end(), missing.begin(), missing.end());
  }
  return Status::Ok();
}

void Server::Impl::Disconnect(const std::string& peer) {
  std::shared_ptr<PeerState> state = FindPeer(peer);
  if (!state) return;
  OutItem item;
  item.kind = OutItem::Kind::kDisconnect;
  item.peer = peer;
  {
    std::lock_guard<std::mutex> lock(state->send_mu);
    if (!state->live) return;
    state->live = false;
    item.epoch = state->epoch;
  }
  outbox_.Push(std::move(item));
}

std::vector<std::string> Server::Impl::peers() const {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(peers_mu_);
  for (const auto& [identity, state] : peers_) {
    if (state->live) out.push_back(identity);
  }
  return out;
}

TransportStats Server::Impl::peer_stats(const std::string& peer) const {
  std::shared_ptr<PeerState> state = FindPeer(peer);
  return state ? state->stats.Snapshot() : TransportStats{};
}

void Server::Impl::Run() {
  Clock::time_point next_tick = Clock::now() + tick_;
  bool busy = false;
  while (!stop_.load()) {
    const Clock::time_point now = Clock::now();
    int64_t timeout = busy ? 0 : std::max<int64_t>(0, MillisBetween(now, next_tick));
    for (const auto& [identity, queue] : queues_) {
      if (!queue.frames.empty()) {
        timeout = std::min(timeout, std::max<int64_t>(0, MillisBetween(now, queue.retry_at)));
      }
    }
    zmq_pollitem_t items[2] = {{socket_, 0, ZMQ_POLLIN, 0},
                               {nullptr, outbox_.wake().fd(), ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 2, static_cast<long>(timeout)) < 0) {
      if (zmq_errno() == EINTR) continue;
      const Status failure = ZmqError("coordinator transport stopped: zmq_poll");
      log_->error("{}", failure.message());
      failed_ = true;
      events_.Fail(failure);
      return;
    }
    if (items[1].revents & ZMQ_POLLIN) outbox_.wake().Drain();
    TakeOutbox();
    if (items[0].revents & ZMQ_POLLIN) ReceiveFrames();
    // Offers that arrived, uploads that completed, events the owner took: any may free a slot.
    GrantUploads();
    busy = SendQueued();
    if (Clock::now() >= next_tick) {
      Tick();
      next_tick = Clock::now() + tick_;
    }
  }
}

void Server::Impl::TakeOutbox() {
  for (OutItem& item : outbox_.TakeAll()) {
    switch (item.kind) {
      case OutItem::Kind::kFrame: {
        PeerQueue& queue = queues_[item.peer];
        queue.frames.push_back(std::move(item));
        break;
      }
      case OutItem::Kind::kDisconnect: {
        auto it = sessions_.find(item.peer);
        if (it != sessions_.end() && it->second.epoch == item.epoch) {
          EndUploads(it->second);
          sessions_.erase(it);
          CountReassemblies();
          log_->info("session with '{}' ended by the coordinator", item.peer);
        }
        break;
      }
      case OutItem::Kind::kReconnect: break;
    }
  }
}

bool Server::Impl::SendQueued() {
  const Clock::time_point now = Clock::now();
  int budget = kMaxFramesPerTurn;
  bool more = false;
  for (auto it = queues_.begin(); it != queues_.end();) {
    PeerQueue& queue = it->second;
    std::shared_ptr<PeerState> state = FindPeer(it->first);
    AtomicStats* peer_stats = state ? &state->stats : nullptr;
    while (!queue.frames.empty() && queue.retry_at <= now && budget > 0) {
      OutItem& item = queue.frames.front();
      int err = 0;
      if (zmq_send(socket_, item.routing_id.data(), item.routing_id.size(),
                   ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        err = zmq_errno();
      } else {
        const size_t size = item.frame.size();
        // Cannot fail with EAGAIN: libzmq admits or refuses a multipart message at its first part.
        err = SendFrame(socket_, item.frame, ZMQ_DONTWAIT);
        if (err != 0) {
          events_.Fail(Status::Internal(std::string("coordinator transport: a frame was refused "
                                                    "after its routing id: ") +
                                        zmq_strerror(err)));
          failed_ = true;
          stop_ = true;
          return false;
        }
        --budget;
        Add(stats_.frames_sent, peer_stats, &AtomicStats::frames_sent);
        Add(stats_.bytes_sent, peer_stats, &AtomicStats::bytes_sent, size);
        if (item.last && !IsFramingType(item.type)) {
          if (item.type == MessageType::kHeartbeat) {
            Add(stats_.heartbeats_sent, peer_stats, &AtomicStats::heartbeats_sent);
          } else {
            Add(stats_.messages_sent, peer_stats, &AtomicStats::messages_sent);
          }
        }
        if (state) state->last_sent_ms = NowMs();
        queue.frames.pop_front();
        queue.backoff_ms = 0;
        continue;
      }
      if (err == EAGAIN) {
        // The peer's ZeroMQ queue is full: keep the frame and retry later.
        Add(stats_.retries, peer_stats, &AtomicStats::retries);
        queue.backoff_ms = std::clamp(queue.backoff_ms * 2, kRetryInitialMs, kRetryMaxMs);
        queue.retry_at = now + std::chrono::milliseconds(queue.backoff_ms);
        log_->debug("queue to '{}' full; retrying in {} ms", it->first, queue.backoff_ms);
        break;
      }
      // EHOSTUNREACH: the connection is gone. Drop (its session times out or it rejoins).
      Add(stats_.dropped, peer_stats, &AtomicStats::dropped);
      if (!queue.dropping) {
        // A heartbeat to a peer that has just left is routine; anything else is worth a warning.
        log_->log(item.type == MessageType::kHeartbeat ? spdlog::level::debug
                                                       : spdlog::level::warn,
                  "dropping a {} for '{}': {}", MessageTypeName(item.type), it->first,
                  zmq_strerror(err));
      }
      queue.dropping = !item.last;
      queue.frames.pop_front();
    }
    if (!queue.frames.empty() && queue.retry_at <= now) more = true;
    it = queue.frames.empty() ? queues_.erase(it) : std::next(it);
  }
  return more;
}

void Server::Impl::ReceiveFrames() {
  for (int n = 0; n < kMaxFramesPerTurn; ++n) {
    ZmqMessage routing_id;
    if (zmq_msg_recv(routing_id.get(), socket_, ZMQ_DONTWAIT) < 0) return;  // EAGAIN: done
    if (!routing_id.more()) continue;  // a ROUTER always prefixes a routing id; never happens
    ZmqMessage payload;
    if (zmq_msg_recv(payload.get(), socket_, 0) < 0) return;
    bool multipart = false;
    while (payload.more()) {  // a hostile peer's extra parts: read and discard
      multipart = true;
      ZmqMessage extra;
      if (zmq_msg_recv(extra.get(), socket_, 0) < 0) break;
      if (!extra.more()) break;
    }
    if (multipart) {
      Reject(Printable(routing_id.bytes()), nullptr, "a multipart message (one frame expected)");
      continue;
    }
    HandleFrame(routing_id.bytes(), payload);
  }
}

void Server::Impl::Reject(const std::string& who, AtomicStats* peer, const std::string& reason) {
  Add(stats_.rejected, peer, &AtomicStats::rejected);
  log_->warn("rejected a frame from '{}': {}", who, reason);
}

void Server::Impl::HandleFrame(std::string_view routing_id, ZmqMessage& payload) {
  const std::string_view bytes = payload.bytes();
  stats_.frames_received.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_received.fetch_add(bytes.size(), std::memory_order_relaxed);
  std::string identity;
  if (options_.curve) {
    const char* user_id = payload.user_id();
    if (user_id == nullptr || !IsValidClientName(user_id)) {
      Reject(Printable(routing_id), nullptr, "no ZAP User-Id on a CURVE connection");
      return;
    }
    identity = user_id;
  } else {
    identity = std::string(routing_id);
    if (!IsValidClientName(identity)) {
      Reject(Printable(routing_id), nullptr,
             "the client set no valid identity (TransportOptions.identity)");
      return;
    }
  }
  std::shared_ptr<PeerState> state = FindPeer(identity);
  AtomicStats* peer_stats = state ? &state->stats : nullptr;
  if (peer_stats) {
    peer_stats->frames_received.fetch_add(1, std::memory_order_relaxed);
    peer_stats->bytes_received.fetch_add(bytes.size(), std::memory_order_relaxed);
  }
  auto it = sessions_.find(identity);
  Session* session =
      (it != sessions_.end() && it->second.routing_id == routing_id) ? &it->second : nullptr;
  if (session) session->last_heard = Clock::now();  // any frame is a sign of life

  if (bytes.size() <= kMaxFrameBytes) {
    StatusOr<MessageType> type = PeekType(bytes);
    if (type.ok() && *type == MessageType::kChunkOffer) {
      HandleOffer(identity, routing_id, session, peer_stats, bytes);
      return;
    }
  }
  // Only chunks of a granted upload, consistent with its offer, reach the reassembler; any other
  // chunk is refused without touching it.
  ChunkAdmission admit = [session](const ChunkView& chunk) -> Status {
    auto up = session->uploads.find(chunk.message_id);
    if (up == session->uploads.end() || !up->second.granted) {
      return Status::FailedPrecondition(
          "a chunk of message " + std::to_string(chunk.message_id) +
          ", which was not granted (a chunked upload starts with a ChunkOffer and waits for the "
          "ChunkGrant)");
    }
    if (up->second.count != chunk.count || up->second.total_bytes != chunk.total_bytes) {
      return Status::Corruption("a chunk of message " + std::to_string(chunk.message_id) +
                                " disagrees with its offer (count or total_bytes)");
    }
    return Status::Ok();
  };
  // Chunks from a peer without a session have nowhere to go (a Hello is never chunked).
  Decoded decoded = DecodeFrame(bytes, session ? &session->reassembler : nullptr,
                                session ? admit : nullptr);
  std::optional<uint64_t> upload;
  if (decoded.chunk && session) {
    auto up = session->uploads.find(decoded.chunk_id);
    if (up != session->uploads.end() && up->second.granted) {
      if (decoded.complete) {
        upload = decoded.chunk_id;
        EndUpload(*session, decoded.chunk_id);
      } else if (decoded.error.ok()) {
        up->second.last_progress = Clock::now();
      } else if (decoded.reassembled && !session->reassembler.Holds(decoded.chunk_id)) {
        // The reassembler dropped the message (or never started it): it cannot complete. A chunk
        // refused before it (not admitted) changes nothing.
        log_->warn("upload {} from '{}' failed; its slot is free", decoded.chunk_id, identity);
        EndUpload(*session, decoded.chunk_id);
      }
    }
    CountReassemblies();
  }
  if (!decoded.error.ok()) {
    Reject(identity, peer_stats, decoded.error.message());
    if (session) {
      ReplyError(identity, routing_id, ErrorCode::kBadMessage, decoded.error.message(), 0);
    }
    return;
  }
  if (!decoded.complete) return;
  HandleMessage(identity, routing_id, session, std::move(*decoded.message), upload);
}

void Server::Impl::HandleOffer(const std::string& identity, std::string_view routing_id,
                               Session* session, AtomicStats* peer_stats,
                               std::string_view bytes) {
  if (!session) {
    Reject(identity, peer_stats, "a ChunkOffer from a peer that has not joined");
    return;
  }
  StatusOr<ChunkOffer> offer = DecodeChunkOffer(bytes);
  if (!offer.ok()) {
    Reject(identity, peer_stats, offer.status().message());
    ReplyError(identity, routing_id, ErrorCode::kBadMessage, offer.status().message(), 0);
    return;
  }
  const uint64_t id = offer->message_id;
  if (session->uploads.count(id) > 0) {
    const std::string reason = "a second ChunkOffer for message " + std::to_string(id);
    Reject(identity, peer_stats, reason);
    ReplyError(identity, routing_id, ErrorCode::kBadMessage, reason, 0);
    return;
  }
  if (session->uploads.size() >= kMaxPendingChunkedMessages) {
    const std::string reason = "already " + std::to_string(session->uploads.size()) +
                               " uploads offered; ChunkOffer for message " + std::to_string(id) +
                               " refused";
    Reject(identity, peer_stats, reason);
    ReplyError(identity, routing_id, ErrorCode::kOverloaded, reason, 0);
    return;
  }
  // The offer takes the message's place in the peer's sequence: checked and recorded now (as a
  // heartbeat with that number would be), so the messages the peer sends while it waits carry
  // higher numbers, and the message itself is checked for the rest when it completes.
  session->validator.AdvanceRound(current_round_.load());
  const Message place = HeartbeatMessage(session->validator.run_id(),
                                         session->validator.current_round(), id);
  Status accepted = session->validator.Accept(place);
  if (!accepted.ok()) {
    const std::string reason = "ChunkOffer for message " + std::to_string(id) + ": " +
                               accepted.message();
    Reject(identity, peer_stats, reason);
    ReplyError(identity, routing_id,
               accepted.code() == StatusCode::kFailedPrecondition ? ErrorCode::kStale
                                                                  : ErrorCode::kBadMessage,
               reason, 0);
    return;
  }
  Upload& up = session->uploads[id];
  up.count = offer->count;
  up.total_bytes = offer->total_bytes;
  waiting_.push_back(WaitingUpload{identity, session->epoch, id});
  Add(stats_.uploads_offered, peer_stats, &AtomicStats::uploads_offered);
  log_->debug("'{}' offers message {} ({} bytes in {} chunks); {} waiting", identity, id,
              offer->total_bytes, offer->count, waiting_.size());
}

void Server::Impl::GrantUploads() {
  while (active_uploads_ < options_.max_active_uploads && !waiting_.empty() &&
         events_.queued_bytes() < options_.upload_queue_budget_bytes) {
    const WaitingUpload next = std::move(waiting_.front());
    waiting_.pop_front();
    auto it = sessions_.find(next.identity);
    if (it == sessions_.end() || it->second.epoch != next.epoch) continue;  // session ended
    Session& session = it->second;
    auto up = session.uploads.find(next.message_id);
    if (up == session.uploads.end() || up->second.granted) continue;
    up->second.granted = true;
    up->second.last_progress = Clock::now();
    ++active_uploads_;
    OutItem item;
    item.peer = next.identity;
    item.routing_id = session.routing_id;
    item.frame = Frame(EncodeChunkGrant({next.message_id}));
    item.type = MessageType::kChunkGrant;
    queues_[next.identity].frames.push_back(std::move(item));
    Add(stats_.uploads_granted, &session.state->stats, &AtomicStats::uploads_granted);
    log_->debug("granted message {} of '{}' ({} active, {} waiting)", next.message_id,
                next.identity, active_uploads_, waiting_.size());
  }
}

void Server::Impl::EndUpload(Session& session, uint64_t message_id) {
  auto up = session.uploads.find(message_id);
  if (up == session.uploads.end()) return;
  if (up->second.granted) {
    TANDEM_CHECK(active_uploads_ > 0);
    --active_uploads_;
  }
  session.reassembler.Discard(message_id);  // nothing left once it completed
  session.uploads.erase(up);
}

void Server::Impl::EndUploads(Session& session) {
  while (!session.uploads.empty()) EndUpload(session, session.uploads.begin()->first);
  session.reassembler.Clear();
}

void Server::Impl::CountReassemblies() {
  uint64_t now = 0;
  for (const auto& [identity, session] : sessions_) now += session.reassembler.pending_messages();
  stats_.reassemblies.store(now, std::memory_order_relaxed);
  if (now > stats_.reassemblies_peak.load(std::memory_order_relaxed)) {
    stats_.reassemblies_peak.store(now, std::memory_order_relaxed);
  }
}

void Server::Impl::HandleMessage(const std::string& identity, std::string_view routing_id,
                                 Session* session, Message message,
                                 std::optional<uint64_t> upload) {
  const MessageType type = message.type();
  const std::string what(MessageTypeName(type));
  if (type == MessageType::kHello) {
    SessionValidator validator(Role::kCoordinator, options_.run_id);
    Status accepted = validator.Accept(message);
    std::shared_ptr<PeerState> state = GetOrCreatePeer(identity);
    if (!accepted.ok()) {
      Reject(identity, &state->stats, accepted.message());
      ReplyError(identity, routing_id, ErrorCode::kBadMessage, accepted.message(), 0);
      return;
    }
    validator.AdvanceRound(current_round_.load());
    const bool rejoin = sessions_.count(identity) > 0;
    Session& s = sessions_[identity];
    EndUploads(s);  // a rejoin drops what the old session offered
    s.state = state;
    s.routing_id = std::string(routing_id);
    s.validator = std::move(validator);
    s.last_heard = Clock::now();
    CountReassemblies();
    {
      std::lock_guard<std::mutex> lock(state->send_mu);
      state->live = true;
      state->routing_id = s.routing_id;
      s.epoch = ++state->epoch;
    }
    state->last_sent_ms = NowMs();  // the owner's Welcome is due before any heartbeat
    Add(stats_.messages_received, &state->stats, &AtomicStats::messages_received);
    log_->info("'{}' {} ({})", identity, rejoin ? "rejoined" : "joined",
               std::get<Hello>(message.body).agent);
    events_.Push(TransportEvent{TransportEvent::Kind::kPeerJoined, identity, message});
    events_.Push(TransportEvent{TransportEvent::Kind::kMessage, identity, std::move(message)});
    return;
  }
  std::shared_ptr<PeerState> state = session ? session->state : FindPeer(identity);
  AtomicStats* peer_stats = state ? &state->stats : nullptr;
  if (!session) {
    const bool other = sessions_.count(identity) > 0;
    Reject(identity, peer_stats,
           what + (other ? " from a connection its session does not use" : " before Hello"));
    if (type != MessageType::kError) {
      ReplyError(identity, routing_id, ErrorCode::kNotJoined, "send Hello first",
                 message.envelope.task_id);
    }
    return;
  }
  session->validator.AdvanceRound(current_round_.load());
  Status accepted = upload ? AcceptUpload(session->validator, message, *upload)
                           : AcceptIntoSession(session->validator, message);
  if (!accepted.ok()) {
    Reject(identity, peer_stats, accepted.message());
    if (type != MessageType::kHeartbeat && type != MessageType::kError) {
      const ErrorCode code = accepted.code() == StatusCode::kFailedPrecondition
                                 ? ErrorCode::kStale
                                 : ErrorCode::kBadMessage;
      ReplyError(identity, routing_id, code, accepted.message(), message.envelope.task_id);
    }
    return;
  }
  if (type == MessageType::kHeartbeat) {
    Add(stats_.heartbeats_received, peer_stats, &AtomicStats::heartbeats_received);
    return;
  }
  Add(stats_.messages_received, peer_stats, &AtomicStats::messages_received);
  if (type == MessageType::kBye) {
    const std::string reason = std::get<Bye>(message.body).reason;
    EndSession(identity, "said Bye (" + reason + ")", true, std::move(message));
    return;
  }
  events_.Push(TransportEvent{TransportEvent::Kind::kMessage, identity, std::move(message)});
}

void Server::Impl::EndSession(const std::string& identity, const std::string& reason, bool report,
                              Message bye) {
  auto it = sessions_.find(identity);
  if (it == sessions_.end()) return;
  std::shared_ptr<PeerState> state = it->second.state;
  EndUploads(it->second);
  sessions_.erase(it);
  CountReassemblies();
  {
    std::lock_guard<std::mutex> lock(state->send_mu);
    state->live = false;
  }
  // Frames still queued to it have no session to go to.
  auto q = queues_.find(identity);
  if (q != queues_.end()) {
    Add(stats_.dropped, &state->stats, &AtomicStats::dropped, q->second.frames.size());
    queues_.erase(q);
  }
  log_->info("lost '{}': {}", identity, reason);
  if (report) {
    events_.Push(TransportEvent{TransportEvent::Kind::kPeerLost, identity, std::move(bye)});
  }
}

void Server::Impl::ReplyError(const std::string& identity, std::string_view routing_id,
                              ErrorCode code, const std::string& text, uint64_t task_id) {
  std::shared_ptr<PeerState> state = GetOrCreatePeer(identity);
  // Best effort: never wait for an owner thread that is encoding a large message to this peer.
  std::unique_lock<std::mutex> lock(state->send_mu, std::try_to_lock);
  if (!lock.owns_lock()) return;
  const Message error = ErrorMessage(options_.run_id, state->last_round, task_id,
                                     state->sequence + 1, code, text);
  const std::string routing(routing_id);
  if (QueueMessage(error, options_.chunk_bytes, outbox_, {Target{&identity, &routing}}, false,
                   stats_)
          .ok()) {
    state->sequence += 1;
  }
}

void Server::Impl::QueueHeartbeat(const std::string& identity, PeerState& state) {
  std::unique_lock<std::mutex> lock(state.send_mu, std::try_to_lock);
  if (!lock.owns_lock() || !state.live) return;  // an owner is queueing: that is traffic enough
  const Message heartbeat = HeartbeatMessage(options_.run_id, state.last_round, state.sequence + 1);
  if (QueueMessage(heartbeat, options_.chunk_bytes, outbox_, {Target{&identity, &state.routing_id}},
                   false, stats_)
          .ok()) {
    state.sequence += 1;
    state.last_sent_ms = NowMs();
  }
}

void Server::Impl::Tick() {
  const Clock::time_point now = Clock::now();
  const int64_t now_ms = NowMs();
  std::vector<std::string> silent;
  for (auto& [identity, session] : sessions_) {
    if (MillisBetween(session.last_heard, now) >= options_.peer_timeout_ms) {
      silent.push_back(identity);
    } else if (now_ms - session.state->last_sent_ms.load() >= options_.heartbeat_interval_ms) {
      QueueHeartbeat(identity, *session.state);
    }
  }
  for (const std::string& identity : silent) {
    EndSession(identity, "silent for " + std::to_string(options_.peer_timeout_ms) + " ms", true);
  }
  // A granted upload whose chunks stopped coming from a peer that is still alive would hold its
  // slot for good. (A dead peer's session times out first, at one peer timeout.)
  const int64_t stall_ms = 2 * int64_t{options_.peer_timeout_ms};
  for (auto& [identity, session] : sessions_) {
    std::vector<uint64_t> stalled;
    for (const auto& [id, up] : session.uploads) {
      if (up.granted && MillisBetween(up.last_progress, now) >= stall_ms) stalled.push_back(id);
    }
    for (uint64_t id : stalled) {
      log_->warn("upload {} from '{}' stalled for {} ms; its slot is free", id, identity,
                 stall_ms);
      EndUpload(session, id);
    }
    if (!stalled.empty()) CountReassemblies();
  }
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;

StatusOr<std::unique_ptr<Server>> Server::Bind(const TransportOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  TANDEM_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

std::string Server::endpoint() const { return impl_->endpoint(); }
Status Server::Send(const std::string& peer, Message message) {
  return impl_->Send(peer, std::move(message));
}
Status Server::Broadcast(const std::vector<std::string>& peers, Message message,
                         std::vector<std::string>* unreachable) {
  return impl_->Broadcast(peers, std::move(message), unreachable);
}
StatusOr<std::optional<TransportEvent>> Server::Receive(std::chrono::milliseconds timeout) {
  return impl_->Receive(timeout);
}
void Server::AdvanceRound(uint64_t round) { impl_->AdvanceRound(round); }
void Server::Disconnect(const std::string& peer) { impl_->Disconnect(peer); }
std::vector<std::string> Server::peers() const { return impl_->peers(); }
TransportStats Server::stats() const { return impl_->stats(); }
TransportStats Server::peer_stats(const std::string& peer) const {
  return impl_->peer_stats(peer);
}

// ============================== Client ==============================

class Client::Impl {
 public:
  explicit Impl(const TransportOptions& options)
      : options_(options),
        context_(options.zmq_context),
        heartbeat_interval_ms_(options.heartbeat_interval_ms),
        peer_timeout_ms_(options.peer_timeout_ms),
        tick_(TickFor(options.heartbeat_interval_ms, options.peer_timeout_ms)) {}
  ~Impl();

  Status Start();
  Status Send(Message message);
  StatusOr<std::optional<TransportEvent>> Receive(std::chrono::milliseconds timeout) {
    return events_.Pop(timeout);
  }
  Status Reconnect();
  TransportStats stats() const { return stats_.Snapshot(); }

 private:
  Status OpenSocket();  // a fresh DEALER (and its monitor), connected
  void CloseSockets();
  int64_t NowMs() const { return MillisBetween(started_, Clock::now()); }

  void Run();
  void TakeOutbox();
  bool SendQueued();
  void ReceiveFrames();
  void HandleFrame(ZmqMessage& payload);
  void ReadMonitor();
  void Tick();
  void Reject(const std::string& reason);
  void ReplyError(ErrorCode code, const std::string& text, uint64_t task_id);
  void QueueHeartbeat();
  void HandleGrant(std::string_view bytes);

  const TransportOptions options_;
  Context context_;
  std::shared_ptr<spdlog::logger> log_ = GetLogger("wire");
  const Clock::time_point started_ = Clock::now();

  Outbox outbox_;
  EventQueue events_;
  AtomicStats stats_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};  // the I/O thread stopped on an error
  std::thread thread_;

  // Shared with owner threads, guarded by send_mu_.
  std::mutex send_mu_;
  uint64_t sequence_ = 0;
  uint64_t last_round_ = 0;
  std::atomic<uint64_t> run_id_{0};           // learned from the first accepted message
  std::atomic<uint64_t> current_round_{0};    // the validator's, for heartbeats
  std::atomic<int64_t> last_sent_ms_{0};

  // An upload offered to the coordinator: its chunk frames wait here until the grant.
  struct Upload {
    bool granted = false;
    bool complete = false;  // its last frame has come out of the outbox
    std::deque<OutItem> held;
  };

  // I/O thread only.
  void* socket_ = nullptr;
  void* monitor_ = nullptr;
  std::string monitor_endpoint_;
  std::deque<OutItem> queue_;
  std::map<uint64_t, Upload> uploads_;  // by message_id
  Clock::time_point retry_at_;
  int backoff_ms_ = 0;
  SessionValidator validator_{Role::kClient, 0};
  ChunkReassembler reassembler_{kMaxReassemblyBytes, kMaxPendingChunkedMessages, true};
  Clock::time_point last_heard_ = Clock::now();
  bool heard_ = false;          // accepted something on this connection since the last loss
  bool lost_reported_ = false;  // kPeerLost sent; not again until something is accepted
  bool auth_failure_logged_ = false;
  uint32_t heartbeat_interval_ms_;
  uint32_t peer_timeout_ms_;
  std::chrono::milliseconds tick_;
};

Status Client::Impl::Start() {
  TANDEM_RETURN_IF_ERROR(ValidateCommon(options_));
  if (options_.curve) {
    TANDEM_RETURN_IF_ERROR(ValidateKeyPair(options_.own_keys).WithContext("client CURVE keys"));
    TANDEM_RETURN_IF_ERROR(ValidateCurveKey(options_.server_public_key, "server public key"));
  } else if (!IsValidClientName(options_.identity)) {
    return Status::InvalidArgument("client: without CURVE the identity must be 1 to 64 of "
                                   "A-Z a-z 0-9 _ . - (got '" + options_.identity + "')");
  }
  if (options_.reconnect_interval_ms == 0 ||
      options_.reconnect_interval_max_ms < options_.reconnect_interval_ms) {
    return Status::InvalidArgument("client: need 0 < reconnect_interval_ms <= "
                                   "reconnect_interval_max_ms");
  }
  if (context_.get() == nullptr) return ZmqError("cannot create a ZeroMQ context");
  if (!outbox_.wake().ok()) return Status::Internal("cannot create an eventfd");
  TANDEM_RETURN_IF_ERROR(OpenSocket());
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

Status Client::Impl::OpenSocket() {
  static std::atomic<uint64_t> next_monitor{1};
  void* socket = zmq_socket(context_.get(), ZMQ_DEALER);
  if (socket == nullptr) return ZmqError("cannot create a DEALER socket");
  auto fail = [&](Status s) {
    CloseSocket(socket);
    return s;
  };
  const std::string routing_id = options_.curve ? RandomRoutingId() : options_.identity;
  for (Status s : {SetOption(socket, ZMQ_LINGER, 0, "ZMQ_LINGER"), SetMaxMessageSize(socket),
                   SetOption(socket, ZMQ_SNDHWM, options_.high_water_mark, "ZMQ_SNDHWM"),
                   SetOption(socket, ZMQ_RCVHWM, options_.high_water_mark, "ZMQ_RCVHWM"),
                   SetOption(socket, ZMQ_RECONNECT_IVL,
                             static_cast<int>(options_.reconnect_interval_ms), "ZMQ_RECONNECT_IVL"),
                   SetOption(socket, ZMQ_RECONNECT_IVL_MAX,
                             static_cast<int>(options_.reconnect_interval_max_ms),
                             "ZMQ_RECONNECT_IVL_MAX"),
                   SetOption(socket, ZMQ_ROUTING_ID, routing_id, "ZMQ_ROUTING_ID")}) {
    if (!s.ok()) return fail(s);
  }
  if (options_.curve) {
    for (Status s :
         {SetOption(socket, ZMQ_CURVE_SERVERKEY, options_.server_public_key, "ZMQ_CURVE_SERVERKEY"),
          SetOption(socket, ZMQ_CURVE_PUBLICKEY, options_.own_keys.public_key, "ZMQ_CURVE_PUBLICKEY"),
          SetOption(socket, ZMQ_CURVE_SECRETKEY, options_.own_keys.secret_key,
                    "ZMQ_CURVE_SECRETKEY")}) {
      if (!s.ok()) return fail(s);
    }
  }
  // Handshake failures (a refused key, a wrong server key) are only visible here.
  const std::string monitor_endpoint =
      "inproc://tandem-client-monitor-" + std::to_string(next_monitor.fetch_add(1));
  if (zmq_socket_monitor(socket, monitor_endpoint.c_str(),
                         ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0) {
    return fail(ZmqError("cannot monitor the client socket"));
  }
  void* monitor = zmq_socket(context_.get(), ZMQ_PAIR);
  if (monitor == nullptr || zmq_connect(monitor, monitor_endpoint.c_str()) != 0) {
    Status s = ZmqError("cannot connect the socket monitor");
    CloseSocket(monitor);
    return fail(s);
  }
  if (zmq_connect(socket, options_.endpoint.c_str()) != 0) {
    Status s = ZmqError("cannot connect to " + options_.endpoint);
    CloseSocket(monitor);
    return fail(s);
  }
  socket_ = socket;
  monitor_ = monitor;
  monitor_endpoint_ = monitor_endpoint;
  log_->info("client transport connecting to {} (CURVE {})", options_.endpoint,
             options_.curve ? "on" : "off");
  return Status::Ok();
}

void Client::Impl::CloseSockets() {
  if (socket_ != nullptr) zmq_socket_monitor(socket_, nullptr, 0);
  CloseSocket(monitor_);
  CloseSocket(socket_);
}

Client::Impl::~Impl() {
  stop_ = true;
  if (thread_.joinable()) {
    outbox_.wake().Signal();
    thread_.join();
  }
  CloseSockets();
}

Status Client::Impl::Send(Message message) {
  if (failed_) return Status::Unavailable("the client transport has stopped");
  std::lock_guard<std::mutex> lock(send_mu_);
  message.envelope.run_id = run_id_.load();
  message.envelope.sequence = sequence_ + 1;
  TANDEM_RETURN_IF_ERROR(QueueMessage(message, options_.chunk_bytes, outbox_, CoordinatorTarget(),
                                      /*offer=*/true, stats_));
  sequence_ += 1;
  last_round_ = std::max(last_round_, message.envelope.round);
  last_sent_ms_ = NowMs();
  return Status::Ok();
}

Status Client::Impl::Reconnect() {
  auto done = std::make_shared<std::promise<Status>>();
  std::future<Status> result = done->get_future();
  {
    // Under the send lock, so no frame stamped for the old session follows the command.
    std::lock_guard<std::mutex> lock(send_mu_);
    sequence_ = 0;
    last_round_ = 0;
    run_id_ = 0;
    OutItem item;
    item.kind = OutItem::Kind::kReconnect;
    item.done = done;
    outbox_.Push(std::move(item));
  }
  if (result.wait_for(kReconnectWait) != std::future_status::ready) {
    return Status::Unavailable("client: the I/O thread did not reconnect in time");
  }
  return result.get();
}

void Client::Impl::Run() {
  Clock::time_point next_tick = Clock::now() + tick_;
  bool busy = false;
  while (!stop_.load()) {
    const Clock::time_point now = Clock::now();
    int64_t timeout = busy ? 0 : std::max<int64_t>(0, MillisBetween(now, next_tick));
    if (!queue_.empty()) {
      timeout = std::min(timeout, std::max<int64_t>(0, MillisBetween(now, retry_at_)));
    }
    zmq_pollitem_t items[3] = {{socket_, 0, ZMQ_POLLIN, 0},
                               {nullptr, outbox_.wake().fd(), ZMQ_POLLIN, 0},
                               {monitor_, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, 3, static_cast<long>(timeout)) < 0) {
      if (zmq_errno() == EINTR) continue;
      const Status failure = ZmqError("client transport stopped: zmq_poll");
      log_->error("{}", failure.message());
      failed_ = true;
      events_.Fail(failure);
      return;
    }
    if (items[2].revents & ZMQ_POLLIN) ReadMonitor();
    if (items[1].revents & ZMQ_POLLIN) outbox_.wake().Drain();
    if (items[0].revents & ZMQ_POLLIN) ReceiveFrames();
    TakeOutbox();
    busy = SendQueued();
    if (Clock::now() >= next_tick) {
      Tick();
      next_tick = Clock::now() + tick_;
    }
  }
}

void Client::Impl::TakeOutbox() {
  for (OutItem& item : outbox_.TakeAll()) {
    if (item.kind == OutItem::Kind::kFrame) {
      if (item.type == MessageType::kChunkOffer) {
        uploads_[item.message_id] = Upload{};
      } else if (item.held) {
        auto it = uploads_.find(item.message_id);
        TANDEM_CHECK(it != uploads_.end());  // its offer came out of the outbox first
        Upload& upload = it->second;
        upload.complete = item.last;
        if (!upload.granted) {
          upload.held.push_back(std::move(item));
          continue;
        }
        if (upload.complete) uploads_.erase(it);
      }
      queue_.push_back(std::move(item));
      continue;
    }
    if (item.kind != OutItem::Kind::kReconnect) continue;
    size_t held = 0;
    for (const auto& [id, upload] : uploads_) held += upload.held.size();
    stats_.dropped.fetch_add(queue_.size() + held, std::memory_order_relaxed);
    queue_.clear();
    uploads_.clear();
    CloseSockets();
    validator_ = SessionValidator(Role::kClient, 0);
    reassembler_.Clear();
    current_round_ = 0;
    last_heard_ = Clock::now();
    heard_ = false;
    lost_reported_ = false;
    auth_failure_logged_ = false;
    heartbeat_interval_ms_ = options_.heartbeat_interval_ms;
    peer_timeout_ms_ = options_.peer_timeout_ms;
    tick_ = TickFor(heartbeat_interval_ms_, peer_timeout_ms_);
    Status opened = OpenSocket();
    if (!opened.ok()) {
      log_->error("reconnect failed: {}", opened.message());
      events_.Fail(opened);
      failed_ = true;
      stop_ = true;
    }
    item.done->set_value(opened);
    if (!opened.ok()) return;
  }
}

bool Client::Impl::SendQueued() {
  const Clock::time_point now = Clock::now();
  if (retry_at_ > now) return false;
  for (int budget = kMaxFramesPerTurn; !queue_.empty() && budget > 0; --budget) {
    OutItem& item = queue_.front();
    const size_t size = item.frame.size();
    const int err = SendFrame(socket_, item.frame, ZMQ_DONTWAIT);
    if (err == EAGAIN) {
      stats_.retries.fetch_add(1, std::memory_order_relaxed);
      backoff_ms_ = std::clamp(backoff_ms_ * 2, kRetryInitialMs, kRetryMaxMs);
      retry_at_ = now + std::chrono::milliseconds(backoff_ms_);
      return false;
    }
    if (err != 0) {
      stats_.dropped.fetch_add(1, std::memory_order_relaxed);
      log_->warn("dropped a {} frame to the coordinator: {}", MessageTypeName(item.type),
                 zmq_strerror(err));
    } else {
      backoff_ms_ = 0;
      stats_.frames_sent.fetch_add(1, std::memory_order_relaxed);
      stats_.bytes_sent.fetch_add(size, std::memory_order_relaxed);
      if (item.last && !IsFramingType(item.type)) {
        (item.type == MessageType::kHeartbeat ? stats_.heartbeats_sent : stats_.messages_sent)
            .fetch_add(1, std::memory_order_relaxed);
      }
      last_sent_ms_ = NowMs();
    }
    queue_.pop_front();
  }
  return !queue_.empty();
}

void Client::Impl::ReceiveFrames() {
  for (int n = 0; n < kMaxFramesPerTurn; ++n) {
    ZmqMessage payload;
    if (zmq_msg_recv(payload.get(), socket_, ZMQ_DONTWAIT) < 0) return;
    if (payload.more()) {
      while (true) {
        ZmqMessage extra;
        if (zmq_msg_recv(extra.get(), socket_, 0) < 0 || !extra.more()) break;
      }
      stats_.frames_received.fetch_add(1, std::memory_order_relaxed);
      Reject("a multipart message (one frame expected)");
      continue;
    }
    HandleFrame(payload);
  }
}

void Client::Impl::Reject(const std::string& reason) {
  stats_.rejected.fetch_add(1, std::memory_order_relaxed);
  log_->warn("rejected a frame from the coordinator: {}", reason);
}

void Client::Impl::HandleFrame(ZmqMessage& payload) {
  const std::string_view bytes = payload.bytes();
  stats_.frames_received.fetch_add(1, std::memory_order_relaxed);
  stats_.bytes_received.fetch_add(bytes.size(), std::memory_order_relaxed);
  if (bytes.size() <= kMaxFrameBytes) {
    StatusOr<MessageType> type = PeekType(bytes);
    if (type.ok() && *type == MessageType::kChunkGrant) {
      HandleGrant(bytes);
      return;
    }
  }
  Decoded decoded = DecodeFrame(bytes, &reassembler_);
  if (!decoded.error.ok()) {
    Reject(decoded.error.message());
    if (heard_) ReplyError(ErrorCode::kBadMessage, decoded.error.message(), 0);
    return;
  }
  // Only accepted frames are signs of life here: a coordinator that restarted (and rejects
  // everything of the old session) must be reported lost so that the owner rejoins.
  if (!decoded.complete) {
    last_heard_ = Clock::now();
    return;
  }
  Message& message = *decoded.message;
  const MessageType type = message.type();
  Status accepted = AcceptIntoSession(validator_, message);
  if (!accepted.ok()) {
    Reject(accepted.message());
    if (heard_ && type != MessageType::kHeartbeat && type != MessageType::kError) {
      ReplyError(accepted.code() == StatusCode::kFailedPrecondition ? ErrorCode::kStale
                                                                    : ErrorCode::kBadMessage,
                 accepted.message(), message.envelope.task_id);
    }
    return;
  }
  last_heard_ = Clock::now();
  run_id_ = validator_.run_id();
  current_round_ = validator_.current_round();
  if (!heard_) {
    heard_ = true;
    lost_reported_ = false;
    events_.Push(TransportEvent{TransportEvent::Kind::kPeerJoined, kCoordinatorPeer, {}});
  }
  if (type == MessageType::kHeartbeat) {
    stats_.heartbeats_received.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  stats_.messages_received.fetch_add(1, std::memory_order_relaxed);
  if (const auto* welcome = std::get_if<Welcome>(&message.body)) {
    // The coordinator sets the session's pace.
    heartbeat_interval_ms_ = welcome->heartbeat_interval_ms;
    peer_timeout_ms_ = welcome->peer_timeout_ms;
    tick_ = TickFor(heartbeat_interval_ms_, peer_timeout_ms_);
  }
  if (type == MessageType::kBye) {
    log_->info("the coordinator said Bye ({})", std::get<Bye>(message.body).reason);
    heard_ = false;
    lost_reported_ = true;
    events_.Push(TransportEvent{TransportEvent::Kind::kPeerLost, kCoordinatorPeer,
                                std::move(message)});
    return;
  }
  events_.Push(TransportEvent{TransportEvent::Kind::kMessage, kCoordinatorPeer,
                              std::move(message)});
}

void Client::Impl::HandleGrant(std::string_view bytes) {
  StatusOr<ChunkGrant> grant = DecodeChunkGrant(bytes);
  if (!grant.ok()) {
    Reject(grant.status().message());
    if (heard_) ReplyError(ErrorCode::kBadMessage, grant.status().message(), 0);
    return;
  }
  auto it = uploads_.find(grant->message_id);
  if (it == uploads_.end() || it->second.granted) {
    // E.g. for an upload that Reconnect() dropped. Not answered: there is nothing to correct.
    Reject("a ChunkGrant for message " + std::to_string(grant->message_id) +
           ", which is not waiting for one");
    return;
  }
  last_heard_ = Clock::now();  // an accepted frame
  stats_.uploads_granted.fetch_add(1, std::memory_order_relaxed);
  Upload& upload = it->second;
  upload.granted = true;
  for (OutItem& item : upload.held) queue_.push_back(std::move(item));
  upload.held.clear();
  if (upload.complete) uploads_.erase(it);
}

void Client::Impl::ReadMonitor() {
  for (int n = 0; n < 16; ++n) {
    ZmqMessage event;
    if (zmq_msg_recv(event.get(), monitor_, ZMQ_DONTWAIT) < 0) return;
    std::string address;
    if (event.more()) {
      ZmqMessage endpoint;
      if (zmq_msg_recv(endpoint.get(), monitor_, 0) >= 0) address = std::string(endpoint.bytes());
    }
    if (event.bytes().size() < 6) continue;
    uint16_t id;
    std::memcpy(&id, event.bytes().data(), sizeof(id));
    if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      auth_failure_logged_ = false;
      log_->debug("handshake with {} succeeded", address);
      continue;
    }
    if (auth_failure_logged_) continue;  // ZeroMQ retries; say it once per connection
    auth_failure_logged_ = true;
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      log_->warn("the coordinator at {} refused this client's CURVE key (not on its allow-list?)",
                 address);
    } else {
      log_->warn("handshake with {} failed (wrong server public key, or CURVE on one side only?)",
                 address);
    }
  }
}

void Client::Impl::ReplyError(ErrorCode code, const std::string& text, uint64_t task_id) {
  std::unique_lock<std::mutex> lock(send_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  const Message error = ErrorMessage(run_id_.load(), std::max(last_round_, current_round_.load()),
                                     task_id, sequence_ + 1, code, text);
  if (QueueMessage(error, options_.chunk_bytes, outbox_, CoordinatorTarget(), false, stats_).ok()) {
    sequence_ += 1;
    last_sent_ms_ = NowMs();
  }
}

void Client::Impl::QueueHeartbeat() {
  std::unique_lock<std::mutex> lock(send_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  const Message heartbeat = HeartbeatMessage(
      run_id_.load(), std::max(last_round_, current_round_.load()), sequence_ + 1);
  if (QueueMessage(heartbeat, options_.chunk_bytes, outbox_, CoordinatorTarget(), false, stats_)
          .ok()) {
    sequence_ += 1;
    last_sent_ms_ = NowMs();
  }
}

void Client::Impl::Tick() {
  const Clock::time_point now = Clock::now();
  if (!lost_reported_ && MillisBetween(last_heard_, now) >= peer_timeout_ms_) {
    log_->warn("lost the coordinator: nothing accepted for {} ms", peer_timeout_ms_);
    lost_reported_ = true;
    heard_ = false;
    events_.Push(TransportEvent{TransportEvent::Kind::kPeerLost, kCoordinatorPeer, {}});
    return;
  }
  if (heard_ && NowMs() - last_sent_ms_.load() >= heartbeat_interval_ms_) QueueHeartbeat();
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

StatusOr<std::unique_ptr<Client>> Client::Connect(const TransportOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  TANDEM_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Status Client::Send(Message message) { return impl_->Send(std::move(message)); }
StatusOr<std::optional<TransportEvent>> Client::Receive(std::chrono::milliseconds timeout) {
  return impl_->Receive(timeout);
}
Status Client::Reconnect() { return impl_->Reconnect(); }
TransportStats Client::stats() const { return impl_->stats(); }

}  // namespace tandem::wire

// The client side of the transport (see wire/transport_client.h): its I/O thread owns the DEALER
// and a socket monitor (handshake failures are only visible there), takes frames from owner
// threads through the outbox and holds an upload's chunks until its ChunkGrant arrives
// (docs/protocol.md "Upload flow control"). libzmq's C API is used directly.
#include "wire/transport_client.h"

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "core/logging.h"
#include "wire/chunk.h"
#include "wire/session.h"
#include "wire/transport_common.h"

namespace tandem::wire {

using namespace detail;

namespace {

constexpr const char* kCoordinatorPeer = "coordinator";
constexpr auto kReconnectWait = std::chrono::seconds(5);

// A Client's only target: the coordinator, over its one connection.
std::vector<Target> CoordinatorTarget() {
  static const std::string peer = kCoordinatorPeer;
  static const std::string routing_id;
  return {Target{&peer, &routing_id}};
}

std::string RandomRoutingId() {
  std::random_device rd;
  std::string id(kCurveRoutingIdBytes, '\0');
  for (char& c : id) c = static_cast<char>(rd() & 0xFF);
  if (id[0] == '\0') id[0] = 1;  // ids starting with 0 are reserved for ZeroMQ's own
  return id;
}

}  // namespace

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
  } else if (!IsValidClientName(options_.identity) ||
             (options_.service_session &&
              !IsValidClientName(options_.identity + std::string(kServiceSessionSuffix)))) {
    return Status::InvalidArgument(
        "client: without CURVE the identity must be 1 to " +
        std::to_string(kMaxClientNameBytes -
                       (options_.service_session ? kServiceSessionSuffix.size() : 0)) +
        " of A-Z a-z 0-9 _ . - (got '" + options_.identity + "')");
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
  const std::string routing_id =
      (options_.curve ? RandomRoutingId() : options_.identity) +
      std::string(options_.service_session ? kServiceSessionSuffix : "");
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

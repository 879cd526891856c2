// The coordinator side of the transport (see wire/transport_server.h): its I/O thread owns the
// ROUTER, takes frames from owner threads through the outbox, tracks sessions by identity (the
// ZAP User-Id with CURVE) and grants offered uploads in arrival order (docs/protocol.md
// "Upload flow control"). libzmq's C API is used directly; every failure becomes a Status.
#include "wire/transport_server.h"

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "core/logging.h"
#include "wire/chunk.h"
#include "wire/session.h"
#include "wire/transport_common.h"
#include "wire/zap.h"

namespace tandem::wire {

using namespace detail;

namespace {

// How often the I/O thread looks again while offers wait for a broadcast's frames to be released
// (the release happens on ZeroMQ's threads and does not wake it).
constexpr int64_t kHoldPollMs = 5;

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

}  // namespace

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
  void DecideUpload(const std::string& peer, uint64_t message_id, bool stream) {
    {
      std::lock_guard<std::mutex> lock(decisions_mu_);
      decisions_.push_back(Decision{peer, message_id, stream});
    }
    outbox_.wake().Signal();
  }
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
    bool started = false;             // a chunk of it was accepted since the grant
    Clock::time_point last_progress;  // granted, or its last chunk accepted
    bool decided = true;   // false: a declared contribution waits for the owner's DecideUpload
    bool stream = false;   // its contribution's values go to the owner as they arrive
    Clock::time_point offered_at;
    std::optional<TransportEvent> unreported;  // kUploadOffered, held back while a broadcast is out
  };
  // How a peer has used the upload slot; outlives its sessions, so a rejoin does not wipe it.
  struct Uploader {
    uint64_t last_turn = 0;  // grant_turns_ when it was last granted; 0: never
    uint32_t no_shows = 0;   // grants in a row it let expire without a chunk
    Clock::time_point penalty_until;  // its offers are not granted before this
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
                     Message message, std::optional<uint64_t> upload = std::nullopt,
                     bool streamed = false);
  void GrantUploads();
  // While a broadcast's frames are out, offers wait (upload_hold_for_broadcast_ms).
  bool HeldForBroadcast(const Upload& up, Clock::time_point now) const;
  bool ReportOffers();  // reports the offers no longer held; true while some still are
  void ApplyDecisions();  // the owner's DecideUpload answers
  void UploadFailed(const std::string& identity, uint64_t message_id, const std::string& reason);
  void ExpireGrants(Clock::time_point now);  // withdraws grants that saw no chunk in time
  // Frees its slot if granted; a streamed upload that ends without completing (a non-empty
  // `failure`) is reported to the owner as kUploadFailed.
  void EndUpload(Session& session, uint64_t message_id, const std::string& failure = "");
  void EndUploads(Session& session);  // all of a session's, as it ends
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
  // Bytes of Broadcast frames some peer's copy of which is still alive (released on ZeroMQ's
  // threads once sent).
  const std::shared_ptr<std::atomic<int64_t>> broadcast_bytes_ =
      std::make_shared<std::atomic<int64_t>>(0);
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
  std::map<std::string, Uploader> uploaders_;  // by identity
  uint64_t grant_turns_ = 0;                   // grants given so far
  bool hold_ran_out_ = false;  // offers stopped waiting for a broadcast still being sent

  struct Decision {
    std::string peer;
    uint64_t message_id = 0;
    bool stream = false;
  };
  std::mutex decisions_mu_;
  std::vector<Decision> decisions_;  // from DecideUpload, for the I/O thread
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
        QueueMessage(message, options_.chunk_bytes, outbox_, targets, false, stats_,
                     broadcast_bytes_));
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
  bool holding = false;  // offers wait for a broadcast: its release comes on ZeroMQ's threads
  while (!stop_.load()) {
    const Clock::time_point now = Clock::now();
    int64_t timeout = busy ? 0 : std::max<int64_t>(0, MillisBetween(now, next_tick));
    if (holding) timeout = std::min<int64_t>(timeout, kHoldPollMs);
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
    ApplyDecisions();
    if (items[0].revents & ZMQ_POLLIN) ReceiveFrames();
    holding = ReportOffers();
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
    if (routing_id.size() == kCurveRoutingIdBytes + kServiceSessionSuffix.size() &&
        routing_id.ends_with(kServiceSessionSuffix)) {
      identity += kServiceSessionSuffix;  // the key's service session
      if (!IsValidClientName(identity)) {
        Reject(Printable(routing_id), nullptr,
               "the service session of '" + std::string(user_id) + "' has too long a name");
        return;
      }
    }
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
  bool streamed = false;
  if (decoded.chunk && session) {
    auto up = session->uploads.find(decoded.chunk_id);
    if (up != session->uploads.end() && up->second.granted) {
      const uint64_t id = decoded.chunk_id;
      streamed = up->second.stream;
      if (streamed && !decoded.bin_piece.empty()) {
        TransportEvent values{TransportEvent::Kind::kUploadValues, identity, Message{}};
        values.upload_id = id;
        values.value_offset = decoded.bin_offset / 4;
        values.values = std::move(decoded.bin_piece);
        events_.Push(std::move(values));
      }
      if (decoded.complete) {
        upload = id;
        uploaders_[identity].no_shows = 0;
        EndUpload(*session, id);
        if (streamed && !decoded.streamed) {
          // Its first chunk held no contribution to take apart: it came whole after all.
          UploadFailed(identity, id, "the upload carried no contribution to stream");
          streamed = false;
        } else if (streamed && !decoded.error.ok()) {
          UploadFailed(identity, id, "the result failed to decode: " + decoded.error.message());
        }
      } else if (decoded.error.ok()) {
        up->second.started = true;
        up->second.last_progress = Clock::now();
        if (streamed && decoded.reassembled && !session->reassembler.Streams(id)) {
          UploadFailed(identity, id, "the upload carries no contribution to stream");
          up->second.stream = false;
        }
      } else if (decoded.reassembled && !session->reassembler.Holds(id)) {
        // The reassembler dropped the message (or never started it): it cannot complete. A chunk
        // refused before it (not admitted) changes nothing.
        log_->warn("upload {} from '{}' failed; its slot is free", id, identity);
        EndUpload(*session, id, "a chunk was refused: " + decoded.error.message());
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
  HandleMessage(identity, routing_id, session, std::move(*decoded.message), upload, streamed);
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
  up.offered_at = Clock::now();
  if (options_.stream_contributions && offer->contribution) {
    // The owner decides whether it streams before the upload may be granted.
    up.decided = false;
    TransportEvent event{TransportEvent::Kind::kUploadOffered, identity, Message{}};
    event.upload_id = id;
    event.round = offer->contribution->round;
    event.task_id = offer->contribution->task_id;
    event.weight = offer->contribution->weight;
    event.values_total = offer->contribution->values;
    if (HeldForBroadcast(up, up.offered_at)) {
      up.unreported = std::move(event);
    } else {
      events_.Push(std::move(event));
    }
  }
  waiting_.push_back(WaitingUpload{identity, session->epoch, id});
  Add(stats_.uploads_offered, peer_stats, &AtomicStats::uploads_offered);
  log_->debug("'{}' offers message {} ({} bytes in {} chunks); {} waiting", identity, id,
              offer->total_bytes, offer->count, waiting_.size());
}

bool Server::Impl::HeldForBroadcast(const Upload& up, Clock::time_point now) const {
  return options_.upload_hold_for_broadcast_ms > 0 && broadcast_bytes_->load() > 0 &&
         MillisBetween(up.offered_at, now) < options_.upload_hold_for_broadcast_ms;
}

bool Server::Impl::ReportOffers() {
  if (options_.upload_hold_for_broadcast_ms == 0) return false;
  const Clock::time_point now = Clock::now();
  bool holding = false;
  for (const WaitingUpload& w : waiting_) {
    auto it = sessions_.find(w.identity);
    if (it == sessions_.end() || it->second.epoch != w.epoch) continue;
    auto up = it->second.uploads.find(w.message_id);
    if (up == it->second.uploads.end() || up->second.granted) continue;
    if (HeldForBroadcast(up->second, now)) {
      holding = true;
      continue;
    }
    const int64_t out = broadcast_bytes_->load();
    if (out > 0 && !hold_ran_out_) {
      hold_ran_out_ = true;  // logged once per broadcast
      log_->info("round {}: offers waited {} ms for the broadcast; {} bytes of it not yet sent",
                 current_round_.load(), options_.upload_hold_for_broadcast_ms, out);
    }
    if (out == 0) hold_ran_out_ = false;
    if (up->second.unreported) {
      events_.Push(std::move(*up->second.unreported));
      up->second.unreported.reset();
    }
  }
  return holding;
}

void Server::Impl::GrantUploads() {
  // Round robin over peers, not first come first served: among the offers waiting, the peer
  // granted least recently goes first (arrival order among equals and within a peer), and a peer
  // serving a no-show penalty waits. One peer that keeps offering cannot take every turn.
  const Clock::time_point now = Clock::now();
  while (active_uploads_ < options_.max_active_uploads && !waiting_.empty() &&
         events_.queued_bytes() < options_.upload_queue_budget_bytes) {
    constexpr size_t kNone = static_cast<size_t>(-1);  // not waiting_.size(): erasing shrinks it
    size_t best = kNone;
    uint64_t best_turn = 0;
    for (size_t i = 0; i < waiting_.size();) {
      const WaitingUpload& w = waiting_[i];
      auto it = sessions_.find(w.identity);
      bool gone = it == sessions_.end() || it->second.epoch != w.epoch;
      if (!gone) {
        auto up = it->second.uploads.find(w.message_id);
        gone = up == it->second.uploads.end() || up->second.granted;
      }
      if (gone) {
        waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));  // gone by its turn
        continue;
      }
      const Uploader& u = uploaders_[w.identity];
      const Upload& up = it->second.uploads.at(w.message_id);
      const bool decided = up.decided && !HeldForBroadcast(up, now);
      if (decided && u.penalty_until <= now && (best == kNone || u.last_turn < best_turn)) {
        best = i;
        best_turn = u.last_turn;
      }
      ++i;
    }
    if (best == kNone) return;  // nothing waiting, or only peers serving a penalty
    const WaitingUpload next = waiting_[best];
    waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(best));
    Session& session = sessions_.at(next.identity);
    Upload& up = session.uploads.at(next.message_id);
    up.granted = true;
    up.started = false;
    up.last_progress = now;
    ++active_uploads_;
    uploaders_[next.identity].last_turn = ++grant_turns_;
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

void Server::Impl::ExpireGrants(Clock::time_point now) {
  const int64_t limit_ms =
      std::min<int64_t>(options_.upload_grant_timeout_ms, options_.peer_timeout_ms);
  for (auto& [identity, session] : sessions_) {
    std::vector<uint64_t> unused;
    for (const auto& [id, up] : session.uploads) {
      if (up.granted && !up.started && MillisBetween(up.last_progress, now) >= limit_ms) {
        unused.push_back(id);
      }
    }
    for (uint64_t id : unused) {
      Uploader& u = uploaders_[identity];
      u.no_shows = std::min<uint32_t>(u.no_shows + 1, 7);
      const int64_t penalty_ms = limit_ms << (u.no_shows - 1);  // limit, 2 x limit, .. 64 x limit
      u.penalty_until = now + std::chrono::milliseconds(penalty_ms);
      log_->warn("round {}: '{}' sent no chunk of upload {} within {} ms of its grant; the slot "
                 "is free and its offers wait {} ms (no-show {} in a row)",
                 current_round_.load(), identity, id, limit_ms, penalty_ms, u.no_shows);
      EndUpload(session, id, "no chunk came within " + std::to_string(limit_ms) +
                                 " ms of its grant");
    }
  }
}

void Server::Impl::EndUpload(Session& session, uint64_t message_id, const std::string& failure) {
  auto up = session.uploads.find(message_id);
  if (up == session.uploads.end()) return;
  if (up->second.granted) {
    TANDEM_CHECK(active_uploads_ > 0);
    --active_uploads_;
  }
  if (up->second.stream && !failure.empty() && session.state) {
    for (const auto& [identity, s] : sessions_) {
      if (&s == &session) UploadFailed(identity, message_id, failure);
    }
  }
  session.reassembler.Discard(message_id);  // nothing left once it completed
  session.uploads.erase(up);
}

void Server::Impl::EndUploads(Session& session) {
  while (!session.uploads.empty()) {
    EndUpload(session, session.uploads.begin()->first, "the client's session ended");
  }
  session.reassembler.Clear();
}

void Server::Impl::UploadFailed(const std::string& identity, uint64_t message_id,
                                const std::string& reason) {
  TransportEvent event{TransportEvent::Kind::kUploadFailed, identity, Message{}};
  event.upload_id = message_id;
  event.reason = reason;
  events_.Push(std::move(event));
}

void Server::Impl::ApplyDecisions() {
  std::vector<Decision> decisions;
  {
    std::lock_guard<std::mutex> lock(decisions_mu_);
    decisions.swap(decisions_);
  }
  for (const Decision& d : decisions) {
    auto it = sessions_.find(d.peer);
    if (it == sessions_.end()) continue;  // gone, and its uploads with it
    auto up = it->second.uploads.find(d.message_id);
    if (up == it->second.uploads.end() || up->second.decided) continue;
    up->second.decided = true;
    up->second.stream = d.stream;
    if (d.stream) it->second.reassembler.StreamBin(d.message_id);
  }
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
                                 std::optional<uint64_t> upload, bool streamed) {
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
    if (streamed) UploadFailed(identity, *upload, "the result was refused: " + accepted.message());
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
  ExpireGrants(now);
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
      EndUpload(session, id, "its chunks stalled for " + std::to_string(stall_ms) + " ms");
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
void Server::DecideUpload(const std::string& peer, uint64_t message_id, bool stream) {
  impl_->DecideUpload(peer, message_id, stream);
}
std::vector<std::string> Server::peers() const { return impl_->peers(); }
TransportStats Server::stats() const { return impl_->stats(); }
TransportStats Server::peer_stats(const std::string& peer) const {
  return impl_->peer_stats(peer);
}

}  // namespace tandem::wire

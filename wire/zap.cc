// The ZAP handler (see wire/zap.h): answers ZAP requests (RFC 27) on inproc://zeromq.zap.01
// from its own thread; a request passes only for mechanism CURVE and a client key on its
// domain's allow-list (wire/curve.h, docs/protocol.md "Transport").
#include "wire/zap.h"

#include <zmq.h>

#include <vector>

namespace tandem::wire::detail {
namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

}  // namespace

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

}  // namespace tandem::wire::detail

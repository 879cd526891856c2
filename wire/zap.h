// The ZAP handler (ZeroMQ RFC 27) that enforces the coordinator's allow-list of CURVE client keys
// (wire/curve.h): one per ZeroMQ context, shared by the transport Servers in it; the User-Id it
// returns is the key's allow-list NAME. Internal to wire/: Server::Bind starts it with CURVE on.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/logging.h"
#include "core/status.h"
#include "wire/curve.h"
#include "wire/zmq_socket.h"

namespace tandem::wire::detail {

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

}  // namespace tandem::wire::detail

// The [federation] transport keys; see wire/transport_config.h.
#include "wire/transport_config.h"

#include <filesystem>
#include <functional>

#include "core/config.h"
#include "wire/curve.h"

namespace tandem::wire {
namespace {

// sun_path holds 108 bytes including the terminating NUL.
constexpr size_t kMaxIpcPath = 100;

bool HasScheme(const std::string& endpoint, const std::string& scheme) {
  return endpoint.rfind(scheme + "://", 0) == 0;
}

}  // namespace

StatusOr<TransportConfig> TransportConfigFromConfig(const Config& config,
                                                    const std::string& run_dir) {
  TransportConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.transport, config.GetChoice("federation.transport", "ipc",
                                                        {"inproc", "ipc", "tcp"}));
  TANDEM_ASSIGN_OR_RETURN(c.endpoint, config.GetString("federation.endpoint", ""));
  TANDEM_ASSIGN_OR_RETURN(c.curve, config.GetBool("federation.curve", c.transport == "tcp"));
  TANDEM_ASSIGN_OR_RETURN(c.keys_dir, config.GetString("federation.keys_dir", run_dir + "/keys"));
  TANDEM_ASSIGN_OR_RETURN(int64_t hb, config.GetInt("federation.heartbeat_ms", c.heartbeat_ms,
                                                    10, 600'000));
  TANDEM_ASSIGN_OR_RETURN(int64_t timeout,
                          config.GetInt("federation.peer_timeout_ms", c.peer_timeout_ms, 50,
                                        86'400'000));
  if (timeout < 2 * hb) {
    return Status::InvalidArgument(config.source() + ": federation.peer_timeout_ms (" +
                                   std::to_string(timeout) +
                                   ") must be at least twice federation.heartbeat_ms (" +
                                   std::to_string(hb) + ")");
  }
  c.heartbeat_ms = static_cast<uint32_t>(hb);
  c.peer_timeout_ms = static_cast<uint32_t>(timeout);
  TANDEM_ASSIGN_OR_RETURN(int64_t grant_timeout,
                          config.GetInt("federation.upload_grant_timeout_ms",
                                        c.upload_grant_timeout_ms, 10, 86'400'000));
  c.upload_grant_timeout_ms = static_cast<uint32_t>(grant_timeout);
  TANDEM_ASSIGN_OR_RETURN(std::string name, config.GetString("name", "run"));
  if (c.endpoint.empty()) {
    if (c.transport == "inproc") {
      c.endpoint = "inproc://tandem-" + name;
    } else if (c.transport == "tcp") {
      c.endpoint = "tcp://127.0.0.1:0";
    } else {
      std::error_code ec;
      std::string path = std::filesystem::absolute(run_dir, ec).string() + "/coordinator.sock";
      if (ec || path.size() > kMaxIpcPath) {
        path = "/tmp/tandem-" + std::to_string(std::hash<std::string>{}(path) % 1'000'000'007) +
               ".sock";
      }
      c.endpoint = "ipc://" + path;
    }
  } else if (!HasScheme(c.endpoint, c.transport)) {
    return Status::InvalidArgument(config.source() + ": federation.endpoint '" + c.endpoint +
                                   "' does not use the " + c.transport +
                                   ":// scheme that federation.transport names");
  }
  if (c.transport == "ipc" && c.endpoint.size() - 6 > kMaxIpcPath) {
    return Status::InvalidArgument(config.source() + ": federation.endpoint '" + c.endpoint +
                                   "' is too long for a Unix socket path (at most " +
                                   std::to_string(kMaxIpcPath) + " bytes)");
  }
  return c;
}

StatusOr<TransportOptions> ServerTransportOptions(const TransportConfig& config,
                                                  const std::string& endpoint, uint64_t run_id) {
  TransportOptions o;
  o.endpoint = endpoint;
  o.curve = config.curve;
  o.run_id = run_id;
  o.heartbeat_interval_ms = config.heartbeat_ms;
  o.peer_timeout_ms = config.peer_timeout_ms;
  o.upload_grant_timeout_ms = config.upload_grant_timeout_ms;
  if (config.curve) {
    auto keys = LoadKeyPair(config.keys_dir + "/coordinator.key");
    if (!keys.ok()) {
      return Status::FailedPrecondition(keys.status().message() +
                                        " (CURVE is on: make keys with `tandem keygen --out " +
                                        config.keys_dir + " --clients N`)");
    }
    o.own_keys = *keys;
    TANDEM_ASSIGN_OR_RETURN(o.allow_list, LoadAllowList(config.keys_dir + "/allow-list.txt"));
  }
  return o;
}

StatusOr<TransportOptions> ClientTransportOptions(const TransportConfig& config,
                                                  const std::string& endpoint, int index) {
  TransportOptions o;
  o.endpoint = endpoint;
  o.curve = config.curve;
  o.heartbeat_interval_ms = config.heartbeat_ms;
  o.peer_timeout_ms = config.peer_timeout_ms;
  o.identity = "client-" + std::to_string(index);
  if (config.curve) {
    const std::string key_path = config.keys_dir + "/client-" + std::to_string(index) + ".key";
    auto keys = LoadKeyPair(key_path);
    if (!keys.ok()) {
      return Status::FailedPrecondition(keys.status().message() +
                                        " (CURVE is on: this client needs its key pair from "
                                        "`tandem keygen`)");
    }
    o.own_keys = *keys;
    TANDEM_ASSIGN_OR_RETURN(o.server_public_key,
                            LoadPublicKey(config.keys_dir + "/coordinator.pub"));
  }
  return o;
}

}  // namespace tandem::wire

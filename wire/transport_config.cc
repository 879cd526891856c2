// The [federation] transport keys; see wire/transport_config.h.
#include "wire/transport_config.h"

#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>

#include "core/config.h"
#include "core/logging.h"
#include "wire/curve.h"

namespace tandem::wire {
namespace {

// sun_path holds 108 bytes including the terminating NUL.
constexpr size_t kMaxIpcPath = 100;

bool HasScheme(const std::string& endpoint, const std::string& scheme) {
  return endpoint.rfind(scheme + "://", 0) == 0;
}

// Why CURVE is on where CurveFor said yes (a tcp:// default, or the config), for messages.
std::string CurveReason(const TransportConfig& config) {
  return config.curve_setting.has_value() ? "federation.curve = true"
                                          : "on by default for tcp://";
}

// The warning for a tcp:// endpoint whose config switched CURVE off.
void WarnInTheClear(const std::string& endpoint, const std::string& consequence) {
  GetLogger("wire")->warn("CURVE is off (federation.curve = false): the traffic on {} is in the "
                          "clear, readable and forgeable by anyone on the network, and {}",
                          endpoint, consequence);
}

}  // namespace

bool CurveFor(const TransportConfig& config, const std::string& endpoint) {
  if (config.curve_setting.has_value()) return *config.curve_setting;
  return HasScheme(endpoint, "tcp");
}

StatusOr<TransportConfig> TransportConfigFromConfig(const Config& config,
                                                    const std::string& run_dir) {
  TransportConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.transport, config.GetChoice("federation.transport", "ipc",
                                                        {"inproc", "ipc", "tcp"}));
  TANDEM_ASSIGN_OR_RETURN(c.endpoint, config.GetString("federation.endpoint", ""));
  TANDEM_ASSIGN_OR_RETURN(c.curve, config.GetBool("federation.curve", c.transport == "tcp"));
  if (config.Has("federation.curve")) c.curve_setting = c.curve;
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
  o.curve = CurveFor(config, endpoint);
  o.run_id = run_id;
  o.heartbeat_interval_ms = config.heartbeat_ms;
  o.peer_timeout_ms = config.peer_timeout_ms;
  o.upload_grant_timeout_ms = config.upload_grant_timeout_ms;
  if (!o.curve) {
    if (HasScheme(endpoint, "tcp")) WarnInTheClear(endpoint, "any client that connects is admitted");
    return o;
  }
  // Both files, so that the error names every one that is missing.
  auto keys = LoadKeyPair(config.keys_dir + "/coordinator.key");
  auto allow_list = LoadAllowList(config.keys_dir + "/allow-list.txt");
  if (!keys.ok() || !allow_list.ok()) {
    const Status& failed = keys.ok() ? allow_list.status() : keys.status();
    return Status::FailedPrecondition(
        "CURVE is on for " + endpoint + " (" + CurveReason(config) +
        "), but the coordinator's keys cannot be read: " + failed.message() +
        ". Make them with `tandem keygen --out " + config.keys_dir +
        " --clients N` (N: the number of clients), or point --keys or federation.keys_dir at "
        "the directory that holds them; or set federation.curve = false to send the traffic in "
        "the clear");
  }
  o.own_keys = *keys;
  o.allow_list = *allow_list;
  GetLogger("wire")->info("CURVE on for {} ({}): the traffic is encrypted, and only the {} client "
                          "keys of {}/allow-list.txt are admitted",
                          endpoint, CurveReason(config), o.allow_list.name_by_key.size(),
                          config.keys_dir);
  return o;
}

StatusOr<TransportOptions> ClientTransportOptions(const TransportConfig& config,
                                                  const std::string& endpoint, int index) {
  TransportOptions o;
  o.endpoint = endpoint;
  o.curve = CurveFor(config, endpoint);
  o.heartbeat_interval_ms = config.heartbeat_ms;
  o.peer_timeout_ms = config.peer_timeout_ms;
  o.identity = "client-" + std::to_string(index);
  if (!o.curve) {
    if (HasScheme(endpoint, "tcp")) {
      WarnInTheClear(endpoint, "this client cannot tell the coordinator from an impostor");
    }
    return o;
  }
  const std::string key_name = "client-" + std::to_string(index) + ".key";
  auto keys = LoadKeyPair(config.keys_dir + "/" + key_name);
  auto server_key = LoadPublicKey(config.keys_dir + "/coordinator.pub");
  if (!keys.ok() || !server_key.ok()) {
    const Status& failed = keys.ok() ? server_key.status() : keys.status();
    return Status::FailedPrecondition(
        "client " + std::to_string(index) + ": CURVE is on for " + endpoint + " (" +
        CurveReason(config) + "), but this client's keys cannot be read: " + failed.message() +
        ". `tandem keygen --out DIR --clients N` makes every key of a run; this client needs "
        "DIR/" + key_name + " and DIR/coordinator.pub (pass --keys DIR, or set "
        "federation.keys_dir); or set federation.curve = false on the coordinator and every "
        "client to send the traffic in the clear");
  }
  o.own_keys = *keys;
  o.server_public_key = *server_key;
  GetLogger("wire")->info("client {}: CURVE on for {} ({}), coordinator key from {}/coordinator.pub",
                          index, endpoint, CurveReason(config), config.keys_dir);
  return o;
}

Status CheckCoordinatorAddress(const std::string& endpoint) {
  if (!HasScheme(endpoint, "tcp")) return Status::Ok();
  std::string address = endpoint.substr(6);
  // ZeroMQ's tcp://SOURCE;HOST:PORT names the local address to connect from before the ';'.
  if (size_t semi = address.rfind(';'); semi != std::string::npos) address.erase(0, semi + 1);
  std::string host, port;
  if (!address.empty() && address[0] == '[') {  // [IPv6]:PORT
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return Status::InvalidArgument("coordinator endpoint '" + endpoint +
                                     "' is not tcp://[ADDRESS]:PORT");
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return Status::InvalidArgument("coordinator endpoint '" + endpoint +
                                     "' has no port: expected tcp://HOST:PORT");
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  if (host.empty()) {
    return Status::InvalidArgument("coordinator endpoint '" + endpoint +
                                   "' names no host: expected tcp://HOST:PORT");
  }
  const bool digits = !port.empty() && port.size() <= 5 &&
                      port.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || std::stoi(port) < 1 || std::stoi(port) > 65535) {
    return Status::InvalidArgument("coordinator endpoint '" + endpoint + "': port '" + port +
                                   "' is not a port number (1 to 65535)");
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) {
    const std::string reason = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    return Status::NotFound("cannot resolve the coordinator's host '" + host + "' (endpoint " +
                            endpoint + "): " + reason +
                            ". Check the host name in --connect or federation.endpoint; "
                            "`getent hosts " + host + "` on this machine must find it");
  }
  ::freeaddrinfo(found);
  return Status::Ok();
}

}  // namespace tandem::wire

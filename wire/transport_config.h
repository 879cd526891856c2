// The `[federation]` keys that say how coordinator and clients reach each other: transport kind,
// endpoint, CURVE and its keys, heartbeat timing. Shared by `tandem coordinator`, `tandem client`
// and `tandem run`, so both sides derive the same defaults from the same config.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/status.h"
#include "wire/transport.h"

namespace tandem {
class Config;
}

namespace tandem::wire {

struct TransportConfig {
  std::string transport = "ipc";  // "inproc", "ipc" or "tcp"
  std::string endpoint;           // where the coordinator binds (a client's default target)
  // CURVE for the config's own endpoint: federation.curve, else true for tcp. What a process
  // actually uses follows the endpoint it binds or connects to: see CurveFor().
  bool curve = false;
  std::optional<bool> curve_setting;  // federation.curve when the config gives it
  std::string keys_dir;           // default: <run dir>/keys
  uint32_t heartbeat_ms = 1000;
  uint32_t peer_timeout_ms = 10000;
  uint32_t upload_grant_timeout_ms = 2000;  // TransportOptions::upload_grant_timeout_ms
};

// Reads federation.transport, endpoint, curve, keys_dir, heartbeat_ms, peer_timeout_ms,
// upload_grant_timeout_ms. Defaults
// the endpoint from the run directory: inproc://tandem-<name>, ipc://<run dir>/coordinator.sock
// (or a short path under /tmp when that one is too long for a Unix socket), tcp://127.0.0.1:0.
// An endpoint must use the scheme its transport names.
StatusOr<TransportConfig> TransportConfigFromConfig(const Config& config,
                                                    const std::string& run_dir);

// Whether a process that binds or connects to `endpoint` uses CURVE. Secure by default: a
// tcp:// endpoint means CURVE whatever federation.transport says (a `--bind tcp://...` or
// `--connect tcp://...` on an ipc config included) unless the config says `federation.curve =
// false`; ipc:// and inproc:// follow federation.curve, off when it is absent.
bool CurveFor(const TransportConfig& config, const std::string& endpoint);

// Options for the coordinator's Server, with CURVE as CurveFor(config, endpoint) decides. With
// CURVE, loads <keys>/coordinator.key and <keys>/allow-list.txt; when they cannot be read the
// error says how to make them (`tandem keygen`) or how to opt out (`federation.curve = false`).
// Logs, on the "wire" logger, that CURVE is on, or a warning when a tcp:// endpoint runs in the
// clear because the config said so.
StatusOr<TransportOptions> ServerTransportOptions(const TransportConfig& config,
                                                  const std::string& endpoint, uint64_t run_id);

// Options for client `index`, with CURVE as CurveFor(config, endpoint) decides: with CURVE, loads
// <keys>/client-<index>.key and <keys>/coordinator.pub (errors as for the Server); without,
// claims the identity "client-<index>" (and warns on a tcp:// endpoint).
StatusOr<TransportOptions> ClientTransportOptions(const TransportConfig& config,
                                                  const std::string& endpoint, int index);

// A client's check of its coordinator's address before it connects, so that a misspelt host fails
// at once instead of as a coordinator that never answers: a tcp://HOST:PORT endpoint needs a HOST
// that resolves (getaddrinfo) and a PORT in 1..65535 (the error names both, and the reason).
// Other schemes pass: an ipc:// socket appears when its coordinator starts.
Status CheckCoordinatorAddress(const std::string& endpoint);

}  // namespace tandem::wire

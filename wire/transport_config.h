// The `[federation]` keys that say how coordinator and clients reach each other: transport kind,
// endpoint, CURVE and its keys, heartbeat timing. Shared by `tandem coordinator`, `tandem client`
// and `tandem run`, so both sides derive the same defaults from the same config.
#pragma once

#include <cstdint>
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
  bool curve = false;             // default: true for tcp, false otherwise
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

// Options for the coordinator's Server: with CURVE, loads <keys>/coordinator.key and
// <keys>/allow-list.txt (errors say to run `tandem keygen`).
StatusOr<TransportOptions> ServerTransportOptions(const TransportConfig& config,
                                                  const std::string& endpoint, uint64_t run_id);

// Options for client `index`: with CURVE, loads <keys>/client-<index>.key and
// <keys>/coordinator.pub; without, claims the identity "client-<index>".
StatusOr<TransportOptions> ClientTransportOptions(const TransportConfig& config,
                                                  const std::string& endpoint, int index);

}  // namespace tandem::wire

// `tandem serve CONFIG`: the cloud inference service alone, without rounds. Binds the configured
// endpoint with the coordinator's transport settings (federation.*: CURVE with
// <keys>/coordinator.key and the allow-list <keys>/allow-list.txt, as `tandem coordinator`), welcomes
// any allowed client and answers its ServeRequests from the checkpoint serve.checkpoint. Also the
// [serve] section's reader, which the coordinator shares.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "core/status.h"
#include "serve/service.h"
#include "wire/transport_server.h"

namespace tandem {
class Config;
}

namespace tandem::serve {

// The [serve] section.
struct ServeConfig {
  bool enabled = false;    // serve.enabled: the coordinator runs the service beside its rounds
  std::string checkpoint;  // serve.checkpoint: what `tandem serve` serves
  ServiceOptions service;  // serve.max_calls_per_client, max_inflight_per_client, max_queue,
                           // deadline_ms, max_new_tokens, max_gamma, max_batch, threads
};
StatusOr<ServeConfig> ServeConfigFromConfig(const Config& config);

// Hands one transport event that belongs to the service to it, and answers what the service
// does not take: returns true when the event was the service's (a ServeRequest). Used by the
// coordinator's loop and by RunServe's.
bool RouteToService(const wire::TransportEvent& event, InferenceService* service);

// The service's receive loop over `server` until *stop is set (checked every 100 ms): welcomes
// each client that joins (with these heartbeat settings), hands ServeRequests to `service`, and
// refuses anything else with an Error kRefused (no rounds here). Returns the transport's error.
Status ServeEvents(wire::Server* server, InferenceService* service, uint32_t heartbeat_ms,
                   uint32_t peer_timeout_ms, const std::atomic<int>* stop);

struct ServeRunOptions {
  std::string bind;        // overrides federation.endpoint
  std::string keys_dir;    // overrides federation.keys_dir
  std::string checkpoint;  // overrides serve.checkpoint
  // Called once bound with the endpoint clients connect to (the real port for tcp port 0).
  std::function<Status(const std::string& endpoint)> on_bound;
  const std::atomic<int>* stop = nullptr;  // set non-zero to stop; checked every 100 ms
  void* zmq_context = nullptr;
  std::function<void()> before_compute;  // ServiceOptions::before_compute (tests)
};

// Serves until *stop is set. Returns the service's totals.
StatusOr<ServiceStats> RunServe(const Config& config, const ServeRunOptions& options);

}  // namespace tandem::serve

// `tandem serve` and the [serve] section; see serve/server.h.
#include "serve/server.h"

#include <random>
#include <set>

#include "core/config.h"
#include "core/logging.h"
#include "models/gpt_checkpoint.h"
#include "serve/schema.h"
#include "wire/transport_config.h"

namespace tandem::serve {

StatusOr<ServeConfig> ServeConfigFromConfig(const Config& config) {
  ServeConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.enabled, config.GetBool("serve.enabled", false));
  TANDEM_ASSIGN_OR_RETURN(c.checkpoint, config.GetString("serve.checkpoint", ""));
  ServiceOptions& s = c.service;
  TANDEM_ASSIGN_OR_RETURN(s.max_calls_per_client,
                          config.GetInt("serve.max_calls_per_client", 0, 0, INT64_MAX));
  TANDEM_ASSIGN_OR_RETURN(const int64_t inflight,
                          config.GetInt("serve.max_inflight_per_client", 4, 1, 1 << 20));
  TANDEM_ASSIGN_OR_RETURN(const int64_t queue, config.GetInt("serve.max_queue", 256, 1, 1 << 20));
  TANDEM_ASSIGN_OR_RETURN(const int64_t deadline,
                          config.GetInt("serve.deadline_ms", 30000, 1, 3600 * 1000));
  TANDEM_ASSIGN_OR_RETURN(const int64_t tokens,
                          config.GetInt("serve.max_new_tokens", 256, 1, 1 << 20));
  TANDEM_ASSIGN_OR_RETURN(const int64_t gamma, config.GetInt("serve.max_gamma", 64, 1, 1024));
  TANDEM_ASSIGN_OR_RETURN(const int64_t batch, config.GetInt("serve.max_batch", 8, 1, 1024));
  TANDEM_ASSIGN_OR_RETURN(const int64_t threads, config.GetInt("serve.threads", 1, 1, 1024));
  s.max_batch = static_cast<int>(batch);
  s.threads = static_cast<int>(threads);
  s.max_inflight_per_client = static_cast<int>(inflight);
  s.max_queue = static_cast<int>(queue);
  s.default_deadline_ms = static_cast<uint32_t>(deadline);
  s.max_new_tokens = static_cast<int>(tokens);
  s.max_gamma = static_cast<int>(gamma);
  TANDEM_RETURN_IF_ERROR(s.Validate());
  return c;
}

bool RouteToService(const wire::TransportEvent& event, InferenceService* service) {
  if (event.kind != wire::TransportEvent::Kind::kMessage ||
      !std::holds_alternative<wire::ServeRequest>(event.message.body)) {
    return false;
  }
  service->Submit(event.peer, event.message);
  return true;
}

Status ServeEvents(wire::Server* server, InferenceService* service, uint32_t heartbeat_ms,
                   uint32_t peer_timeout_ms, const std::atomic<int>* stop) {
  auto log = GetLogger("serve");
  while (stop == nullptr || stop->load() == 0) {
    TANDEM_ASSIGN_OR_RETURN(std::optional<wire::TransportEvent> event,
                            server->Receive(std::chrono::milliseconds(100)));
    if (!event) continue;
    if (event->kind == wire::TransportEvent::Kind::kPeerJoined) {
      wire::Message welcome;
      welcome.body = wire::Welcome{0, heartbeat_ms, peer_timeout_ms};
      if (Status s = server->Send(event->peer, std::move(welcome)); !s.ok()) {
        log->warn("cannot welcome {}: {}", event->peer, s.message());
      }
      continue;
    }
    if (RouteToService(*event, service)) continue;
    if (event->kind == wire::TransportEvent::Kind::kMessage &&
        !std::holds_alternative<wire::Hello>(event->message.body)) {
      wire::Message error;
      error.envelope.task_id = event->message.envelope.task_id;
      error.body = wire::Error{wire::ErrorCode::kRefused,
                               "this is an inference service (tandem serve): it runs no rounds"};
      (void)server->Send(event->peer, std::move(error));
    }
  }
  return Status::Ok();
}

StatusOr<ServiceStats> RunServe(const Config& config, const ServeRunOptions& options) {
  auto log = GetLogger("serve");
  TANDEM_ASSIGN_OR_RETURN(ServeConfig sc, ServeConfigFromConfig(config));
  if (!options.checkpoint.empty()) sc.checkpoint = options.checkpoint;
  if (sc.checkpoint.empty()) {
    return Status::InvalidArgument("tandem serve needs the cloud model: serve.checkpoint or "
                                   "--checkpoint");
  }
  TANDEM_ASSIGN_OR_RETURN(std::string name, config.GetString("name", "run"));
  TANDEM_ASSIGN_OR_RETURN(std::string out_dir, config.GetString("out_dir", "runs"));
  TANDEM_ASSIGN_OR_RETURN(wire::TransportConfig transport,
                          wire::TransportConfigFromConfig(config, out_dir + "/" + name));
  if (!options.keys_dir.empty()) transport.keys_dir = options.keys_dir;
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model, LoadGpt(sc.checkpoint));
  std::shared_ptr<const GptWeights> weights = model->shared_weights();
  const std::string endpoint = options.bind.empty() ? transport.endpoint : options.bind;
  std::random_device entropy;
  const uint64_t run_id = (static_cast<uint64_t>(entropy()) << 32 | entropy()) | 1;
  TANDEM_ASSIGN_OR_RETURN(wire::TransportOptions server_options,
                          wire::ServerTransportOptions(transport, endpoint, run_id));
  server_options.zmq_context = options.zmq_context;
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<wire::Server> server,
                          wire::Server::Bind(server_options));
  sc.service.before_compute = options.before_compute;
  wire::Server* raw = server.get();
  TANDEM_ASSIGN_OR_RETURN(
      std::unique_ptr<InferenceService> service,
      InferenceService::Create(weights, sc.service, [raw](const std::string& peer,
                                                          wire::Message m) {
        return raw->Send(peer, std::move(m));
      }));
  log->info("serving {} ({}) on {}{}", sc.checkpoint, weights->config().ToString(),
            server->endpoint(), server_options.curve ? " (CURVE, allow-list)" : "");
  if (options.on_bound) TANDEM_RETURN_IF_ERROR(options.on_bound(server->endpoint()));
  TANDEM_RETURN_IF_ERROR(ServeEvents(server.get(), service.get(), transport.heartbeat_ms,
                                     transport.peer_timeout_ms, options.stop));
  const ServiceStats totals = service->stats();
  for (const auto& [peer, s] : service->all_peer_stats()) {
    log->info("'{}': {} calls served ({} completions, {} verifications), {} refused, {} late",
              peer, s.served, s.completions, s.verifications, s.refused, s.late);
  }
  service.reset();  // the worker stops before the transport it answers through
  log->info("served {} requests ({} refused, {} late)", totals.served, totals.refused,
            totals.late);
  return totals;
}

}  // namespace tandem::serve

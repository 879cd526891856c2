// `tandem coordinator`; see coordinator/coordinator.h.
#include "coordinator/coordinator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "coordinator/engine.h"
#include "coordinator/grouped_server.h"
#include "coordinator/private_server.h"
#include "coordinator/run_log.h"
#include "coordinator/server_outbox.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/timer.h"
#include "data/partition.h"
#include "models/gpt.h"
#include "models/gpt_checkpoint.h"
#include "serve/server.h"
#include "serve/service.h"
#include "train/data_setup.h"
#include "train/evaluate.h"
#include "train/run_dir.h"
#include "wire/transport.h"
#include "wire/transport_config.h"

namespace tandem {
namespace {

// How long an upload's offer may wait for the round's broadcast to leave (a client slower than this
// to read the model no longer keeps the others' uploads waiting).
constexpr uint32_t kUploadHoldForBroadcastMs = 10000;

std::string FormatBytes(double bytes) {
  char buf[32];
  if (bytes >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  } else if (bytes >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.1f MB", bytes / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f kB", bytes / 1e3);
  }
  return buf;
}

// A key of a section the algorithm's keys moved out of is an error naming the new key.
Status CheckMovedSections(const Config& config, const ServerPlugin& algorithm) {
  for (const std::string& old : algorithm.moved_sections) {
    for (const std::string& key : config.KeysUnder(old)) {
      const std::string rest = key.substr(old.size() + 1);
      return Status::InvalidArgument(
          config.source() + ": " + key + " is now " + algorithm.name + "." + rest +
          " (each algorithm's keys live in a section of its own name, [" + algorithm.name + "])");
    }
  }
  return Status::Ok();
}

// The clients' architectures (federation.client_models) and where each group starts.
struct ClientArchitectures {
  std::vector<ModelConfig> models;   // client K runs models[K % size]; empty: all run [model]
  std::vector<std::string> names;    // their presets
  std::vector<std::string> inits;    // federation.client_init_checkpoints, one per entry, or empty
};

StatusOr<ClientArchitectures> ReadClientArchitectures(const Config& config) {
  ClientArchitectures a;
  TANDEM_ASSIGN_OR_RETURN(a.models, ClientModelsFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(a.names, config.GetStringList("federation.client_models", {}));
  TANDEM_ASSIGN_OR_RETURN(a.inits, config.GetStringList("federation.client_init_checkpoints", {}));
  if (!a.inits.empty() && a.inits.size() != a.models.size()) {
    return Status::InvalidArgument("federation.client_init_checkpoints must have one entry per "
                                   "federation.client_models entry");
  }
  return a;
}

// One coordinator half per distinct architecture (coordinator/grouped_server.h), each built as a
// run of that architecture alone would build it. A group's model starts from its
// federation.client_init_checkpoints entry, else from model.init_checkpoint when that holds the
// group's architecture, else fresh.
StatusOr<std::unique_ptr<ServerAlgorithm>> MakeGroups(const ServerPlugin& algorithm,
                                                      ServerContext context,
                                                      const ClientArchitectures& clients,
                                                      const DatasetSplits& splits,
                                                      int64_t eval_tokens) {
  auto log = GetLogger("coordinator");
  const ClientGroups placement = GroupClientModels(clients.models);
  std::string init_architecture;
  if (clients.inits.empty() && !context.init_checkpoint.empty()) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> init, LoadGpt(context.init_checkpoint));
    init_architecture = init->config().ToString();
  }
  bool init_used = false;
  const std::string init_checkpoint = context.init_checkpoint;
  std::vector<ServerGroup> groups;
  for (size_t g = 0; g < placement.first_position.size(); ++g) {
    const size_t first = placement.first_position[g];
    context.model = clients.models[first];
    context.group = clients.names[first];
    if (!clients.inits.empty()) {
      context.init_checkpoint = clients.inits[first];
    } else if (!init_architecture.empty() && init_architecture == context.model.ToString()) {
      context.init_checkpoint = init_checkpoint;
      init_used = true;
    } else {
      context.init_checkpoint.clear();
    }
    std::string positions;
    for (size_t p = 0; p < placement.group_of_position.size(); ++p) {
      if (placement.group_of_position[p] == static_cast<int>(g)) {
        positions += (positions.empty() ? "" : ", ") + std::to_string(p);
      }
    }
    log->info("group {} ({}): clients K with K % {} in {{{}}}, starting from {}", context.group,
              context.model.ToString(), clients.models.size(), positions,
              context.init_checkpoint.empty() ? "fresh weights" : context.init_checkpoint);
    StatusOr<std::unique_ptr<ServerAlgorithm>> server = algorithm.create(context);
    if (!server.ok()) return server.status().WithContext("group " + context.group);
    groups.push_back({context.group, std::move(server).value()});
  }
  if (!init_architecture.empty() && !init_used) {
    log->warn("model.init_checkpoint '{}' holds {}, the architecture of no client group: not used",
              init_checkpoint, init_architecture);
  }
  // A model every group trains is saved and evaluated once, by the grouped server.
  std::unique_ptr<GroupShared> shared;
  const auto& trained = context.shared->trained();
  TANDEM_CHECK(trained.size() <= 1);  // one shared trained model at most
  for (const auto& [name, model] : trained) {
    shared = std::make_unique<SharedModelState>(name, model, splits.validation, eval_tokens);
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<GroupedServer> grouped,
                          GroupedServer::Create(std::move(groups), placement.group_of_position,
                                                std::move(shared)));
  return std::unique_ptr<ServerAlgorithm>(std::move(grouped));
}

// Held-out losses of the headline models before round 1: val_loss (their mean) and, with several,
// val_loss.<suffix> each.
StatusOr<std::map<std::string, double>> StartingLosses(const ServerAlgorithm& algorithm,
                                                       const std::vector<Record>& validation,
                                                       int64_t eval_tokens) {
  auto log = GetLogger("coordinator");
  std::map<std::string, double> metrics;
  double sum = 0.0;
  int finite = 0;
  for (const RunModel& m : algorithm.Models()) {
    if (!m.headline) continue;
    TANDEM_ASSIGN_OR_RETURN(double loss, HeldOutLoss(*m.model, validation,
                                                     m.eval_batch, eval_tokens));
    if (!std::isfinite(loss)) continue;
    if (!m.suffix.empty()) {
      log->info("group {}: held-out loss {:.4f} before round 1", m.suffix, loss);
      metrics["val_loss." + m.suffix] = loss;
    }
    sum += loss;
    ++finite;
  }
  if (finite > 0) {
    metrics["val_loss"] = sum / finite;
    metrics["val_ppl"] = std::exp(sum / finite);
  }
  return metrics;
}

// The cross-lingual setup's held-out loss per language (data/xling.h): for each headline model,
// <prefix>_<language>[.<suffix>] on that language's records of `records`; nothing otherwise.
Status AddLanguageLosses(const ServerAlgorithm& algorithm, const DataConfig& data,
                         const std::vector<Record>& records, int64_t eval_tokens,
                         const std::string& prefix, std::map<std::string, double>* metrics) {
  if (!data.cross_lingual() || records.empty()) return Status::Ok();
  const std::map<std::string, std::vector<Record>> by_language = RecordsByLanguage(records);
  for (const RunModel& m : algorithm.Models()) {
    if (!m.headline) continue;
    for (const auto& [language, held_out] : by_language) {
      TANDEM_ASSIGN_OR_RETURN(double loss,
                              HeldOutLoss(*m.model, held_out, m.eval_batch, eval_tokens));
      (*metrics)[prefix + "_" + language + (m.suffix.empty() ? "" : "." + m.suffix)] = loss;
    }
  }
  return Status::Ok();
}

// The round's line for a person, from its metrics.
std::string RoundLine(uint64_t round, int64_t rounds, const std::map<std::string, double>& m) {
  auto get = [&](const char* k) { return m.count(k) ? m.at(k) : std::nan(""); };
  if (m.count("aborted")) {
    return fmt::format("round {}/{}: aborted ({:g} of {:g} results), model kept", round, rounds,
                       get("results"), get("cohort"));
  }
  std::string line = fmt::format("round {}/{}: held-out loss {:.4f}", round, rounds,
                                 get("val_loss"));
  if (m.count("train_loss")) line += fmt::format(" (local train {:.4f})", get("train_loss"));
  line += fmt::format(", {:g}/{:g} results, {} up, {} down, {:.1f} s", get("results"),
                      get("cohort"), FormatBytes(get("bytes_up")), FormatBytes(get("bytes_down")),
                      get("round_s"));
  if (m.count("epsilon")) line += fmt::format(", epsilon {:.3f}", get("epsilon"));
  return line;
}

}  // namespace

StatusOr<std::string> RunDirectory(const Config& config) {
  TANDEM_ASSIGN_OR_RETURN(std::string name, config.GetString("name", "run"));
  TANDEM_ASSIGN_OR_RETURN(std::string out_dir, config.GetString("out_dir", "runs"));
  return out_dir + "/" + name;
}

namespace {

// Everything a run is configured with, read and checked before anything starts.
struct RunPlan {
  serve::ServeConfig serve;  // the [serve] section: the inference service beside the rounds
  std::string run_dir, name;
  int64_t seed = 1;
  ModelConfig model;
  std::string init_checkpoint;
  DataConfig data;
  EngineConfig engine;
  int64_t eval_tokens = 32768;
  ClientArchitectures clients;
  bool grouped = false;  // one half per architecture
  wire::TransportConfig transport;
  privacy::FederationShape shape;
  privacy::PrivacyConfig privacy;
};

StatusOr<RunPlan> ReadPlan(const Config& config, const ServerPlugin& algorithm,
                           const CoordinatorOptions& options) {
  RunPlan p;
  TANDEM_ASSIGN_OR_RETURN(p.serve, serve::ServeConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(p.run_dir, RunDirectory(config));
  TANDEM_ASSIGN_OR_RETURN(p.name, config.GetString("name", "run"));
  TANDEM_ASSIGN_OR_RETURN(p.seed, config.GetInt("seed", 1, 0));
  TANDEM_ASSIGN_OR_RETURN(std::string algorithm_name, config.GetString("algorithm.name", "fedavg"));
  if (algorithm_name != algorithm.name) {
    return Status::InvalidArgument("algorithm.name is '" + algorithm_name + "', but the " +
                                   algorithm.name + " coordinator was started");
  }
  TANDEM_RETURN_IF_ERROR(CheckMovedSections(config, algorithm));
  TANDEM_ASSIGN_OR_RETURN(AlgorithmTraits traits, algorithm.traits(config));
  TANDEM_ASSIGN_OR_RETURN(p.model, ModelConfigFromConfig(config, "model"));
  TANDEM_ASSIGN_OR_RETURN(p.init_checkpoint, config.GetString("model.init_checkpoint", ""));
  TANDEM_ASSIGN_OR_RETURN(p.data, DataConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(p.engine, EngineConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(p.eval_tokens, config.GetInt("eval.tokens", p.eval_tokens, 0));
  TANDEM_ASSIGN_OR_RETURN(p.clients, ReadClientArchitectures(config));
  // Algorithms that average weights run clients of several architectures as groups, one half
  // per architecture; the others take every architecture in one half.
  p.grouped = traits.averages_weights && !p.clients.models.empty();
  TANDEM_ASSIGN_OR_RETURN(p.transport, wire::TransportConfigFromConfig(config, p.run_dir));
  if (!options.keys_dir.empty()) p.transport.keys_dir = options.keys_dir;
  p.shape = {p.engine.expected_clients, CohortSize(p.engine), MinResults(p.engine),
             p.engine.rounds};
  TANDEM_ASSIGN_OR_RETURN(p.privacy, privacy::PrivacyConfigFromConfig(config, p.shape));
  if (p.privacy.any() && p.grouped) {
    return Status::InvalidArgument(
        "federation.client_models (clients of different architectures) cannot be combined with "
        "[privacy] under " + algorithm.name + ": each architecture's group averages its own model, "
        "but the privacy pipeline sums one contribution vector over the whole cohort");
  }
  p.engine.poisson_sampling = p.privacy.dp.enabled && p.privacy.dp.sampling == "poisson";
  // Read by the clients, from the same file; validated here with the clients' own reader and
  // range, so a bad value stops the run at start rather than in every client's log.
  TANDEM_RETURN_IF_ERROR(PartitionSpecFromConfig(config).status());
  TANDEM_RETURN_IF_ERROR(CheckCrossLingualClients(p.data, p.engine.expected_clients)
                             .WithContext(config.source()));
  TANDEM_RETURN_IF_ERROR(config.GetDouble("client.give_up_s", 600.0, 1.0, 1e7).status());
  for (const std::string& key : algorithm.client_keys) config.MarkUsed(key);
  return p;
}

// The algorithm's coordinator half (or one per group), built over the run's data.
StatusOr<std::unique_ptr<ServerAlgorithm>> BuildAlgorithm(const Config& config,
                                                          const ServerPlugin& algorithm,
                                                          const RunPlan& plan,
                                                          const DatasetSplits& splits,
                                                          SharedObjects* shared) {
  ServerContext context;
  context.config = &config;
  context.seed = static_cast<uint64_t>(plan.seed);
  context.splits = &splits;
  context.model = plan.model;
  context.init_checkpoint = plan.init_checkpoint;
  context.client_models = plan.clients.models;
  context.privacy = plan.privacy.any();
  context.shared = shared;
  if (plan.grouped) return MakeGroups(algorithm, context, plan.clients, splits, plan.eval_tokens);
  return algorithm.create(context);
}

// Wraps `inner` in the privacy pipeline when the plan asks for it (else returns it as is).
StatusOr<std::unique_ptr<ServerAlgorithm>> WithPrivacy(std::unique_ptr<ServerAlgorithm> inner,
                                                       const RunPlan& plan, uint64_t run_id,
                                                       PrivateServer** wrapper) {
  const privacy::PrivacyConfig& privacy = plan.privacy;
  *wrapper = nullptr;
  if (!privacy.any()) return inner;
  if (std::optional<std::string> why = inner->PrivacyConflict()) {
    return Status::InvalidArgument(*why + "; it cannot be combined with [privacy]");
  }
  auto log = GetLogger("coordinator");
  PrivateServerOptions options{privacy, plan.shape, run_id, static_cast<uint64_t>(plan.seed), {}};
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<PrivateServer> wrapped,
                          PrivateServer::Create(std::move(inner), options));
  if (privacy.dp.enabled) {
    log->info("differential privacy: noise multiplier {:.4g} ({} noise), clip norm {:.4g}{}, "
              "q = {:.4g}, delta = {:.3g}{}", wrapped->noise_multiplier(), privacy.dp.noise,
              privacy.dp.clip_norm, privacy.dp.adaptive_clipping ? " (adaptive)" : "",
              wrapped->sampling_rate(), privacy.dp.delta,
              privacy.dp.epsilon_budget > 0
                  ? fmt::format(", budget epsilon {:.4g}", privacy.dp.epsilon_budget)
                  : std::string());
  }
  if (privacy.secagg.enabled) {
    log->info("secure aggregation: threshold {}, {}, ring 2^{} at 2^-{}", privacy.secagg.threshold,
              privacy.secagg.neighbours > 0
                  ? fmt::format("SecAgg+ with {} neighbours", privacy.secagg.neighbours)
                  : std::string("every pair masks"),
              privacy.secagg.modulus_bits, privacy.secagg.fraction_bits);
  }
  *wrapper = wrapped.get();
  return std::unique_ptr<ServerAlgorithm>(std::move(wrapped));
}

// Feeds the transport's events to the engine until it is done, then says goodbye to every
// client still connected. ServeRequests go to `service` (null: refused), and a client that joins
// only to ask the service (serve::kServeCapability) is welcomed but never told to the engine.
Status ServeRounds(wire::Server* server, RoundEngine* engine,
                   const wire::TransportConfig& transport, const CoordinatorOptions& options,
                   serve::InferenceService* service) {
  auto log = GetLogger("coordinator");
  std::set<std::string> live, askers;
  while (!engine->done()) {
    if (options.stop != nullptr && options.stop->load() != 0) {
      // Rounds end with their checkpoint; the round in progress is dropped and redone on resume.
      const int signal = options.stop->load();
      log->warn("round {}: stopped (signal {}); the checkpoint before round {} is kept",
                engine->current_round(), signal, engine->state().next_round);
      engine->Stop(Status::Unavailable("the run was stopped (signal " + std::to_string(signal) +
                                       ") before round " +
                                       std::to_string(engine->state().next_round) +
                                       " completed; its last checkpoint is kept"));
      break;
    }
    if (options.exited_clients) {
      for (const std::string& name : options.exited_clients()) {
        live.erase(name);
        engine->OnClientExited(name);
      }
    }
    const auto wait = std::chrono::milliseconds(
        std::max<int64_t>(1, static_cast<int64_t>(engine->NextWakeSeconds() * 1000)));
    TANDEM_ASSIGN_OR_RETURN(std::optional<wire::TransportEvent> event, server->Receive(wait));
    if (event) {
      switch (event->kind) {
        case wire::TransportEvent::Kind::kPeerJoined: {
          std::vector<std::string> capabilities;
          if (const auto* hello = std::get_if<wire::Hello>(&event->message.body)) {
            capabilities = hello->capabilities;
          }
          const bool asker = capabilities == std::vector<std::string>{serve::kServeCapability};
          wire::Message welcome;
          welcome.envelope.round = engine->current_round();
          const int index = ClientIndexFromName(event->peer);
          welcome.body = wire::Welcome{static_cast<uint32_t>(index < 0 ? 0xFFFFFFFFu : index),
                                       transport.heartbeat_ms, transport.peer_timeout_ms};
          if (Status s = server->Send(event->peer, std::move(welcome)); !s.ok()) {
            log->warn("cannot welcome {}: {}", event->peer, s.message());
            break;
          }
          live.insert(event->peer);
          if (asker) {
            askers.insert(event->peer);
          } else {
            askers.erase(event->peer);
            engine->OnJoined(event->peer, capabilities);
          }
          break;
        }
        case wire::TransportEvent::Kind::kPeerLost:
          live.erase(event->peer);
          if (askers.erase(event->peer) == 0) engine->OnLost(event->peer);
          break;
        case wire::TransportEvent::Kind::kMessage:
          if (std::holds_alternative<wire::ServeRequest>(event->message.body)) {
            if (service != nullptr) {
              serve::RouteToService(*event, service);
            } else {
              wire::Message refusal;
              refusal.envelope.task_id = event->message.envelope.task_id;
              refusal.body = wire::Error{wire::ErrorCode::kRefused,
                                         "this coordinator runs no inference service "
                                         "(serve.enabled = false)"};
              (void)server->Send(event->peer, std::move(refusal));
            }
            break;
          }
          if (askers.count(event->peer)) break;  // nothing but requests is expected of it
          engine->OnMessage(event->peer, event->message);
          break;
        default:
          DeliverUploadEvent(*event, engine, server);
          break;
      }
    }
    engine->Tick();
  }
  const bool stopped = options.stop != nullptr && options.stop->load() != 0;
  const std::string reason = engine->status().ok() ? "the run is complete"
                             : stopped             ? "the run was stopped"
                                                   : "the run failed";
  for (const auto& peer : live) {
    wire::Message bye;
    bye.envelope.round = engine->current_round();
    bye.body = wire::Bye{reason};
    (void)server->Send(peer, std::move(bye));
  }
  // Give the I/O thread a moment to deliver the Byes before the socket closes.
  for (Stopwatch drain; drain.Seconds() < 0.5;) {
    auto event = server->Receive(std::chrono::milliseconds(50));
    if (!event.ok()) break;
  }
  return engine->status();
}

// The model the inference service serves: the largest of the algorithm's (the LLM where there
// is one), or null when it has none.
const Gpt* LargestModel(const ServerAlgorithm& algorithm) {
  const Gpt* best = nullptr;
  for (const RunModel& m : algorithm.Models()) {
    if (m.model != nullptr &&
        (best == nullptr || m.model->weights().params().size() > best->weights().params().size())) {
      best = m.model;
    }
  }
  return best;
}

// The headline models on the test split: their mean and, with several, each by its suffix.
StatusOr<double> FinalTestLoss(const ServerAlgorithm& algorithm, const std::vector<Record>& test,
                               int64_t eval_tokens, std::map<std::string, double>* suffixed) {
  double sum = 0.0;
  int count = 0;
  for (const RunModel& m : algorithm.Models()) {
    if (!m.headline || test.empty()) continue;
    TANDEM_ASSIGN_OR_RETURN(LossResult loss, EvaluateLoss(*m.model, test, 16, eval_tokens));
    if (!m.suffix.empty()) (*suffixed)["final_test_loss." + m.suffix] = loss.loss;
    sum += loss.loss;
    ++count;
  }
  return count > 0 ? sum / count : 0.0;
}

}  // namespace

StatusOr<CoordinatorResult> RunCoordinator(const Config& config, const ServerPlugin& algorithm,
                                           const CoordinatorOptions& options) {
  auto log = GetLogger("coordinator");
  auto say = [&](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  // ---- Every key is read and checked, and the algorithm built, before anything is written. ----
  TANDEM_ASSIGN_OR_RETURN(RunPlan plan, ReadPlan(config, algorithm, options));
  CorpusFingerprint corpus;
  TANDEM_ASSIGN_OR_RETURN(DatasetSplits splits, LoadSplits(plan.data, &corpus));
  SharedObjects shared;
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<ServerAlgorithm> active,
                          BuildAlgorithm(config, algorithm, plan, splits, &shared));
  TANDEM_RETURN_IF_ERROR(config.CheckAllKeysUsed());
  std::random_device entropy;
  const uint64_t run_id = (static_cast<uint64_t>(entropy()) << 32 | entropy()) | 1;
  PrivateServer* private_server = nullptr;
  TANDEM_ASSIGN_OR_RETURN(active, WithPrivacy(std::move(active), plan, run_id, &private_server));
  std::string models_text = plan.model.ToString();
  if (plan.grouped) {
    models_text.clear();
    for (size_t p : GroupClientModels(plan.clients.models).first_position) {
      models_text += (models_text.empty() ? "" : ", ") + plan.clients.names[p];
    }
  }
  log->info("run '{}': {} on {}, {} clients expected, {} rounds", plan.name, algorithm.name,
            models_text, plan.engine.expected_clients, plan.engine.rounds);

  // ---- The run log: a fresh start (round 0, the starting point), or the last checkpoint. ----
  TANDEM_ASSIGN_OR_RETURN(RunDirClaim claim,
                          ClaimRunDirectory(plan.run_dir, {options.resume, options.overwrite}));
  TANDEM_ASSIGN_OR_RETURN(RunLog run_log, RunLog::Open(plan.run_dir, options.resume, active.get()));
  if (run_log.resumed() && run_log.totals().engine.next_round > plan.engine.rounds) {
    return Status::FailedPrecondition(
        "run " + plan.name + " is complete (" + std::to_string(plan.engine.rounds) + " of " +
        std::to_string(plan.engine.rounds) + " rounds); nothing to do");
  }
  if (run_log.resumed()) {
    log->info("resumed from {} before round {}", run_log.checkpoint_dir(),
              run_log.totals().engine.next_round);
  } else {
    if (options.resume) log->warn("--resume: no checkpoint in {}; starting afresh", plan.run_dir);
    TANDEM_ASSIGN_OR_RETURN(auto start,
                            StartingLosses(*active, splits.validation, plan.eval_tokens));
    TANDEM_RETURN_IF_ERROR(AddLanguageLosses(*active, plan.data, splits.validation,
                                             plan.eval_tokens, "val_loss", &start));
    TANDEM_RETURN_IF_ERROR(run_log.WriteStart(start));
    say(fmt::format("round 0: held-out loss {:.4f}",
                    start.count("val_loss") ? start.at("val_loss") : std::nan("")));
  }

  // ---- Transport, then the rounds: each round's end goes to the run log. ----
  const std::string endpoint = options.bind.empty() ? plan.transport.endpoint : options.bind;
  TANDEM_ASSIGN_OR_RETURN(wire::TransportOptions server_options,
                          wire::ServerTransportOptions(plan.transport, endpoint, run_id));
  server_options.zmq_context = options.zmq_context;
  // The engine decides on each declared contribution (ServeRounds hands it the offers): results
  // the algorithm can fold in as they arrive are never held whole.
  server_options.stream_contributions = true;
  // Offers wait until the round's model has been sent to every client (bounded), so the running
  // sum does not sit beside the model's broadcast frames (docs/benchmarks.md, coordinator memory).
  server_options.upload_hold_for_broadcast_ms =
      std::min<uint32_t>(kUploadHoldForBroadcastMs, server_options.peer_timeout_ms);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<wire::Server> server,
                          wire::Server::Bind(server_options));
  log->info("listening on {}{}", server->endpoint(),
            server_options.curve ? " (CURVE, allow-list)" : "");
  // The run has really started: its config and its record of what it ran.
  TANDEM_RETURN_IF_ERROR(WriteTextFile(plan.run_dir + "/config.toml", config.ToToml()));
  TANDEM_RETURN_IF_ERROR(WriteRunRecord(plan.run_dir, config, corpus, run_log.resumed()));
  // The inference service answers from its own copy of the cloud model (the algorithm's largest),
  // replaced after each round, so the round that trains the model never waits for a request.
  std::unique_ptr<serve::InferenceService> service;
  const Gpt* cloud = plan.serve.enabled ? LargestModel(*active) : nullptr;
  if (cloud != nullptr) {
    serve::ServiceOptions service_options = plan.serve.service;
    service_options.before_compute = options.serve_before_compute;
    wire::Server* raw = server.get();
    TANDEM_ASSIGN_OR_RETURN(
        service, serve::InferenceService::Create(
                     std::make_shared<const GptWeights>(cloud->weights()), service_options,
                     [raw](const std::string& peer, wire::Message m) {
                       return raw->Send(peer, std::move(m));
                     }));
    log->info("inference service: {} ({} parameters)", cloud->config().ToString(),
              cloud->weights().params().size());
  }
  if (options.on_bound) TANDEM_RETURN_IF_ERROR(options.on_bound(server->endpoint()));
  ServerOutbox outbox(server.get());
  Stopwatch engine_clock;
  RoundEngine engine(plan.engine, active.get(), &outbox, [&] { return engine_clock.Seconds(); },
                     static_cast<uint64_t>(plan.seed));
  if (run_log.resumed()) engine.RestoreState(run_log.totals().engine);
  CoordinatorResult result;
  result.run_dir = plan.run_dir;
  result.initial_val_loss = run_log.totals().initial_val_loss;
  result.final_val_loss = result.initial_val_loss;
  engine.SetRoundEndCallback([&](uint64_t round, const std::map<std::string, double>& round_m) {
    std::map<std::string, double> m = round_m;
    if (!m.count("aborted")) {
      TANDEM_RETURN_IF_ERROR(AddLanguageLosses(*active, plan.data, splits.validation,
                                               plan.eval_tokens, "val_loss", &m));
    }
    if (service) {
      const serve::ServiceStats s = service->stats();
      m["serve.served"] = static_cast<double>(s.served);
      m["serve.refused"] = static_cast<double>(s.refused);
      m["serve.late"] = static_cast<double>(s.late);
      if (s.served > 0) m["serve.queue_ms_mean"] = 1000.0 * s.queue_seconds / s.served;
      // Per asking identity: what each device cost the service so far.
      for (const auto& [peer, ps] : service->all_peer_stats()) {
        m["serve.served." + peer] = static_cast<double>(ps.served);
      }
      service->SetWeights(std::make_shared<const GptWeights>(cloud->weights()));
    }
    TANDEM_RETURN_IF_ERROR(run_log.WriteRound(round, m, engine.state()).status());
    if (m.count("val_loss")) result.final_val_loss = m.at("val_loss");
    say(RoundLine(round, plan.engine.rounds, m));
    return Status::Ok();
  });
  TANDEM_RETURN_IF_ERROR(ServeRounds(server.get(), &engine, plan.transport, options,
                                     service.get()));
  service.reset();  // its worker stops before the transport it answers through

  // ---- The final numbers. ----
  const RunTotals& totals = run_log.totals();
  result.rounds = engine.state().next_round - 1;
  result.stop_reason = engine.stop_reason();
  if (private_server != nullptr && plan.privacy.dp.enabled) {
    result.epsilon = private_server->epsilon();
  }
  result.aborted_rounds = totals.aborted;
  result.bytes_up = totals.bytes_up;
  result.bytes_down = totals.bytes_down;
  std::map<std::string, double> suffixed_test_losses;
  TANDEM_ASSIGN_OR_RETURN(result.final_test_loss,
                          FinalTestLoss(*active, splits.test, plan.eval_tokens,
                                        &suffixed_test_losses));
  result.seconds = run_log.Elapsed();
  TANDEM_ASSIGN_OR_RETURN(std::string strategy, config.GetString("strategy.name", "fedavg"));
  nlohmann::json summary = {{"name", plan.name},
                            {"algorithm", algorithm.name},
                            {"strategy", strategy},
                            {"model", models_text},
                            {"clients", plan.engine.expected_clients},
                            {"rounds", result.rounds},
                            {"aborted_rounds", result.aborted_rounds},
                            {"initial_val_loss", result.initial_val_loss},
                            {"final_val_loss", result.final_val_loss},
                            {"final_test_loss", result.final_test_loss},
                            {"bytes_up", result.bytes_up},
                            {"bytes_down", result.bytes_down},
                            {"seconds", result.seconds},
                            {"complete", result.rounds >= plan.engine.rounds ||
                                             !result.stop_reason.empty()}};
  TANDEM_RETURN_IF_ERROR(AddLanguageLosses(*active, plan.data, splits.test, plan.eval_tokens,
                                           "final_test_loss", &suffixed_test_losses));
  for (const auto& [k, v] : suffixed_test_losses) summary[k] = v;
  if (!result.stop_reason.empty()) summary["stopped"] = result.stop_reason;
  if (plan.privacy.dp.enabled) {
    summary["epsilon"] = result.epsilon;
    summary["delta"] = plan.privacy.dp.delta;
    summary["noise_multiplier"] = private_server->noise_multiplier();
  }
  if (plan.privacy.secagg.enabled) summary["secure_aggregation"] = true;
  TANDEM_RETURN_IF_ERROR(run_log.WriteSummary(summary));
  return result;
}

}  // namespace tandem

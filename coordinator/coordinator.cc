// `tandem coordinator`; see coordinator/coordinator.h.
#include "coordinator/coordinator.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <functional>
#include <optional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "coordinator/engine.h"
#include "coordinator/fedavg_server.h"
#include "coordinator/server_outbox.h"
#include "coordinator/distill_down_server.h"
#include "coordinator/distill_up_server.h"
#include "coordinator/fedcollm_server.h"
#include "coordinator/grouped_server.h"
#include "coordinator/private_server.h"
#include "coordinator/strategy.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/timer.h"
#include "models/gpt.h"
#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"
#include "train/data_setup.h"
#include "train/evaluate.h"
#include "wire/transport.h"
#include "wire/transport_config.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

constexpr char kStateFormat[] = "tandem-coordinator-state";

Status WriteText(const std::string& path, const std::string& text) {
  return WriteFileAtomic(path, std::vector<uint8_t>(text.begin(), text.end()));
}

Status AppendLine(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << '\n';
  out.flush();
  if (!out) return Status::IoError("cannot append to '" + path + "'");
  return Status::Ok();
}

// Keeps the lines of rounds before `next_round`: a line written after the last checkpoint
// belongs to a round that the resumed run will do again.
Status TrimMetrics(const std::string& path, uint64_t next_round) {
  std::ifstream in(path);
  if (!in) return Status::Ok();
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("round") || !j["round"].is_number_unsigned()) continue;
    if (j["round"].get<uint64_t>() < next_round) kept += line + "\n";
  }
  return WriteText(path, kept);
}

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

struct Checkpointed {
  EngineState engine;
  double elapsed = 0.0;
  double initial_val_loss = std::nan("");
  uint64_t bytes_up = 0, bytes_down = 0;
  uint64_t aborted = 0;
};

Status SaveCheckpoint(const std::string& dir, const ServerAlgorithm& algorithm,
                      const Checkpointed& c) {
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> meta;
  algorithm.SaveState(&tensors, &meta);
  for (const char* key : {"format", "next_round", "next_task_id", "rng", "elapsed",
                          "initial_val_loss", "bytes_up", "bytes_down", "aborted"}) {
    if (meta.count(key)) return Status::Internal(std::string("algorithm metadata uses ") + key);
  }
  meta["format"] = kStateFormat;
  meta["next_round"] = std::to_string(c.engine.next_round);
  meta["next_task_id"] = std::to_string(c.engine.next_task_id);
  meta["rng"] = c.engine.rng_state;
  std::ostringstream elapsed, initial;
  elapsed.precision(17);
  initial.precision(17);
  elapsed << c.elapsed;
  initial << c.initial_val_loss;
  meta["elapsed"] = elapsed.str();
  meta["initial_val_loss"] = initial.str();
  meta["bytes_up"] = std::to_string(c.bytes_up);
  meta["bytes_down"] = std::to_string(c.bytes_down);
  meta["aborted"] = std::to_string(c.aborted);
  std::vector<TensorToWrite> out;
  for (const auto& [name, values] : tensors) {
    out.push_back({name, DType::kF32, {static_cast<int64_t>(values.size())}, values.data()});
  }
  return WriteSafetensors(dir + "/coordinator.safetensors", out, meta);
}

Status LoadCheckpoint(const std::string& path, ServerAlgorithm* algorithm, Checkpointed* c) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  auto meta = [&](const std::string& k) { return RequireMetadata(file, k, path); };
  TANDEM_ASSIGN_OR_RETURN(std::string format, meta("format"));
  if (format != kStateFormat) {
    return Status::Corruption(path + ": not a coordinator checkpoint (format " + format + ")");
  }
  std::map<std::string, std::vector<float>> tensors;
  for (const auto& [name, t] : file.tensors) {
    if (t.dtype != DType::kF32) return Status::Corruption(path + ": tensor " + name + " not F32");
    std::vector<float> v(t.elements());
    std::memcpy(v.data(), t.bytes.data(), v.size() * sizeof(float));
    tensors[name] = std::move(v);
  }
  try {
    TANDEM_ASSIGN_OR_RETURN(std::string s, meta("next_round"));
    c->engine.next_round = std::stoull(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("next_task_id"));
    c->engine.next_task_id = std::stoull(s);
    TANDEM_ASSIGN_OR_RETURN(c->engine.rng_state, meta("rng"));
    TANDEM_ASSIGN_OR_RETURN(s, meta("elapsed"));
    c->elapsed = std::stod(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("initial_val_loss"));
    c->initial_val_loss = s == "nan" ? std::nan("") : std::stod(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("bytes_up"));
    c->bytes_up = std::stoull(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("bytes_down"));
    c->bytes_down = std::stoull(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("aborted"));
    c->aborted = std::stoull(s);
  } catch (const std::exception&) {
    return Status::Corruption(path + ": a number in the metadata does not parse");
  }
  return algorithm->LoadState(tensors, file.metadata);
}

// The cloud LLM a distillation algorithm names under `key`, with a hint when it is missing.
StatusOr<std::unique_ptr<Gpt>> LoadCloudModel(const std::string& key, const std::string& path) {
  StatusOr<std::unique_ptr<Gpt>> model = LoadGpt(path);
  if (!model.ok()) {
    return Status::InvalidArgument(key + ": " + model.status().message() +
                                   " (train one with `tandem train configs/llm-public.toml`)");
  }
  return model;
}

// A grouped run (coordinator/grouped_server.h): clients of several architectures under an
// algorithm that averages weights, one group per architecture.
struct GroupedRun {
  struct Group {
    std::string name;
    Gpt* model;  // the group's global SLM, owned by `server`
    std::function<StatusOr<double>()> validation_loss;
  };
  std::unique_ptr<GroupedServer> server;
  std::vector<Group> groups;
};

// One server per distinct architecture of `client_models` (named by `names`, the presets), each
// built as a run of that architecture alone would build it. A group's SLM starts from its
// federation.client_init_checkpoints entry (`inits`, when given), else from
// model.init_checkpoint when that holds the group's architecture, else fresh from `seed`.
// distill-down's teacher and fedcollm's LLM are loaded once and shared by every group.
StatusOr<GroupedRun> MakeGroupedRun(const std::vector<ModelConfig>& client_models,
                                    const std::vector<std::string>& names,
                                    const std::vector<std::string>& inits,
                                    const std::string& init_checkpoint,
                                    const FedAvgServerConfig& fedavg,
                                    const std::optional<DistillDownConfig>& distill,
                                    const std::optional<FedCoLLMConfig>& collm,
                                    const std::string& llm_path, const DatasetSplits& splits,
                                    uint64_t seed) {
  auto log = GetLogger("coordinator");
  const ClientGroups placement = GroupClientModels(client_models);
  std::unique_ptr<Gpt> init_model;
  if (inits.empty() && !init_checkpoint.empty()) {
    TANDEM_ASSIGN_OR_RETURN(init_model, LoadGpt(init_checkpoint));
  }
  std::shared_ptr<SharedTeacher> teacher;
  if (distill) {
    // Every group gets the same targets, so the windows are as long as the shortest context.
    int context = client_models[0].context;
    for (const ModelConfig& m : client_models) context = std::min(context, m.context);
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model,
                            LoadCloudModel("distill.teacher", distill->teacher));
    log->info("distill-down: teacher {} ({}), top-{} targets at T = {:g} on {} public windows of "
              "{} tokens a round, the same for every group", distill->teacher,
              model->config().ToString(), distill->top_k, distill->temperature, distill->windows,
              context);
    teacher = std::make_shared<SharedTeacher>(std::move(model), context);
  }
  std::shared_ptr<Gpt> llm;
  if (collm) {
    TANDEM_ASSIGN_OR_RETURN(llm, LoadCloudModel("distill.llm", llm_path));
    log->info("fedcollm: rank-{} adapters on each group's SLM, every group distilled both ways "
              "with the one LLM ({}) on {} public windows a round", collm->lora.rank,
              llm->config().ToString(), collm->windows);
  }
  GroupedRun run;
  std::vector<ServerGroup> groups;
  for (size_t g = 0; g < placement.first_position.size(); ++g) {
    const size_t first = placement.first_position[g];
    const ModelConfig& architecture = client_models[first];
    std::unique_ptr<Gpt> model;
    std::string from;
    if (!inits.empty()) {
      TANDEM_ASSIGN_OR_RETURN(model, LoadGpt(inits[first]));
      if (!(model->config() == architecture)) {
        return Status::InvalidArgument(
            "federation.client_init_checkpoints entry " + std::to_string(first) + " '" +
            inits[first] + "' holds " + model->config().ToString() + ", but " + names[first] +
            " is " + architecture.ToString());
      }
      from = inits[first];
    } else if (init_model != nullptr && init_model->config() == architecture) {
      model = std::move(init_model);
      from = init_checkpoint;
    } else {
      model = std::make_unique<Gpt>(architecture);
      model->InitWeights(seed);
      from = "fresh weights";
    }
    std::string positions;
    for (size_t p = 0; p < placement.group_of_position.size(); ++p) {
      if (placement.group_of_position[p] == static_cast<int>(g)) {
        positions += (positions.empty() ? "" : ", ") + std::to_string(p);
      }
    }
    log->info("group {} ({}): clients K with K % {} in {{{}}}, starting from {}", names[first],
              architecture.ToString(), client_models.size(), positions, from);
    GroupedRun::Group group{names[first], nullptr, nullptr};
    std::unique_ptr<ServerAlgorithm> server;
    const std::string context = "group " + names[first];
    if (collm) {
      StatusOr<std::unique_ptr<FedCoLLMServer>> made =
          FedCoLLMServer::Create(*collm, fedavg.local, fedavg.strategy, std::move(model), llm,
                                 splits.public_, splits.validation, fedavg.eval_tokens, seed);
      if (!made.ok()) return made.status().WithContext(context);
      std::unique_ptr<FedCoLLMServer> s = std::move(made).value();
      s->set_llm_shared(true);  // saved and evaluated once, by the grouped server
      group.model = &s->slm();
      FedCoLLMServer* raw = s.get();
      group.validation_loss = [raw] { return raw->SlmValidationLoss(); };
      server = std::move(s);
    } else {
      TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(fedavg.strategy));
      auto s = std::make_unique<FedAvgServer>(fedavg, std::move(model), std::move(strategy),
                                              splits.validation);
      group.model = &s->model();
      FedAvgServer* raw = s.get();
      group.validation_loss = [raw] { return raw->ValidationLoss(); };
      if (distill) {
        StatusOr<std::unique_ptr<DistillDownServer>> made =
            DistillDownServer::Create(*distill, std::move(s), teacher, splits.public_, seed);
        if (!made.ok()) return made.status().WithContext(context);
        server = std::move(made).value();
      } else {
        server = std::move(s);
      }
    }
    groups.push_back({names[first], std::move(server)});
    run.groups.push_back(std::move(group));
  }
  if (init_model != nullptr) {
    log->warn("model.init_checkpoint '{}' holds {}, the architecture of no client group: not used",
              init_checkpoint, init_model->config().ToString());
  }
  std::unique_ptr<GroupShared> shared;
  if (llm) {
    shared = std::make_unique<SharedModelState>("llm", llm, splits.validation, fedavg.eval_tokens);
  }
  TANDEM_ASSIGN_OR_RETURN(run.server, GroupedServer::Create(std::move(groups),
                                                            placement.group_of_position,
                                                            std::move(shared)));
  return run;
}

}  // namespace

StatusOr<std::string> RunDirectory(const Config& config) {
  TANDEM_ASSIGN_OR_RETURN(std::string name, config.GetString("name", "run"));
  TANDEM_ASSIGN_OR_RETURN(std::string out_dir, config.GetString("out_dir", "runs"));
  return out_dir + "/" + name;
}

StatusOr<CoordinatorResult> RunCoordinator(const Config& config,
                                           const CoordinatorOptions& options) {
  auto log = GetLogger("coordinator");
  Stopwatch clock;
  // ---- Configuration: every key is read (or handed on) before anything starts. ----
  TANDEM_ASSIGN_OR_RETURN(std::string run_dir, RunDirectory(config));
  TANDEM_ASSIGN_OR_RETURN(std::string name, config.GetString("name", "run"));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, config.GetInt("seed", 1, 0));
  TANDEM_ASSIGN_OR_RETURN(std::string algorithm_name,
                          config.GetChoice("algorithm.name", "fedavg",
                                           {"fedavg", "distill-down", "distill-up", "fedmkt", "fedcollm"}));
  TANDEM_ASSIGN_OR_RETURN(ModelConfig model_config, ModelConfigFromConfig(config, "model"));
  TANDEM_ASSIGN_OR_RETURN(std::string init_checkpoint,
                          config.GetString("model.init_checkpoint", ""));
  TANDEM_ASSIGN_OR_RETURN(DataConfig data, DataConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(EngineConfig engine_config, EngineConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(FedAvgServerConfig fedavg, FedAvgServerConfigFromConfig(config));
  std::optional<DistillDownConfig> distill;
  if (algorithm_name == "distill-down") {
    TANDEM_ASSIGN_OR_RETURN(DistillDownConfig c, DistillDownConfigFromConfig(config));
    distill = std::move(c);
  }
  // distill-down whose SLMs stay on the clients is fedmkt's downward half alone: the clients'
  // own SLMs learn from the teacher's targets, and nothing comes back (DistillUpServer runs it).
  const bool local_slms = distill && distill->slms == "local";
  // distill-up trains the cloud LLM (distill.llm); [model] is the clients' SLM.
  std::optional<DistillUpConfig> up;
  std::string llm_path;
  if (algorithm_name == "distill-up" || algorithm_name == "fedmkt") {
    TANDEM_ASSIGN_OR_RETURN(DistillUpConfig c, DistillUpConfigFromConfig(config));
    up = std::move(c);
    TANDEM_ASSIGN_OR_RETURN(llm_path, config.RequireString("distill.llm"));
  }
  if (local_slms) {
    up = LocalDistillDownConfig(*distill);
    llm_path = distill->teacher;
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<ModelConfig> client_models, ClientModelsFromConfig(config));
  // Clients of different architectures: distill-up and fedmkt move only predictions; fedavg,
  // distill-down and fedcollm average weights, so each architecture's clients form a group with
  // its own global model (coordinator/grouped_server.h).
  const bool grouped = !client_models.empty() && algorithm_name != "distill-up" &&
                       algorithm_name != "fedmkt" && !local_slms;
  std::vector<std::string> client_model_names, client_inits;
  if (grouped) {
    TANDEM_ASSIGN_OR_RETURN(client_model_names,
                            config.GetStringList("federation.client_models", {}));
    TANDEM_ASSIGN_OR_RETURN(client_inits,
                            config.GetStringList("federation.client_init_checkpoints", {}));
    if (!client_inits.empty() && client_inits.size() != client_models.size()) {
      return Status::InvalidArgument("federation.client_init_checkpoints must have one entry per "
                                     "federation.client_models entry");
    }
  }
  config.MarkUsed("federation.client_init_checkpoints");  // read by the clients
  std::optional<FedCoLLMConfig> collm;
  if (algorithm_name == "fedcollm") {
    TANDEM_ASSIGN_OR_RETURN(FedCoLLMConfig c, FedCoLLMConfigFromConfig(config));
    collm = std::move(c);
    TANDEM_ASSIGN_OR_RETURN(llm_path, config.RequireString("distill.llm"));
  }
  TANDEM_ASSIGN_OR_RETURN(wire::TransportConfig transport,
                          wire::TransportConfigFromConfig(config, run_dir));
  if (!options.keys_dir.empty()) transport.keys_dir = options.keys_dir;
  const privacy::FederationShape shape{engine_config.expected_clients, CohortSize(engine_config),
                                       MinResults(engine_config), engine_config.rounds};
  TANDEM_ASSIGN_OR_RETURN(privacy::PrivacyConfig privacy,
                          privacy::PrivacyConfigFromConfig(config, shape));
  if (privacy.any() && grouped) {
    return Status::InvalidArgument(
        "federation.client_models (clients of different architectures) cannot be combined with "
        "[privacy] under " + algorithm_name + ": each architecture's group averages its own model, "
        "but the privacy pipeline sums one contribution vector over the whole cohort");
  }
  if (privacy.any() && local_slms) {
    return Status::InvalidArgument(
        "distill.slms = \"local\" sends nothing from the clients, so [privacy] has nothing to "
        "protect; switch it off, or average the SLMs (distill.slms = \"fedavg\")");
  }
  if (privacy.any() && up && up->selection == "min-ce") {
    return Status::InvalidArgument(
        "distill.selection = \"min-ce\" picks one client's prediction per position, which "
        "needs every client's upload; with [privacy] on only their mean exists: use \"mean\"");
  }
  if (privacy.any() && fedavg.client_eval) {
    return Status::InvalidArgument(
        "eval.clients = true reports each client's held-out loss in the clear, outside secure "
        "aggregation and the privacy accounting; it cannot be combined with [privacy]");
  }
  if (privacy.any()) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> probe, MakeStrategy(fedavg.strategy));
    if (probe->NeedsIndividualContributions()) {
      return Status::InvalidArgument(
          "strategy.name = \"" + fedavg.strategy.name + "\" needs every client's update, which "
          "differential privacy and secure aggregation do not reveal; use a mean-based strategy");
    }
  }
  engine_config.poisson_sampling = privacy.dp.enabled && privacy.dp.sampling == "poisson";
  // Read by the clients, from the same file.
  config.MarkUsed("federation.partition");
  config.MarkUsed("client.give_up_s");
  TANDEM_RETURN_IF_ERROR(config.CheckAllKeysUsed());
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(fedavg.strategy));

  const std::string ckpt_dir = run_dir + "/checkpoints";
  const std::string state_path = ckpt_dir + "/coordinator.safetensors";
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  std::error_code ec;
  fs::create_directories(ckpt_dir, ec);
  if (ec) return Status::IoError("cannot create '" + ckpt_dir + "': " + ec.message());
  TANDEM_RETURN_IF_ERROR(WriteText(run_dir + "/config.toml", config.ToToml()));

  TANDEM_ASSIGN_OR_RETURN(DatasetSplits splits, LoadSplits(data));
  std::unique_ptr<Gpt> model;
  std::string models_text = model_config.ToString();
  if (up) {
    // The SLM's init checkpoint is the clients'; the coordinator's model is the LLM.
    TANDEM_ASSIGN_OR_RETURN(model, LoadCloudModel("distill.llm", llm_path));
  } else if (grouped) {
    // Each group's SLM is made with its server below.
    models_text.clear();
    for (size_t p : GroupClientModels(client_models).first_position) {
      models_text += (models_text.empty() ? "" : ", ") + client_model_names[p];
    }
  } else if (!init_checkpoint.empty()) {
    TANDEM_ASSIGN_OR_RETURN(model, LoadGpt(init_checkpoint));
    if (!(model->config() == model_config)) {
      return Status::InvalidArgument("model.init_checkpoint '" + init_checkpoint + "' holds " +
                                     model->config().ToString() + ", the config asks for " +
                                     model_config.ToString());
    }
  } else {
    model = std::make_unique<Gpt>(model_config);
    model->InitWeights(static_cast<uint64_t>(seed));
  }
  log->info("run '{}': {} with {} on {}, {} clients expected, {} rounds", name, algorithm_name,
            fedavg.strategy.name, models_text, engine_config.expected_clients,
            engine_config.rounds);
  std::random_device entropy;
  const uint64_t run_id = (static_cast<uint64_t>(entropy()) << 32 | entropy()) | 1;
  // The model the run trains and reports on: the global SLM, or the LLM under distill-up.
  Gpt* main_model = nullptr;
  std::function<StatusOr<double>()> validation_loss;
  std::unique_ptr<ServerAlgorithm> active;
  // A grouped run's groups: their models are checkpointed as model.<group>.safetensors, and the
  // run's held-out loss is the mean of theirs.
  std::vector<GroupedRun::Group> groups;
  if (grouped) {
    TANDEM_ASSIGN_OR_RETURN(GroupedRun run,
                            MakeGroupedRun(client_models, client_model_names, client_inits,
                                           init_checkpoint, fedavg, distill, collm, llm_path,
                                           splits, static_cast<uint64_t>(seed)));
    groups = std::move(run.groups);
    active = std::move(run.server);
  } else if (collm) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> llm, LoadCloudModel("distill.llm", llm_path));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<FedCoLLMServer> server,
                            FedCoLLMServer::Create(*collm, fedavg.local, fedavg.strategy,
                                                   std::move(model), std::move(llm),
                                                   splits.public_, splits.validation,
                                                   fedavg.eval_tokens,
                                                   static_cast<uint64_t>(seed)));
    log->info("fedcollm: rank-{} adapters on the SLM, distilled both ways with the LLM ({}) on {} "
              "public windows a round", collm->lora.rank, server->llm().config().ToString(),
              collm->windows);
    main_model = &server->slm();
    FedCoLLMServer* raw = server.get();
    validation_loss = [raw] { return raw->SlmValidationLoss(); };
    active = std::move(server);
  } else if (up) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<DistillUpServer> server,
                            DistillUpServer::Create(*up, fedavg.local, std::move(model),
                                                    model_config, splits.public_,
                                                    splits.validation, fedavg.eval_tokens,
                                                    static_cast<uint64_t>(seed), client_models,
                                                    fedavg.client_eval));
    if (local_slms) {
      // No global model: the clients' own SLMs are scored by eval.clients.
      log->info("distill-down: teacher {} ({}), top-{} targets at T = {:g} on {} public windows "
                "a round; each client keeps its own {}", llm_path,
                server->llm().config().ToString(), up->top_k, up->temperature, up->windows,
                model_config.ToString());
      validation_loss = [] { return std::nan(""); };
    } else {
      log->info("{}: the LLM ({}) learns from the clients' {} predictions on {} public "
                "windows a round at T = {:g}", server->name(), server->llm().config().ToString(),
                model_config.ToString(), up->windows, up->temperature);
      main_model = &server->llm();
      DistillUpServer* raw = server.get();
      validation_loss = [raw] { return raw->ValidationLoss(); };
    }
    active = std::move(server);
  } else {
    auto fedavg_server = std::make_unique<FedAvgServer>(fedavg, std::move(model),
                                                        std::move(strategy), splits.validation);
    main_model = &fedavg_server->model();
    FedAvgServer* raw = fedavg_server.get();
    validation_loss = [raw] { return raw->ValidationLoss(); };
    if (distill) {
      // distill-down is FedAvg whose training task also carries the LLM's targets.
      TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> teacher,
                              LoadCloudModel("distill.teacher", distill->teacher));
      log->info("distill-down: teacher {} ({}), top-{} targets at T = {:g} on {} public windows "
                "a round", distill->teacher, teacher->config().ToString(), distill->top_k,
                distill->temperature, distill->windows);
      TANDEM_ASSIGN_OR_RETURN(active, DistillDownServer::Create(*distill, std::move(fedavg_server),
                                                                std::move(teacher), splits.public_,
                                                                static_cast<uint64_t>(seed)));
    } else {
      active = std::move(fedavg_server);
    }
  }
  PrivateServer* private_server = nullptr;
  if (privacy.any()) {
    PrivateServerOptions private_options{privacy, shape, run_id, static_cast<uint64_t>(seed), {}};
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<PrivateServer> wrapped,
                            PrivateServer::Create(std::move(active), private_options));
    private_server = wrapped.get();
    active = std::move(wrapped);
    if (privacy.dp.enabled) {
      log->info("differential privacy: noise multiplier {:.4g} ({} noise), clip norm {:.4g}{}, "
                "q = {:.4g}, delta = {:.3g}{}", private_server->noise_multiplier(),
                privacy.dp.noise, privacy.dp.clip_norm,
                privacy.dp.adaptive_clipping ? " (adaptive)" : "", private_server->sampling_rate(),
                privacy.dp.delta,
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
  }

  Checkpointed saved;
  const bool resuming = options.resume && fs::exists(state_path);
  if (resuming) {
    TANDEM_RETURN_IF_ERROR(LoadCheckpoint(state_path, active.get(), &saved));
    TANDEM_RETURN_IF_ERROR(TrimMetrics(metrics_path, saved.engine.next_round));
    log->info("resumed from {} before round {}", state_path, saved.engine.next_round);
  } else {
    if (options.resume) log->warn("--resume: no checkpoint at {}; starting afresh", state_path);
    fs::remove(metrics_path, ec);
  }

  const double elapsed_before = saved.elapsed;
  auto elapsed = [&] { return elapsed_before + clock.Seconds(); };
  // ---- Round 0: the starting point, before any client is let in. ----
  if (!resuming) {
    std::map<std::string, double> group_losses;
    if (groups.empty()) {
      TANDEM_ASSIGN_OR_RETURN(saved.initial_val_loss, validation_loss());
    } else {
      // Each group's starting point; the run's is their mean, as the rounds' val_loss is.
      double sum = 0.0;
      for (const auto& g : groups) {
        TANDEM_ASSIGN_OR_RETURN(double v, g.validation_loss());
        log->info("group {}: held-out loss {:.4f} before round 1", g.name, v);
        if (std::isfinite(v)) {
          group_losses["val_loss." + g.name] = v;
          sum += v;
        }
      }
      saved.initial_val_loss = group_losses.empty() ? std::nan("") : sum / group_losses.size();
    }
    nlohmann::json line = {{"round", 0}, {"time_s", elapsed()}};
    for (const auto& [k, v] : group_losses) line[k] = v;
    if (std::isfinite(saved.initial_val_loss)) {
      line["val_loss"] = saved.initial_val_loss;
      line["val_ppl"] = std::exp(saved.initial_val_loss);
    }
    TANDEM_RETURN_IF_ERROR(AppendLine(metrics_path, line.dump()));
    if (options.show_progress) {
      std::fprintf(stderr, "round 0: held-out loss %.4f\n", saved.initial_val_loss);
    }
  }

  // ---- Transport. ----
  const std::string endpoint = options.bind.empty() ? transport.endpoint : options.bind;
  TANDEM_ASSIGN_OR_RETURN(wire::TransportOptions server_options,
                          wire::ServerTransportOptions(transport, endpoint, run_id));
  server_options.zmq_context = options.zmq_context;
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<wire::Server> server,
                          wire::Server::Bind(server_options));
  log->info("listening on {}{}", server->endpoint(),
            transport.curve ? " (CURVE, allow-list)" : "");
  if (options.on_bound) TANDEM_RETURN_IF_ERROR(options.on_bound(server->endpoint()));

  // ---- Rounds. ----
  ServerOutbox outbox(server.get());
  Stopwatch engine_clock;
  RoundEngine engine(engine_config, active.get(), &outbox, [&] { return engine_clock.Seconds(); },
                     static_cast<uint64_t>(seed));
  if (resuming) engine.RestoreState(saved.engine);
  CoordinatorResult result;
  result.run_dir = run_dir;
  result.initial_val_loss = saved.initial_val_loss;
  result.final_val_loss = saved.initial_val_loss;
  engine.SetRoundEndCallback([&](uint64_t round, const std::map<std::string, double>& m) {
    nlohmann::json line = {{"round", round}, {"time_s", elapsed()}};
    for (const auto& [k, v] : m) line[k] = v;
    saved.bytes_up += static_cast<uint64_t>(m.at("bytes_up"));
    saved.bytes_down += static_cast<uint64_t>(m.at("bytes_down"));
    line["bytes_up_total"] = saved.bytes_up;
    line["bytes_down_total"] = saved.bytes_down;
    const bool aborted = m.count("aborted") > 0;
    if (aborted) ++saved.aborted;
    if (m.count("val_loss")) result.final_val_loss = m.at("val_loss");
    TANDEM_RETURN_IF_ERROR(AppendLine(metrics_path, line.dump()));
    saved.engine = engine.state();
    saved.elapsed = elapsed();
    TANDEM_RETURN_IF_ERROR(SaveCheckpoint(ckpt_dir, *active, saved));
    if (main_model != nullptr) {
      TANDEM_RETURN_IF_ERROR(SaveGpt(ckpt_dir + "/model.safetensors", *main_model));
    }
    for (const auto& g : groups) {
      TANDEM_RETURN_IF_ERROR(SaveGpt(ckpt_dir + "/model." + g.name + ".safetensors", *g.model));
    }
    if (options.show_progress) {
      char buf[256];
      if (aborted) {
        std::snprintf(buf, sizeof buf, "round %llu/%lld: aborted (%g of %g results), model kept",
                      static_cast<unsigned long long>(round),
                      static_cast<long long>(engine_config.rounds), m.at("results"),
                      m.at("cohort"));
      } else {
        std::snprintf(buf, sizeof buf,
                      "round %llu/%lld: held-out loss %.4f%s, %g/%g results, "
                      "%s up, %s down, %.1f s%s",
                      static_cast<unsigned long long>(round),
                      static_cast<long long>(engine_config.rounds),
                      m.count("val_loss") ? m.at("val_loss") : std::nan(""),
                      m.count("train_loss")
                          ? fmt::format(" (local train {:.4f})", m.at("train_loss")).c_str()
                          : "",
                      m.at("results"),
                      m.at("cohort"), FormatBytes(m.at("bytes_up")).c_str(),
                      FormatBytes(m.at("bytes_down")).c_str(), m.at("round_s"),
                      m.count("epsilon") ? fmt::format(", epsilon {:.3f}", m.at("epsilon")).c_str()
                                         : "");
      }
      std::fprintf(stderr, "%s\n", buf);
    }
    return Status::Ok();
  });

  std::set<std::string> live;
  while (!engine.done()) {
    const auto wait = std::chrono::milliseconds(
        std::max<int64_t>(1, static_cast<int64_t>(engine.NextWakeSeconds() * 1000)));
    TANDEM_ASSIGN_OR_RETURN(std::optional<wire::TransportEvent> event, server->Receive(wait));
    if (event) {
      switch (event->kind) {
        case wire::TransportEvent::Kind::kPeerJoined: {
          std::vector<std::string> capabilities;
          if (const auto* hello = std::get_if<wire::Hello>(&event->message.body)) {
            capabilities = hello->capabilities;
          }
          wire::Message welcome;
          welcome.envelope.round = engine.current_round();
          const int index = ClientIndexFromName(event->peer);
          welcome.body = wire::Welcome{static_cast<uint32_t>(index < 0 ? 0xFFFFFFFFu : index),
                                       transport.heartbeat_ms, transport.peer_timeout_ms};
          if (Status s = server->Send(event->peer, std::move(welcome)); !s.ok()) {
            log->warn("cannot welcome {}: {}", event->peer, s.message());
            break;
          }
          live.insert(event->peer);
          engine.OnJoined(event->peer, capabilities);
          break;
        }
        case wire::TransportEvent::Kind::kPeerLost:
          live.erase(event->peer);
          engine.OnLost(event->peer);
          break;
        case wire::TransportEvent::Kind::kMessage:
          engine.OnMessage(event->peer, event->message);
          break;
      }
    }
    engine.Tick();
  }

  // ---- The end: tell the clients, then the final numbers. ----
  const std::string reason = engine.status().ok() ? "the run is complete" : "the run failed";
  for (const auto& peer : live) {
    wire::Message bye;
    bye.envelope.round = engine.current_round();
    bye.body = wire::Bye{reason};
    (void)server->Send(peer, std::move(bye));
  }
  // Give the I/O thread a moment to deliver the Byes before the socket closes.
  for (Stopwatch drain; drain.Seconds() < 0.5;) {
    auto event = server->Receive(std::chrono::milliseconds(50));
    if (!event.ok()) break;
  }
  TANDEM_RETURN_IF_ERROR(engine.status());

  result.rounds = engine.state().next_round - 1;
  result.stop_reason = engine.stop_reason();
  if (private_server != nullptr && privacy.dp.enabled) result.epsilon = private_server->epsilon();
  result.aborted_rounds = saved.aborted;
  result.bytes_up = saved.bytes_up;
  result.bytes_down = saved.bytes_down;
  std::map<std::string, double> group_test_losses;
  if (!splits.test.empty() && main_model != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(LossResult test, EvaluateLoss(*main_model, splits.test, 16,
                                                          fedavg.eval_tokens));
    result.final_test_loss = test.loss;
  } else if (!splits.test.empty() && !groups.empty()) {
    double sum = 0.0;
    for (const auto& g : groups) {
      TANDEM_ASSIGN_OR_RETURN(LossResult test, EvaluateLoss(*g.model, splits.test, 16,
                                                            fedavg.eval_tokens));
      group_test_losses["final_test_loss." + g.name] = test.loss;
      sum += test.loss;
    }
    result.final_test_loss = sum / groups.size();
  }
  result.seconds = elapsed();
  nlohmann::json summary = {{"name", name},
                            {"algorithm", algorithm_name},
                            {"strategy", fedavg.strategy.name},
                            {"model", models_text},
                            {"clients", engine_config.expected_clients},
                            {"rounds", result.rounds},
                            {"aborted_rounds", result.aborted_rounds},
                            {"initial_val_loss", result.initial_val_loss},
                            {"final_val_loss", result.final_val_loss},
                            {"final_test_loss", result.final_test_loss},
                            {"bytes_up", result.bytes_up},
                            {"bytes_down", result.bytes_down},
                            {"seconds", result.seconds}};
  for (const auto& [k, v] : group_test_losses) summary[k] = v;
  if (!result.stop_reason.empty()) summary["stopped"] = result.stop_reason;
  if (privacy.dp.enabled) {
    summary["epsilon"] = result.epsilon;
    summary["delta"] = privacy.dp.delta;
    summary["noise_multiplier"] = private_server->noise_multiplier();
  }
  if (privacy.secagg.enabled) summary["secure_aggregation"] = true;
  TANDEM_RETURN_IF_ERROR(WriteText(run_dir + "/summary.json", summary.dump(2) + "\n"));
  return result;
}

}  // namespace tandem

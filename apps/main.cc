// `tandem`: one program, one subcommand per job. Each subcommand parses its flags, loads the
// config with its --set overrides, and calls into a library; errors print one clear line.
#include <malloc.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/config_reference.h"
#include "apps/launch.h"
#include "algorithms/registry.h"
#include "apps/privacy_command.h"
#include "apps/prune_command.h"
#include "client/client.h"
#include "coordinator/coordinator.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/threads.h"
#include "route/route_run.h"
#include "route/speculative_command.h"
#include "serve/ask.h"
#include "serve/generate_command.h"
#include "serve/server.h"
#include "train/commands.h"
#include "train/report.h"
#include "train/run_dir.h"
#include "train/trainer.h"
#include "wire/curve.h"

namespace {

using tandem::Config;
using tandem::Status;
using tandem::StatusOr;

StatusOr<Config> LoadConfig(const std::string& path, const std::vector<std::string>& overrides) {
  TANDEM_ASSIGN_OR_RETURN(Config config, Config::LoadFile(path));
  for (const auto& o : overrides) TANDEM_RETURN_IF_ERROR(config.ApplyOverride(o));
  return config;
}

int Fail(const Status& status) {
  std::fprintf(stderr, "tandem: error: %s\n", status.message().c_str());
  return 1;
}

// Logs of a federated run go to the terminal and to runs/<name>/<file>.
Status SetupRunLogging(const Config& config, const std::string& level, const std::string& file) {
  TANDEM_ASSIGN_OR_RETURN(std::string run_dir, tandem::RunDirectory(config));
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  return tandem::SetupLogging(level, ec ? "" : run_dir + "/" + file);
}

// `tandem run` stopped by SIGINT or SIGTERM: how to continue, with the same overrides.
int PrintStopped(int signal, const std::string& config_path,
                 const std::vector<std::string>& overrides) {
  auto quote = [](const std::string& word) {
    if (!word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU"
                                                "VWXYZ0123456789_-.,/=:+@%") == std::string::npos) {
      return word;
    }
    std::string q = "'";
    for (char c : word) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  std::string command = "tandem run " + quote(config_path) + " --resume";
  for (const auto& o : overrides) command += " --set " + quote(o);
  std::fprintf(stderr,
               "tandem: stopped by %s; every client was stopped and the last checkpoint is kept.\n"
               "to continue the run: %s\n",
               signal == SIGINT ? "SIGINT" : signal == SIGTERM ? "SIGTERM" : "a signal",
               command.c_str());
  return 128 + signal;
}

void PrintSummary(const tandem::CoordinatorResult& r) {
  std::printf("held-out loss %.4f -> %.4f (test %.4f) after %llu rounds%s in %.1f s; "
              "%.1f MB up, %.1f MB down\n"
              "run directory: %s (tandem report %s draws the curves)\n",
              r.initial_val_loss, r.final_val_loss, r.final_test_loss,
              static_cast<unsigned long long>(r.rounds),
              r.aborted_rounds > 0
                  ? (" (" + std::to_string(r.aborted_rounds) + " aborted)").c_str()
                  : "",
              r.seconds, r.bytes_up / 1e6, r.bytes_down / 1e6, r.run_dir.c_str(),
              r.run_dir.c_str());
  if (r.epsilon > 0.0) std::printf("privacy spent: epsilon %.4f\n", r.epsilon);
  if (!r.stop_reason.empty()) std::printf("stopped early: %s\n", r.stop_reason.c_str());
}

// The coordinator's round lines go to stderr, beside the log.
void PrintProgress(const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); }

// `tandem serve` runs until SIGINT or SIGTERM.
std::atomic<int> g_serve_stop{0};
void StopServing(int signal) { g_serve_stop = signal; }

// `tandem ask --prompts FILE`: one prompt per line (empty lines skipped).
StatusOr<std::vector<std::string>> ReadPromptLines(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return tandem::Status::IoError("cannot read " + path);
  std::vector<std::string> out;
  std::string line;
  for (int c; (c = std::fgetc(f)) != EOF;) {
    if (c != '\n') {
      line += static_cast<char>(c);
      continue;
    }
    if (!line.empty()) out.push_back(line);
    line.clear();
  }
  if (!line.empty()) out.push_back(line);
  std::fclose(f);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tandem: cloud LLMs and edge SLMs trained together"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();

  // tandem train CONFIG
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false, overwrite = false;
  const char* kOverwriteHelp = "Clear an existing run of this name first (report and logs too)";
  // An endpoint given on the command line is never empty: an empty value (a script's unset
  // variable) would otherwise mean "the config's endpoint" and connect somewhere else quietly.
  const CLI::Validator kEndpoint(
      [](const std::string& e) { return e.empty() ? std::string("an empty endpoint") : std::string(); },
      "ENDPOINT");
  auto* train = app.add_subcommand("train", "Centralized training of one model");
  train->add_option("config", config_path, "TOML config")->required()->check(CLI::ExistingFile);
  train->add_option("--set", overrides, "Override a config key: --set train.steps=100");
  train->add_flag("--resume", resume, "Continue from the run's last checkpoint");
  train->add_flag("--overwrite", overwrite, kOverwriteHelp);

  // tandem eval CONFIG --checkpoint F
  std::string checkpoint, lora, json_out;
  int64_t max_tokens = 0;
  int exact_match = 200;
  auto* eval = app.add_subcommand("eval", "Loss, perplexity and exact-match accuracy");
  eval->add_option("config", config_path, "TOML config naming the data")->required()->check(CLI::ExistingFile);
  eval->add_option("--checkpoint", checkpoint, "Model safetensors")->required()->check(CLI::ExistingFile);
  eval->add_option("--lora", lora, "LoRA adapters safetensors")->check(CLI::ExistingFile);
  eval->add_option("--set", overrides, "Override a config key");
  eval->add_option("--max-tokens", max_tokens, "Evaluate at most this many tokens per split (0: all)");
  eval->add_option("--exact-match", exact_match, "Prompt/answer records scored per category")->capture_default_str();
  eval->add_option("--json", json_out, "Also write the results as JSON here");
  tandem::ProxyEval proxy;
  eval->add_option("--proxy-tuned", proxy.tuned, "Proxy-tuning: a tuned small model")->check(CLI::ExistingFile);
  eval->add_option("--proxy-base", proxy.base, "Proxy-tuning: that small model before tuning")->check(CLI::ExistingFile);
  eval->add_option("--proxy-alpha", proxy.alpha, "Proxy-tuning strength")->capture_default_str();

  // tandem generate --checkpoint F
  tandem::GenerateOptions gen;
  auto* generate = app.add_subcommand("generate", "Text from a prompt");
  generate->add_option("--checkpoint", gen.checkpoint, "Model safetensors (not with --cloud)")->check(CLI::ExistingFile);
  generate->add_option("--lora", gen.lora, "LoRA adapters safetensors")->check(CLI::ExistingFile);
  generate->add_option("--prompt", gen.prompt, "Text to continue");
  generate->add_option("--max-tokens", gen.max_tokens, "Bytes to generate")->capture_default_str()->check(CLI::Range(1, 1000000));
  generate->add_option("--temperature", gen.temperature, "0 for greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
  generate->add_option("--top-k", gen.top_k, "0 for the whole vocabulary")->capture_default_str()->check(CLI::NonNegativeNumber);
  generate->add_option("--seed", gen.seed, "Sampling seed")->capture_default_str();
  tandem::SpeculativeGenerateOptions spec;
  generate->add_option("--draft", spec.draft, "Speculative decoding: the device model drafting for --checkpoint")->check(CLI::ExistingFile);
  generate->add_option("--gamma", spec.gamma, "Speculative decoding: tokens drafted per verification")->capture_default_str()->check(CLI::Range(1, 64));
  generate->add_option("--top-p", spec.top_p, "Speculative decoding: nucleus mass (1: off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  tandem::serve::RemoteGenerateOptions remote_gen;
  generate->add_option("--cloud", remote_gen.endpoint, "Speculative decoding: verify with the inference service at this endpoint (tandem serve)");
  generate->add_option("--keys", remote_gen.keys_dir, "With --cloud: CURVE key directory (client-K.key, coordinator.pub)");
  generate->add_option("--id", remote_gen.id, "With --cloud: this device's key client-K")->capture_default_str()->check(CLI::NonNegativeNumber);
  generate->add_option("--timeout-ms", remote_gen.timeout_ms, "With --cloud: how long one verification may take")->capture_default_str()->check(CLI::Range(1, 3600000));

  // tandem serve CONFIG
  tandem::serve::ServeRunOptions serve_options;
  auto* serve = app.add_subcommand("serve", "The cloud inference service alone (no rounds)");
  serve->add_option("config", config_path, "TOML config ([federation] transport and keys, [serve])")->required()->check(CLI::ExistingFile);
  serve->add_option("--set", overrides, "Override a config key: --set serve.max_calls_per_client=100");
  serve->add_option("--checkpoint", serve_options.checkpoint, "The cloud model (default: serve.checkpoint)")->check(CLI::ExistingFile);
  serve->add_option("--bind", serve_options.bind, "Endpoint to bind (default: federation.endpoint)")->check(kEndpoint);
  serve->add_option("--keys", serve_options.keys_dir, "CURVE key directory (default: federation.keys_dir)");

  // tandem ask CONFIG --connect E --checkpoint DEVICE
  tandem::serve::AskOptions ask_options;
  std::string ask_prompt, ask_prompts_file;
  auto* ask = app.add_subcommand("ask", "A device answering prompts, handing off to the cloud service");
  ask->add_option("config", config_path, "TOML config ([federation] keys)")->required()->check(CLI::ExistingFile);
  ask->add_option("--set", overrides, "Override a config key");
  ask->add_option("--connect", ask_options.connect, "The inference service's endpoint")->required()->check(kEndpoint);
  ask->add_option("--checkpoint", ask_options.checkpoint, "The device model")->required()->check(CLI::ExistingFile);
  auto* ask_one = ask->add_option("--prompt", ask_prompt, "One prompt");
  ask->add_option("--prompts", ask_prompts_file, "A file of prompts, one per line")->check(CLI::ExistingFile)->excludes(ask_one);
  ask->add_option("--budget", ask_options.budget, "Most hand-offs as a fraction of the queries so far")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  ask->add_option("--max-tokens", ask_options.max_tokens, "Tokens per completion")->capture_default_str()->check(CLI::Range(1, 4096));
  ask->add_option("--timeout-ms", ask_options.timeout_ms, "How long a hand-off waits for the cloud")->capture_default_str()->check(CLI::Range(1, 3600000));
  ask->add_option("--id", ask_options.id, "This device's key client-K")->capture_default_str()->check(CLI::NonNegativeNumber);
  ask->add_option("--keys", ask_options.keys_dir, "CURVE key directory (default: federation.keys_dir)");
  ask->add_option("--seed", ask_options.seed, "Sampling seed")->capture_default_str();

  // tandem bench train --preset P --batch B --steps N
  auto* bench = app.add_subcommand("bench", "Benchmarks that compare against a same-run reference");
  bench->require_subcommand(1);
  std::string preset = "slm-tiny";
  int batch = 16, steps = 20, warmup = 3;
  auto* bench_train = bench->add_subcommand("train", "Tokens per second of a full training step");
  bench_train->add_option("--preset", preset, "Model preset")->capture_default_str();
  bench_train->add_option("--batch", batch, "Batch size")->capture_default_str()->check(CLI::Range(1, 4096));
  bench_train->add_option("--steps", steps, "Timed steps")->capture_default_str()->check(CLI::Range(1, 1000000));
  bench_train->add_option("--warmup", warmup, "Untimed steps first")->capture_default_str()->check(CLI::Range(0, 1000));

  // tandem run CONFIG
  auto* run = app.add_subcommand("run", "Coordinator and the config's clients on this machine");
  run->add_option("config", config_path, "TOML config")->required()->check(CLI::ExistingFile);
  run->add_option("--set", overrides, "Override a config key (also passed to the clients)");
  run->add_flag("--resume", resume, "Continue from the coordinator's last checkpoint");
  run->add_flag("--overwrite", overwrite, kOverwriteHelp);

  // tandem coordinator CONFIG
  std::string bind, keys_dir;
  auto* coordinator = app.add_subcommand("coordinator", "The cloud side of a run, alone");
  coordinator->add_option("config", config_path, "TOML config")->required()->check(CLI::ExistingFile);
  coordinator->add_option("--set", overrides, "Override a config key");
  coordinator->add_flag("--resume", resume, "Continue from the last checkpoint");
  coordinator->add_flag("--overwrite", overwrite, kOverwriteHelp);
  coordinator->add_option("--bind", bind, "Endpoint to bind (default: federation.endpoint)")->check(kEndpoint);
  coordinator->add_option("--keys", keys_dir, "CURVE key directory (default: federation.keys_dir)");

  // tandem client CONFIG --id K
  int client_id = -1;
  std::string connect;
  auto* client = app.add_subcommand("client", "One edge client");
  client->add_option("config", config_path, "TOML config")->required()->check(CLI::ExistingFile);
  client->add_option("--id", client_id, "This client's K: its data partition and key client-K")->required()->check(CLI::NonNegativeNumber);
  client->add_option("--connect", connect, "Coordinator endpoint (default: federation.endpoint)")->check(kEndpoint);
  client->add_option("--keys", keys_dir, "CURVE key directory (default: federation.keys_dir)");
  client->add_option("--set", overrides, "Override a config key");

  // tandem keygen --out DIR --clients N
  std::string keygen_out;
  int keygen_clients = 4;
  bool keygen_force = false;
  auto* keygen = app.add_subcommand("keygen", "CURVE key pairs for a coordinator and N clients, and the allow-list");
  keygen->add_option("--out", keygen_out, "Directory for the keys")->required();
  keygen->add_option("--clients", keygen_clients, "Number of clients")->capture_default_str()->check(CLI::Range(1, 100000));
  keygen->add_flag("--force", keygen_force, "Overwrite existing keys");

  // tandem report RUN_DIR
  std::string report_dir;
  tandem::ReportOptions report_options;
  bool no_plots = false;
  auto* report = app.add_subcommand("report", "Curves and a table from a run's metrics");
  report->add_option("run_dir", report_dir, "Run directory (runs/<name>)")->required()->check(CLI::ExistingDirectory);
  report->add_option("--out", report_options.out_dir, "Where to write (default: RUN_DIR/report)");
  report->add_flag("--no-plots", no_plots, "Only the table");

  // tandem route train|eval CONFIG
  auto* route = app.add_subcommand("route", "Answer-or-hand-off: GAPG post-training and its evaluation");
  route->require_subcommand(1);
  auto* route_train = route->add_subcommand("train", "Post-train the device to answer or hand off (GAPG or GRPO)");
  route_train->add_option("config", config_path, "TOML config with a [route] section")->required()->check(CLI::ExistingFile);
  route_train->add_option("--set", overrides, "Override a config key: --set route.steps=100");
  route_train->add_flag("--resume", resume, "Continue from the run's last checkpoint");
  route_train->add_flag("--overwrite", overwrite, kOverwriteHelp);
  auto* route_eval = route->add_subcommand("eval", "Accuracy, local accuracy and call ratio under a budget");
  route_eval->add_option("config", config_path, "TOML config with a [route] section")->required()->check(CLI::ExistingFile);
  route_eval->add_option("--set", overrides, "Override a config key: --set route.baseline=router");
  route_eval->add_option("--json", json_out, "Also write the result as JSON here");

  // tandem privacy epsilon|sigma
  tandem::AddPrivacyCommands(app);

  // tandem prune CONFIG --checkpoint F --to SHAPE
  tandem::PruneOptions prune_options;
  auto* prune = tandem::AddPruneCommand(app, &prune_options);

  auto* config_reference = app.add_subcommand(
      "config-reference", "Every config key as Markdown (docs/config.md is its output)");

  CLI11_PARSE(app, argc, argv);

  tandem::SetComputeThreads(tandem::ComputeThreads());
  if (*run || *coordinator || *client) {
    // Model-sized buffers (frames, messages, sums) come and go every round. glibc raises its mmap
    // threshold after the first large free and then serves them from the heap, which it does not
    // give back; a fixed threshold keeps them mmap'd, so freed rounds return their memory.
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    tandem::RunDirClaim run_dir_claim;  // held until the program ends
    if (!*client) {
      // The run directory is claimed (locked, checked, set aside with --overwrite) before its log
      // is opened, so a refused start leaves an earlier run as it was.
      auto run_dir = tandem::RunDirectory(*config);
      if (!run_dir.ok()) return Fail(run_dir.status());
      auto claimed = tandem::ClaimRunDirectory(*run_dir, {resume, overwrite});
      if (!claimed.ok()) return Fail(claimed.status());
      run_dir_claim = std::move(*claimed);
    }
    const std::string log_file =
        *client ? "logs/client-" + std::to_string(client_id) + ".session.log" : "coordinator.log";
    Status s = *client ? tandem::SetupLogging(log_level) : SetupRunLogging(*config, log_level, log_file);
    if (!s.ok()) return Fail(s);
    auto algorithm = tandem::AlgorithmOf(*config);
    if (!algorithm.ok()) return Fail(algorithm.status());
    if (*client) {
      tandem::ClientOptions o;
      o.index = client_id;
      o.connect = connect;
      o.keys_dir = keys_dir;
      auto r = tandem::RunClient(*config, (*algorithm)->client, o);
      if (!r.ok()) return Fail(r.status());
      return 0;
    }
    int stopped_by_signal = 0;
    auto r = [&]() -> tandem::StatusOr<tandem::CoordinatorResult> {
      if (*run) {
        tandem::LaunchOptions o;
        o.config_path = config_path;
        o.overrides = overrides;
        o.resume = resume;
        o.overwrite = overwrite;
        o.log_level = log_level;
        o.progress = PrintProgress;
        o.stopped_by_signal = &stopped_by_signal;
        return tandem::RunLocal(*config, **algorithm, o);
      }
      tandem::CoordinatorOptions o;
      o.resume = resume;
      o.overwrite = overwrite;
      o.bind = bind;
      o.keys_dir = keys_dir;
      o.on_bound = [](const std::string& endpoint) {
        std::printf("coordinator listening on %s\n", endpoint.c_str());
        std::fflush(stdout);
        return tandem::Status::Ok();
      };
      o.progress = PrintProgress;
      return tandem::RunCoordinator(*config, (*algorithm)->server, o);
    }();
    if (stopped_by_signal != 0) return PrintStopped(stopped_by_signal, config_path, overrides);
    if (!r.ok()) return Fail(r.status());
    PrintSummary(*r);
    return 0;
  }

  if (*config_reference) {
    // The readers it runs log as if a run were starting: silence them.
    if (Status s = tandem::SetupLogging("off"); !s.ok()) return Fail(s);
    auto keys = tandem::RecordConfigKeys();
    if (!keys.ok()) return Fail(keys.status());
    auto md = tandem::ConfigReferenceMarkdown(*keys);
    if (!md.ok()) return Fail(md.status());
    std::printf("%s", md->c_str());
    return 0;
  }
  if (Status s = tandem::SetupLogging(log_level); !s.ok()) return Fail(s);
  if (*prune) {
    auto config = LoadConfig(prune_options.config, prune_options.overrides);
    if (!config.ok()) return Fail(config.status());
    if (Status s = tandem::RunPrune(*config, prune_options); !s.ok()) return Fail(s);
    return 0;
  }
  if (*keygen) {
    Status s = tandem::wire::Keygen(keygen_out, keygen_clients, keygen_force);
    if (!s.ok()) return Fail(s);
    std::printf("keys for the coordinator and %d clients in %s; give each client its "
                "client-K.key and coordinator.pub, keep coordinator.key and allow-list.txt "
                "with the coordinator\n",
                keygen_clients, keygen_out.c_str());
    return 0;
  }
  if (*report) {
    report_options.plots = !no_plots;
    auto md = tandem::RunReport(report_dir, report_options);
    if (!md.ok()) return Fail(md.status());
    std::printf("%s", md->c_str());
    return 0;
  }

  if (*train) {
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    auto result = tandem::RunTrain(*config, resume, stderr, overwrite);
    if (!result.ok()) return Fail(result.status());
    std::printf("held-out loss %.4f -> %.4f (test %.4f) after %lld steps in %.1f s, %.0f tokens/s\n"
                "run directory: %s\n",
                result->initial_val_loss, result->final_val_loss, result->final_test_loss,
                static_cast<long long>(result->steps), result->seconds,
                result->tokens_per_second, result->run_dir.c_str());
    return 0;
  }
  if (*route_train) {
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    auto result = tandem::RunRouteTrain(*config, resume, overwrite, stderr);
    if (!result.ok()) return Fail(result.status());
    std::printf("route train: %lld steps, last step's mean reward %.4f and hand-off rate %.4f, "
                "%lld cloud queries\nrun directory: %s\n",
                static_cast<long long>(result->steps), result->final_mean_reward,
                result->final_handoff_rate, static_cast<long long>(result->cloud_queries),
                result->run_dir.c_str());
    return 0;
  }
  if (*route_eval) {
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    auto result = tandem::RunRouteEval(*config);
    if (!result.ok()) return Fail(result.status());
    std::printf("%s\n", result->Line().c_str());
    if (!json_out.empty()) {
      std::FILE* f = std::fopen(json_out.c_str(), "w");
      if (f == nullptr) return Fail(Status::IoError("cannot write " + json_out));
      std::fprintf(f, "%s\n", result->Json().c_str());
      if (std::fclose(f) != 0) return Fail(Status::IoError("cannot write " + json_out));
    }
    return 0;
  }
  if (*eval) {
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    Status s = tandem::RunEval(*config, checkpoint, lora, max_tokens, exact_match, json_out, proxy);
    return s.ok() ? 0 : Fail(s);
  }
  if (*serve) {
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    std::signal(SIGINT, StopServing);
    std::signal(SIGTERM, StopServing);
    serve_options.stop = &g_serve_stop;
    serve_options.on_bound = [](const std::string& endpoint) {
      std::printf("serving on %s\n", endpoint.c_str());
      std::fflush(stdout);
      return tandem::Status::Ok();
    };
    auto totals = tandem::serve::RunServe(*config, serve_options);
    if (!totals.ok()) return Fail(totals.status());
    std::printf("served %llu requests (%llu refused, %llu late)\n",
                static_cast<unsigned long long>(totals->served),
                static_cast<unsigned long long>(totals->refused),
                static_cast<unsigned long long>(totals->late));
    return 0;
  }
  if (*ask) {
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    if (!ask_prompts_file.empty()) {
      auto lines = ReadPromptLines(ask_prompts_file);
      if (!lines.ok()) return Fail(lines.status());
      ask_options.prompts = std::move(*lines);
    } else if (!ask_prompt.empty()) {
      ask_options.prompts = {ask_prompt};
    } else {
      return Fail(Status::InvalidArgument("tandem ask: --prompt or --prompts"));
    }
    Status s = tandem::serve::RunAsk(*config, ask_options);
    return s.ok() ? 0 : Fail(s);
  }
  if (*generate) {
    if (!remote_gen.endpoint.empty()) {
      if (spec.draft.empty()) return Fail(Status::InvalidArgument("--cloud needs --draft"));
      if (!gen.checkpoint.empty()) {
        return Fail(Status::InvalidArgument("--cloud replaces --checkpoint: the cloud model is "
                                            "the one the service serves"));
      }
      Status s = tandem::serve::RunRemoteSpeculativeGenerate(gen, spec, remote_gen);
      return s.ok() ? 0 : Fail(s);
    }
    if (gen.checkpoint.empty()) return Fail(Status::InvalidArgument("--checkpoint is required"));
    if (!spec.draft.empty()) {
      Status s = tandem::RunSpeculativeGenerate(gen, spec);
      return s.ok() ? 0 : Fail(s);
    }
    if (spec.top_p != 1.0f) return Fail(Status::InvalidArgument("--top-p needs --draft"));
    Status s = tandem::RunGenerate(gen);
    return s.ok() ? 0 : Fail(s);
  }
  if (*bench_train) {
    auto tps = tandem::BenchTrainStep(preset, batch, steps, warmup);
    if (!tps.ok()) return Fail(tps.status());
    std::printf("tokens_per_s=%.1f\n", *tps);
    return 0;
  }
  return 0;
}

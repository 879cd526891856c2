// `tandem`: one program, one subcommand per job. Each subcommand parses its flags, loads the
// config with its --set overrides, and calls into a library; errors print one clear line.
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/config.h"
#include "core/logging.h"
#include "core/threads.h"
#include "train/commands.h"
#include "train/trainer.h"

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
  bool resume = false;
  auto* train = app.add_subcommand("train", "Centralized training of one model");
  train->add_option("config", config_path, "TOML config")->required()->check(CLI::ExistingFile);
  train->add_option("--set", overrides, "Override a config key: --set train.steps=100");
  train->add_flag("--resume", resume, "Continue from the run's last checkpoint");

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

  // tandem generate --checkpoint F
  tandem::GenerateOptions gen;
  auto* generate = app.add_subcommand("generate", "Text from a prompt");
  generate->add_option("--checkpoint", gen.checkpoint, "Model safetensors")->required()->check(CLI::ExistingFile);
  generate->add_option("--lora", gen.lora, "LoRA adapters safetensors")->check(CLI::ExistingFile);
  generate->add_option("--prompt", gen.prompt, "Text to continue");
  generate->add_option("--max-tokens", gen.max_tokens, "Bytes to generate")->capture_default_str()->check(CLI::Range(1, 1000000));
  generate->add_option("--temperature", gen.temperature, "0 for greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
  generate->add_option("--top-k", gen.top_k, "0 for the whole vocabulary")->capture_default_str()->check(CLI::NonNegativeNumber);
  generate->add_option("--seed", gen.seed, "Sampling seed")->capture_default_str();

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

  CLI11_PARSE(app, argc, argv);

  if (Status s = tandem::SetupLogging(log_level); !s.ok()) return Fail(s);
  tandem::SetComputeThreads(tandem::ComputeThreads());

  if (*train) {
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    auto result = tandem::RunTrain(*config, resume);
    if (!result.ok()) return Fail(result.status());
    std::printf("held-out loss %.4f -> %.4f (test %.4f) after %lld steps in %.1f s, %.0f tokens/s\n"
                "run directory: %s\n",
                result->initial_val_loss, result->final_val_loss, result->final_test_loss,
                static_cast<long long>(result->steps), result->seconds,
                result->tokens_per_second, result->run_dir.c_str());
    return 0;
  }
  if (*eval) {
    auto config = LoadConfig(config_path, overrides);
    if (!config.ok()) return Fail(config.status());
    Status s = tandem::RunEval(*config, checkpoint, lora, max_tokens, exact_match, json_out);
    return s.ok() ? 0 : Fail(s);
  }
  if (*generate) {
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

// `tandem prune CONFIG --checkpoint LLM --to SHAPE`: a smaller dense model cut from a larger one
// by importance (prune/), optionally recovered by distillation from it on the config's public
// data, written with its alignment map (docs/pruning.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/status.h"

namespace tandem {

class Config;

struct PruneOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string checkpoint;  // the parent
  std::string to;          // SHAPE: a preset, a width ratio, or layers=N
  std::string method = "activation";
  std::string out;
  bool global = false;           // rank heads and neurons across blocks (widths then differ)
  int calibration_batches = 8;   // batches of public text the scores are computed on
  int batch = 8;                 // sequences per calibration and recovery batch
  int64_t recover_steps = 0;     // distillation steps after pruning (0: none)
  // Recovery learning rate: 3e-4, since the parent's own peak rate (1e-3 for llm-small) made the
  // first steps of every half-size cut worse (docs/results.md, "Pruning").
  double lr = 3e-4;
  double temperature = 2.0;      // recovery KD temperature
  double alpha = 0.5;            // recovery weight of the text loss (1 - alpha on the KD term)
  int64_t eval_tokens = 16384;   // held-out tokens for the before/after losses (0: skip)
  bool parent_eval = true;       // also measure the parent's held-out loss
  // Recovery steps, in (0, recover_steps), after which the held-out loss is also measured: with
  // a constant learning rate, one recovery of N steps scored at k < N stands for a recovery of k.
  std::vector<int64_t> eval_at;
  std::string json;              // a summary of the cut and every loss, written here if set
  int64_t seed = -1;             // -1: the config's seed
};

// Adds the `prune` subcommand and its flags, filling `options` when parsed.
CLI::App* AddPruneCommand(CLI::App& app, PruneOptions* options);

// Runs it: progress on stderr, a summary on stdout (and in options.json, if set: the parent and
// child shapes and parameters, the kept parent blocks, the scoring and recovery seconds, and the
// held-out losses before and during recovery). Errors say what to fix.
Status RunPrune(const Config& config, const PruneOptions& options);

}  // namespace tandem

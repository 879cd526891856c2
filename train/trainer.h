// Centralized training of one model (`tandem train`): the baseline and the pooled-data upper
// bound that federated runs are compared with. Progress on the terminal, periodic held-out
// evaluation into runs/<name>/metrics.jsonl, atomic checkpoints, and resume.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "core/status.h"
#include "models/adamw.h"
#include "models/lora.h"
#include "models/model_config.h"
#include "train/data_setup.h"

namespace tandem {

class Config;

struct TrainConfig {
  std::string name = "train";
  std::string out_dir = "runs";
  uint64_t seed = 1;
  ModelConfig model;
  std::string init_checkpoint;  // start from these weights instead of a fresh init
  // train.on: "train" (the training split) or "public" (the public split: how the cloud LLM and
  // the SLMs' starting point learn the public categories before a federated run).
  std::string train_on = "train";
  bool use_lora = false;
  LoraConfig lora;
  DataConfig data;
  int batch = 16;
  int64_t steps = 1000;
  double max_seconds = 0;  // > 0: stop early when the wall-clock budget is spent
  int64_t stop_at_step = 0;  // > 0: checkpoint and stop after this step; --resume continues
  LrSchedule schedule;
  AdamWConfig adamw;
  double grad_clip = 1.0;
  int64_t eval_every = 200;
  int64_t eval_tokens = 65536;  // held-out targets per periodic evaluation
  int64_t checkpoint_every = 500;
  int exact_match_per_category = 0;  // > 0: also score the arithmetic task at each evaluation
  int sample_tokens = 0;             // > 0: print this many sampled bytes at the end
  std::string sample_prompt = "";
};

// Reads the keys documented in configs/train-*.toml and rejects unknown ones.
StatusOr<TrainConfig> TrainConfigFromConfig(const Config& config);

struct TrainResult {
  double initial_val_loss = 0.0;
  double final_val_loss = 0.0;
  double final_test_loss = 0.0;
  int64_t steps = 0;
  double seconds = 0.0;
  double tokens_per_second = 0.0;
  std::string run_dir;
};

// Trains; with resume, continues from runs/<name>/checkpoints/train_state.safetensors when it
// exists (bit-for-bit the same as an uninterrupted run with the same seed).
// `progress`: where the live progress line and evaluation notes go (the program's choice; null
// shows nothing).
// The run directory is claimed first (train/run_dir.h): an existing run of the same name is
// refused unless `resume` continues it or `overwrite` clears it.
StatusOr<TrainResult> RunTrain(const Config& config, bool resume, FILE* progress = nullptr,
                               bool overwrite = false);

// The speed benchmark: `steps` full training steps (forward, backward, AdamW) of a fresh model of
// `preset` on random tokens at (batch, context), after `warmup` untimed steps.
// Returns tokens per second.
StatusOr<double> BenchTrainStep(const std::string& preset, int batch, int steps, int warmup);

}  // namespace tandem

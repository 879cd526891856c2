// What the model benchmarks share (speculative_bench, serve_bench): the arithmetic text they
// train on, a small model trained on it in the run, and their command-line helpers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/gpt.h"

namespace tandem::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// "1,2,4,8" -> {1, 2, 4, 8}.
std::vector<int> ParseList(const std::string& s);

// Arithmetic lines of levels 1-3 joined by '\n' (no end-of-text between them, so generation runs
// on): count / 3 of each level, drawn from seed + level.
std::string ArithmeticText(size_t count, uint64_t seed);

// A `preset` model initialised from `seed` and trained `steps` steps (AdamW at 2e-3, batch 8 of
// its context) on ArithmeticText(30000, 1), printing its time and loss; untrained when steps = 0.
std::unique_ptr<Gpt> TrainOnArithmetic(const std::string& preset, int steps, uint64_t seed);

// The benchmarks' cloud and device: the checkpoints given (both paths, or neither), or slm-small
// and slm-micro trained `train_steps` steps on arithmetic (seeds 11 and 12). Prints why and
// returns false when a checkpoint cannot be loaded.
bool LoadOrTrainPair(const std::string& cloud_path, const std::string& draft_path,
                     int train_steps, std::unique_ptr<Gpt>* cloud, std::unique_ptr<Gpt>* device);

}  // namespace tandem::bench

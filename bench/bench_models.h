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

}  // namespace tandem::bench

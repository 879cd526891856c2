// The record a coordinator run leaves in runs/<name>/ (DESIGN.md "Outputs"): metrics.jsonl (one
// JSON object per round, round 0 the starting point), checkpoints/ (the engine's and the
// algorithm's state in coordinator.safetensors, written atomically after every round, and every
// model the algorithm keeps as <name>.safetensors, with its LoRA adapters, if any, beside it as
// <name>.lora.safetensors), and summary.json at the end. Resume reads the
// checkpoint back and drops metrics lines of rounds after it (a resumed run does them again).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coordinator/engine.h"
#include "core/status.h"

namespace tandem {

// What the run log keeps across a restart besides the algorithm's state.
struct RunTotals {
  EngineState engine;
  double elapsed = 0.0;  // seconds of every session of the run
  double initial_val_loss = 0.0;
  uint64_t bytes_up = 0, bytes_down = 0;
  uint64_t aborted = 0;
};

class RunLog {
 public:
  // Creates run_dir/checkpoints. With `resume` and a checkpoint there, loads it into `algorithm`
  // and the totals and trims metrics.jsonl to the rounds before it; otherwise starts metrics.jsonl
  // afresh. `algorithm` is borrowed and must outlive the log.
  static StatusOr<RunLog> Open(const std::string& run_dir, bool resume, ServerAlgorithm* algorithm);

  bool resumed() const { return resumed_; }
  const RunTotals& totals() const { return totals_; }
  // Seconds of the run so far, counting earlier sessions.
  double Elapsed() const;

  // Round 0's line: the starting point's held-out losses.
  Status WriteStart(const std::map<std::string, double>& metrics);
  // A finished (or aborted) round: its line with the running byte totals, then the checkpoint
  // and every model the algorithm keeps. Returns the line as written.
  StatusOr<nlohmann::json> WriteRound(uint64_t round, const std::map<std::string, double>& metrics,
                                      const EngineState& engine);
  Status WriteSummary(const nlohmann::json& summary);

  const std::string& run_dir() const { return run_dir_; }
  std::string checkpoint_dir() const { return run_dir_ + "/checkpoints"; }

 private:
  RunLog(std::string run_dir, ServerAlgorithm* algorithm)
      : run_dir_(std::move(run_dir)), algorithm_(algorithm) {}

  std::string run_dir_;
  ServerAlgorithm* algorithm_;
  RunTotals totals_;
  bool resumed_ = false;
  double started_ = 0.0;  // the monotonic clock when the log was opened
};

// Writes `text` to `path` atomically (a temporary file renamed over it).
Status WriteTextFile(const std::string& path, const std::string& text);

}  // namespace tandem

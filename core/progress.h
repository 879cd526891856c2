// A progress display for long work: step, named values (loss, ...), tokens/s and ETA.
// On a terminal it redraws one line in place; otherwise (a log file, CI) it prints a plain line
// at most every `plain_interval_s` seconds and at the end, so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace tandem {

class Progress {
 public:
  // total_steps may be 0 when unknown (no ETA then). `out` is not owned; null shows nothing.
  Progress(std::string label, int64_t total_steps, FILE* out = stderr,
           double plain_interval_s = 5.0);

  // Reports that `step` steps are done and `tokens` tokens processed since the start.
  void Update(int64_t step, int64_t tokens,
              const std::vector<std::pair<std::string, double>>& values);
  // Prints a plain, permanent line (an evaluation result, say) without breaking the live line.
  void Note(const std::string& line);
  // Ends the live line.
  void Finish();

  bool is_terminal() const { return terminal_; }

 private:
  std::string Render(int64_t step, int64_t tokens,
                     const std::vector<std::pair<std::string, double>>& values) const;

  std::string label_;
  int64_t total_;
  FILE* out_;
  bool terminal_;
  double plain_interval_s_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
  bool live_line_open_ = false;
  std::string last_line_;
};

// "1h02m", "3m07s", "12s".
std::string FormatDuration(double seconds);

}  // namespace tandem

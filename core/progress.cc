#include "core/progress.h"

#include <unistd.h>

#include <cmath>

namespace tandem {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lds", s);
  }
  return buf;
}

Progress::Progress(std::string label, int64_t total_steps, FILE* out, double plain_interval_s)
    : label_(std::move(label)),
      total_(total_steps),
      out_(out),
      terminal_(out != nullptr && isatty(fileno(out)) != 0),
      plain_interval_s_(plain_interval_s),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_ - std::chrono::hours(1)) {}

std::string Progress::Render(int64_t step, int64_t tokens,
                             const std::vector<std::pair<std::string, double>>& values) const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string line = label_;
  char buf[96];
  if (total_ > 0) {
    std::snprintf(buf, sizeof(buf), " step %lld/%lld", static_cast<long long>(step),
                  static_cast<long long>(total_));
  } else {
    std::snprintf(buf, sizeof(buf), " step %lld", static_cast<long long>(step));
  }
  line += buf;
  for (const auto& [name, value] : values) {
    std::snprintf(buf, sizeof(buf), " %s %.4g", name.c_str(), value);
    line += buf;
  }
  if (elapsed > 0 && tokens > 0) {
    std::snprintf(buf, sizeof(buf), " | %.0f tok/s", tokens / elapsed);
    line += buf;
  }
  if (total_ > 0 && step > 0) {
    const double eta = elapsed * (total_ - step) / step;
    line += " | elapsed " + FormatDuration(elapsed) + " eta " + FormatDuration(eta);
  }
  return line;
}

void Progress::Update(int64_t step, int64_t tokens,
                      const std::vector<std::pair<std::string, double>>& values) {
  if (out_ == nullptr) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_print_).count();
  const bool last = total_ > 0 && step >= total_;
  if (terminal_) {
    if (since < 0.1 && !last) return;
    std::string line = Render(step, tokens, values);
    std::fprintf(out_, "\r\033[K%s", line.c_str());
    live_line_open_ = true;
  } else {
    if (since < plain_interval_s_ && !last) return;
    std::fprintf(out_, "%s\n", Render(step, tokens, values).c_str());
  }
  std::fflush(out_);
  last_print_ = now;
}

void Progress::Note(const std::string& line) {
  if (out_ == nullptr) return;
  if (terminal_ && live_line_open_) {
    std::fprintf(out_, "\r\033[K%s\n", line.c_str());
    live_line_open_ = false;
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

void Progress::Finish() {
  if (out_ == nullptr) return;
  if (terminal_ && live_line_open_) std::fprintf(out_, "\n");
  live_line_open_ = false;
  std::fflush(out_);
}

}  // namespace tandem

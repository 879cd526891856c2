// `tandem report`: metrics.jsonl and summary.json to a markdown report with gnuplot curves.
// gnuplot runs as a child process (posix_spawn) on a generated script and a tab-separated copy of
// the metrics, both left beside the report so a user can restyle the plots.
#include "train/report.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/run_dir.h"

extern char** environ;

namespace tandem {
namespace {

namespace fs = std::filesystem;
// ordered_json keeps keys in file order, so columns and the summary follow the writer's order.
using json = nlohmann::ordered_json;

constexpr auto kGnuplotTimeout = std::chrono::seconds(60);

// One numeric cell. Integers print as integers (bytes, counts); the rest with 6 significant
// digits, which is enough to tell losses apart without drowning the table.
struct Cell {
  double value = 0.0;
  std::string text;
};

struct MetricsTable {
  std::string x;                          // "round" or "step"
  std::vector<std::string> columns;       // x first
  std::vector<std::map<std::string, Cell>> rows;
};

std::string FormatDouble(double v, const char* format) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string FormatNumber(const json& j) {
  if (j.is_number_unsigned()) return std::to_string(j.get<uint64_t>());
  if (j.is_number_integer()) return std::to_string(j.get<int64_t>());
  return FormatDouble(j.get<double>(), "%.6g");
}

// A markdown table cell: no pipes or line breaks may leak out of it.
std::string EscapeCell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n') {
      out += "<br>";
    } else if (c != '\r') {
      out += c;
    }
  }
  return out;
}

// gnuplot single-quoted strings have one escape: '' for '.
std::string GnuplotQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

void Flatten(const json& j, const std::string& prefix, std::map<std::string, Cell>* row,
             std::vector<std::string>* appearance) {
  for (const auto& [key, value] : j.items()) {
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (value.is_object()) {
      Flatten(value, name, row, appearance);
    } else if (value.is_number()) {
      if (std::find(appearance->begin(), appearance->end(), name) == appearance->end()) {
        appearance->push_back(name);
      }
      (*row)[name] = Cell{value.get<double>(), FormatNumber(value)};
    }
  }
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The words of a key, split on '_' and '.': "llm_val_loss" -> {llm, val, loss}. Whole words, so
// that "steps" is not taken for "eps".
std::vector<std::string> Words(const std::string& key) {
  std::vector<std::string> words(1);
  for (char c : key) {
    if (c == '_' || c == '.') {
      if (!words.back().empty()) words.emplace_back();
    } else {
      words.back() += c;
    }
  }
  if (words.back().empty()) words.pop_back();
  return words;
}

bool HasWord(const std::vector<std::string>& words, std::initializer_list<const char*> any) {
  for (const auto& w : words) {
    for (const char* a : any) {
      if (w == a) return true;
    }
  }
  return false;
}

// A loss, or one group's loss in a run of several model groups ("val_loss.slm-tiny").
bool IsLossKey(const std::string& key) {
  const std::string k = key.substr(0, key.find('.'));
  return k == "loss" || EndsWith(k, "_loss");
}
bool IsBytesKey(const std::string& k) { return HasWord(Words(k), {"bytes"}); }
// Wall-clock seconds since the run began, as opposed to the duration of one round or phase.
bool IsCumulativeTime(const std::string& k) {
  return k == "time_s" || k == "seconds" || k == "elapsed_s";
}
bool IsTimeKey(const std::string& k) {
  return (EndsWith(k, "_s") && !EndsWith(k, "_per_s")) || k == "seconds" ||
         EndsWith(k, "_seconds");
}

// Column groups in table order: x, losses, accuracies, privacy, other, bytes, time.
int Group(const std::string& k, const std::string& x) {
  if (k == x) return 0;
  const std::vector<std::string> w = Words(k);
  if (HasWord(w, {"loss", "ppl", "perplexity"})) return 1;
  if (HasWord(w, {"acc", "accuracy", "exact", "em"})) return 2;
  if (HasWord(w, {"eps", "epsilon", "delta", "clip", "clipped", "noise", "sigma"})) return 3;
  if (IsBytesKey(k)) return 5;
  if (IsTimeKey(k)) return 6;
  return 4;
}

// Within a group: losses before perplexities, per-round bytes before totals, cumulative time
// before round time before phases.
int SubRank(const std::string& k, int group) {
  switch (group) {
    case 1: return HasWord(Words(k), {"loss"}) ? 0 : 1;
    case 5: return HasWord(Words(k), {"total"}) ? 1 : 0;
    case 6: return IsCumulativeTime(k) ? 0 : k == "round_s" ? 1 : 2;
    default: return 0;
  }
}

// train, then validation, then test, then keys that name no split.
int SplitRank(const std::string& k) {
  const std::vector<std::string> w = Words(k);
  if (HasWord(w, {"train"})) return 0;
  if (HasWord(w, {"val", "valid", "validation"})) return 1;
  if (HasWord(w, {"test"})) return 2;
  return 3;
}

std::vector<std::string> OrderColumns(const std::vector<std::string>& appearance,
                                      const std::string& x) {
  std::vector<std::string> cols = appearance;
  std::stable_sort(cols.begin(), cols.end(), [&](const std::string& a, const std::string& b) {
    const int ga = Group(a, x), gb = Group(b, x);
    if (ga != gb) return ga < gb;
    const int sa = SubRank(a, ga), sb = SubRank(b, gb);
    if (sa != sb) return sa < sb;
    return SplitRank(a) < SplitRank(b);
  });
  return cols;
}

StatusOr<MetricsTable> ReadMetrics(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("no metrics file '" + path + "' (is this a run directory?)");
  MetricsTable table;
  std::vector<std::string> appearance;
  std::vector<int> line_numbers;
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      return Status::InvalidArgument(path + " line " + std::to_string(line_number) +
                                     ": not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) {
      return Status::InvalidArgument(path + " line " + std::to_string(line_number) +
                                     ": not a JSON object");
    }
    std::map<std::string, Cell> row;
    Flatten(j, "", &row, &appearance);
    table.rows.push_back(std::move(row));
    line_numbers.push_back(line_number);
  }
  if (in.bad()) return Status::IoError("cannot read '" + path + "'");
  if (table.rows.empty()) return Status::InvalidArgument("metrics file '" + path + "' is empty");

  auto has = [&](const char* key) {
    return std::find(appearance.begin(), appearance.end(), key) != appearance.end();
  };
  if (has("round")) {
    table.x = "round";
  } else if (has("step")) {
    table.x = "step";
  } else {
    return Status::InvalidArgument("'" + path +
                                   "' has neither a numeric 'round' (federated runs) nor a "
                                   "'step' (centralized runs) key to plot against");
  }
  for (size_t i = 0; i < table.rows.size(); ++i) {
    if (!table.rows[i].count(table.x)) {
      return Status::InvalidArgument(path + " line " + std::to_string(line_numbers[i]) +
                                     ": no numeric '" + table.x + "'");
    }
  }
  table.columns = OrderColumns(appearance, table.x);
  return table;
}

StatusOr<json> ReadSummary(const std::string& path) {
  std::ifstream in(path);
  if (!in) return json();  // optional
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    return Status::InvalidArgument("'" + path + "' is not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) return Status::InvalidArgument("'" + path + "' is not a JSON object");
  return j;
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IoError("cannot write '" + path + "'");
  return Status::Ok();
}

// One PNG: a title, a y label and the columns drawn against x.
struct Plot {
  std::string file;
  std::string title;
  std::string ylabel;
  std::vector<std::string> keys;
  bool engineering = false;  // y tick labels like 1.5M for byte counts
  bool from_zero = false;    // sizes and durations: the y axis starts at 0
};

std::vector<Plot> ChoosePlots(const MetricsTable& t) {
  std::vector<Plot> plots;
  std::vector<std::string> losses, bytes, times;
  for (const auto& k : t.columns) {
    if (k == t.x) continue;
    if (IsLossKey(k)) losses.push_back(k);
    if (IsBytesKey(k) && SubRank(k, 5) == 0) bytes.push_back(k);
    if (Group(k, t.x) == 6 && !IsCumulativeTime(k)) times.push_back(k);
  }
  if (losses.size() > 1) plots.push_back({"loss.png", "losses", "loss", losses});
  for (const auto& k : losses) plots.push_back({k + ".png", k, "loss", {k}});
  if (!bytes.empty()) {
    plots.push_back({"bytes.png", "bytes per " + t.x, "bytes", bytes, /*engineering=*/true,
                     /*from_zero=*/true});
  }
  if (!times.empty()) {
    plots.push_back({"time.png", "time per " + t.x, "seconds", times, false, /*from_zero=*/true});
  }
  return plots;
}

std::string MetricsTsv(const MetricsTable& t) {
  std::string out = "#";
  for (size_t c = 0; c < t.columns.size(); ++c) out += (c ? "\t" : " ") + t.columns[c];
  out += "\n";
  for (const auto& row : t.rows) {
    for (size_t c = 0; c < t.columns.size(); ++c) {
      auto it = row.find(t.columns[c]);
      if (c) out += "\t";
      out += it == row.end() ? "NaN" : FormatDouble(it->second.value, "%.12g");
    }
    out += "\n";
  }
  return out;
}

std::string GnuplotScript(const MetricsTable& t, const std::vector<Plot>& plots,
                          const std::string& out_dir, const std::string& tsv) {
  std::string s =
      "# Written by `tandem report`; re-run with: gnuplot plots.gp\n"
      "set terminal pngcairo size 900,540 noenhanced font ',10'\n"
      "set datafile separator '\\t'\n"
      "set datafile missing 'NaN'\n"  // a missing cell skips the point; the line connects across
      "set grid\n"
      "set key outside right top\n"
      "set autoscale xfix\n"  // x ends at the first and last round, not at the next tic
      "set offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05\n"
      "set xlabel " + GnuplotQuote(t.x) + "\n";
  for (const auto& p : plots) {
    s += "set output " + GnuplotQuote((fs::path(out_dir) / p.file).string()) + "\n";
    s += "set title " + GnuplotQuote(p.title) + "\n";
    s += "set ylabel " + GnuplotQuote(p.ylabel) + "\n";
    s += p.engineering ? "set format y '%.2s%c'\n" : "set format y '% g'\n";
    s += p.from_zero ? "set yrange [0:*]\n" : "set yrange [*:*]\n";
    s += "plot ";
    for (size_t i = 0; i < p.keys.size(); ++i) {
      const size_t col =
          std::find(t.columns.begin(), t.columns.end(), p.keys[i]) - t.columns.begin() + 1;
      s += (i ? ", \\\n     " : "") + (i ? std::string("''") : GnuplotQuote(tsv)) +
           " using 1:" + std::to_string(col) + " with linespoints pointsize 0.6 title " +
           GnuplotQuote(p.keys[i]);
    }
    s += "\nunset output\n";
  }
  return s;
}

StatusOr<std::string> FindOnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0 && !fs::is_directory(candidate)) return candidate;
  }
  return Status::FailedPrecondition(
      program + " not found on PATH: install Debian's gnuplot-nox (scripts/install-deps.sh "
                "does) or make the report without plots");
}

std::string Tail(const std::string& path, size_t max_chars) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > max_chars) s = "..." + s.substr(s.size() - max_chars);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Runs `gnuplot SCRIPT` with stdin from /dev/null and stdout and stderr to LOG; a failure
// carries the end of the log so the user sees gnuplot's own complaint.
Status RunGnuplot(const std::string& gnuplot, const std::string& script, const std::string& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<std::string> args = {"gnuplot", script};
  std::vector<char*> argv = {args[0].data(), args[1].data(), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, gnuplot.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return Status::Internal("cannot start '" + gnuplot + "': " + std::strerror(rc));
  }
  const auto deadline = std::chrono::steady_clock::now() + kGnuplotTimeout;
  int wstatus = 0;
  for (;;) {
    const pid_t done = ::waitpid(pid, &wstatus, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) {
      return Status::Internal(std::string("waiting for gnuplot: ") + std::strerror(errno));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &wstatus, 0);
      return Status::Internal("gnuplot did not finish within 60 s; killed (script " + script +
                              ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    const std::string how = WIFEXITED(wstatus)
                                ? "exit " + std::to_string(WEXITSTATUS(wstatus))
                                : "killed by signal " + std::to_string(WTERMSIG(wstatus));
    return Status::Internal("gnuplot failed on " + script + " (" + how + "): " + Tail(log, 600));
  }
  return Status::Ok();
}

std::string SummaryMarkdown(const json& summary) {
  std::string md = "## Summary\n\n| key | value |\n|---|---|\n";
  for (const auto& [key, value] : summary.items()) {
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
    } else if (value.is_number()) {
      text = FormatNumber(value);
    } else if (!value.is_null()) {
      text = value.dump();
    }
    md += "| " + EscapeCell(key) + " | " + EscapeCell(text) + " |\n";
  }
  return md + "\n";
}

std::string MetricsMarkdown(const MetricsTable& t) {
  std::string md = "## Metrics\n\n" + std::to_string(t.rows.size()) + " line" +
                   (t.rows.size() == 1 ? "" : "s") + " of metrics.jsonl, one row each; x is `" +
                   t.x + "`.\n\n|";
  for (const auto& c : t.columns) md.append(" ").append(EscapeCell(c)).append(" |");
  md += "\n|";
  for (size_t c = 0; c < t.columns.size(); ++c) md += "---:|";
  md += "\n";
  for (const auto& row : t.rows) {
    md += "|";
    for (const auto& c : t.columns) {
      auto it = row.find(c);
      if (it != row.end()) md.append(" ").append(it->second.text);
      md += " |";  // a line without this key: a blank cell
    }
    md += "\n";
  }
  return md + "\n";
}

}  // namespace

StatusOr<std::string> RunReport(const std::string& run_dir, const ReportOptions& options) {
  const fs::path run(run_dir);
  TANDEM_ASSIGN_OR_RETURN(MetricsTable table, ReadMetrics((run / "metrics.jsonl").string()));
  TANDEM_ASSIGN_OR_RETURN(json summary, ReadSummary((run / "summary.json").string()));

  std::string gnuplot;
  if (options.plots) {
    // Before anything is written: a missing gnuplot should not leave a half-made report.
    TANDEM_ASSIGN_OR_RETURN(gnuplot, FindOnPath("gnuplot"));
  }
  const std::string out_dir =
      options.out_dir.empty() ? (run / "report").string() : options.out_dir;
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return Status::IoError("cannot create directory '" + out_dir + "': " + ec.message());

  std::string name = run.filename().string();
  if (name.empty()) name = run.parent_path().filename().string();  // "runs/x/"
  if (summary.is_object() && summary.contains("name") && summary["name"].is_string()) {
    name = summary["name"].get<std::string>();
  }
  std::string md = "# Report: " + EscapeCell(name) + "\n\nRun directory: `" + run_dir + "`\n\n";
  // What the run ran: its tandem version and the data it read (run.json).
  const std::vector<std::string> record = DescribeRunRecord(run_dir);
  for (const std::string& line : record) md += "- " + line + "\n";
  if (!record.empty()) md += "\n";
  if (summary.is_object()) md += SummaryMarkdown(summary);
  md += MetricsMarkdown(table);

  if (options.plots) {
    const std::vector<Plot> plots = ChoosePlots(table);
    // Absolute paths in the script, so plots.gp can be re-run from any directory.
    const fs::path abs_out = fs::absolute(out_dir, ec);
    if (ec) return Status::IoError("cannot resolve '" + out_dir + "': " + ec.message());
    const std::string tsv = (abs_out / "metrics.tsv").string();
    const std::string script = (abs_out / "plots.gp").string();
    TANDEM_RETURN_IF_ERROR(WriteText(tsv, MetricsTsv(table)));
    if (!plots.empty()) {
      TANDEM_RETURN_IF_ERROR(
          WriteText(script, GnuplotScript(table, plots, abs_out.string(), tsv)));
      const std::string log = (fs::path(out_dir) / "gnuplot.log").string();
      TANDEM_RETURN_IF_ERROR(RunGnuplot(gnuplot, script, log));
      fs::remove(log, ec);  // kept only when gnuplot failed
      md += "## Plots\n\n";
      for (const auto& p : plots) {
        if (!fs::exists(fs::path(out_dir) / p.file)) {
          return Status::Internal("gnuplot exited cleanly but did not write " + p.file);
        }
        md += "![" + p.title + "](" + p.file + ")\n\n";
      }
    }
  }
  TANDEM_RETURN_IF_ERROR(WriteText((fs::path(out_dir) / "report.md").string(), md));
  return md;
}

}  // namespace tandem

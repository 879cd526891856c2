// `tandem report RUN_DIR`: a markdown table and PNG curves from a run's metrics.jsonl (one JSON
// object per line, written by the coordinator per round or by `tandem train` per evaluation) and
// its summary.json. Plots are drawn by gnuplot (Debian's gnuplot-nox) run as a child process.
#pragma once

#include <string>

#include "core/status.h"

namespace tandem {

struct ReportOptions {
  std::string out_dir;  // "" = RUN_DIR/report; created if missing
  bool plots = true;    // false: only report.md, gnuplot is not needed
};

// Reads RUN_DIR/metrics.jsonl and, when present, RUN_DIR/summary.json, and writes into OUT:
//   report.md     summary.json as a key/value table, then one table row per metrics line;
// and, with plots:
//   metrics.tsv   the same columns, tab-separated, "NaN" for a missing cell (gnuplot's input);
//   plots.gp      the gnuplot script (absolute paths), kept so a user can restyle and re-run it;
//   <key>.png     one plot per *_loss key against x; loss.png with every *_loss key when there
//                 are several; bytes.png (bytes_up, bytes_down per round); time.png (round_s and
//                 the other per-round phase timings *_s). A plot whose keys never appear is
//                 skipped. Images are linked from report.md. gnuplot.log is left only when
//                 gnuplot fails.
// x is "round" when any line has it (federated runs), else "step" (`tandem train` runs); every
// line must then carry x. Columns are the numeric keys that appear in any line: x, losses and
// perplexities, accuracies, privacy (eps, clip, noise), other counters, bytes, timings; within a
// group train before val before test, then order of first appearance. Nested objects are
// flattened as parent.child ({"exact_match":{"add":0.5}} gives exact_match.add); strings,
// booleans, arrays and nulls are ignored. A key a line lacks is a blank cell.
// Returns the markdown written to report.md.
// Errors: NotFound for a missing metrics.jsonl; InvalidArgument for one with no lines, a line that
// is not a JSON object (the message names the line number), no x key, a line without x, or a
// malformed summary.json; FailedPrecondition when plots are asked for and gnuplot is not on PATH;
// Internal when gnuplot fails or runs over 60 s; IoError when OUT cannot be written.
// Thread-safety: independent calls with different output directories may run concurrently.
StatusOr<std::string> RunReport(const std::string& run_dir, const ReportOptions& options);

}  // namespace tandem

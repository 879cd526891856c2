// A run directory (runs/<name>/) is the record of one run. It is claimed before anything is
// written into it: a lock file (flock on runs/<name>/.lock, held for the life of the process)
// keeps two processes out of one run, and a directory that already holds a run is refused unless
// the caller resumes it or asks to overwrite it. Shared by `tandem train`, `tandem coordinator` and
// `tandem run`'s coordinator; clients write only their logs and take no lock.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"

namespace tandem {

class Config;

struct RunDirOptions {
  bool resume = false;     // continue the run there (it must not be complete)
  bool overwrite = false;  // replace what is there (everything but .lock and keys/) once the run begins
};

// Holds a claimed run directory's lock; the lock is released when the last claim of the
// directory in this process is destroyed. Movable, not copyable.
class RunDirClaim {
 public:
  RunDirClaim() = default;
  ~RunDirClaim();
  RunDirClaim(RunDirClaim&& other) noexcept : key_(std::move(other.key_)) { other.key_.clear(); }
  RunDirClaim& operator=(RunDirClaim&& other) noexcept;
  RunDirClaim(const RunDirClaim&) = delete;
  RunDirClaim& operator=(const RunDirClaim&) = delete;

 private:
  friend StatusOr<RunDirClaim> ClaimRunDirectory(const std::string&, const RunDirOptions&);
  std::string key_;  // the directory's canonical path; empty: holds nothing
};

// Creates `run_dir`, takes its lock and checks it against `options`:
// - fresh start, the directory holds a run (config.toml, metrics.jsonl, summary.json, run.json or
//   checkpoints/): FailedPrecondition naming --resume and --overwrite; leftovers of a start that
//   never began (coordinator.log, logs/, report/) are cleared;
// - overwrite: everything but `.lock` and `keys/` (CURVE keys a cluster may have handed out),
//   report/ and logs included, is moved aside into `.replaced/`; WriteRunRecord, when the new run
//   has begun, deletes it, and a start that fails before then (its last claim released, or its
//   process killed and the directory claimed again) puts it back, so an earlier run is replaced
//   only by a run that really started;
// - resume, the run's summary.json says it is complete: FailedPrecondition "run X is complete
//   (...); nothing to do", and nothing is changed.
// Another process holding the lock is a FailedPrecondition naming it. While this process holds a
// claim on the directory, another claim succeeds at once without the checks (the program claims
// before it opens its log, the library again when the run starts). Thread-safe.
StatusOr<RunDirClaim> ClaimRunDirectory(const std::string& run_dir, const RunDirOptions& options);

// Whether `run_dir` holds the record of a run (see above).
bool HoldsRun(const std::string& run_dir);

// The record of what a run ran, written once it has really started (which also discards a run
// that --overwrite set aside):
// - config.resolved.toml: Config::ResolvedToml(), the config with every default it used;
// - run.json: {"tandem_version", "data": {"source", "files", "sha256"}, "sessions": [{"started",
//   "tandem_version", "data_sha256", "resumed"}]}. A resumed run keeps its first session's version
//   and data and appends a session, so a run continued by another build or on other data says so.
Status WriteRunRecord(const std::string& run_dir, const Config& config,
                      const CorpusFingerprint& data, bool resumed);

// run.json of `run_dir` as lines for a person ("tandem version ...", "data ... sha256 ..."), or
// empty when there is none.
std::vector<std::string> DescribeRunRecord(const std::string& run_dir);

// The tandem version this binary was built from (`git describe --always --dirty` at configure
// time, "unknown" outside a git checkout).
const char* TandemVersion();

}  // namespace tandem

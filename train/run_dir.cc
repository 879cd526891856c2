// Claiming a run directory; see train/run_dir.h.
#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "models/safetensors.h"

#ifndef TANDEM_VERSION
#define TANDEM_VERSION "unknown"
#endif

namespace tandem {
namespace {

namespace fs = std::filesystem;

// What makes a directory the record of a run. Logs and a report alone are what a start that
// failed before the run began leaves behind.
constexpr const char* kRecordFiles[] = {"config.toml", "metrics.jsonl", "summary.json", "run.json",
                                        "checkpoints"};
// Never cleared: the lock itself, and CURVE keys (federation.keys_dir defaults to run_dir/keys)
// that a cluster's clients may already hold copies of.
constexpr const char* kKept[] = {".lock", "keys"};
// Where --overwrite moves an earlier run until the new one has begun (WriteRunRecord): a start
// that fails before then puts it back, so only a run that really started replaces another.
constexpr const char* kReplaced = ".replaced";

std::mutex& HeldMutex() {
  static std::mutex m;
  return m;
}
struct HeldDirectory {
  int fd = -1;     // the lock file, locked
  int claims = 0;  // live RunDirClaims
  pid_t owner = 0;  // a forked child inherits the map but not the claim
  std::string path;  // the run directory as claimed
};
// Directories this process holds, by canonical path.
std::map<std::string, HeldDirectory>& Held() {
  static std::map<std::string, HeldDirectory> held;
  return held;
}

bool Kept(const std::string& name) {
  bool keep = name == kReplaced;
  for (const char* k : kKept) keep = keep || name == k;
  return keep;
}

Status ClearRunDirectory(const std::string& run_dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (Kept(name)) continue;
    std::error_code rm;
    fs::remove_all(entry.path(), rm);
    if (rm) return Status::IoError("cannot remove '" + entry.path().string() + "': " + rm.message());
  }
  if (ec) return Status::IoError("cannot list '" + run_dir + "': " + ec.message());
  return Status::Ok();
}

// --overwrite: moves everything but the kept entries into run_dir/.replaced.
Status SetAsideRunDirectory(const std::string& run_dir) {
  const fs::path aside = fs::path(run_dir) / kReplaced;
  std::error_code ec;
  fs::create_directories(aside, ec);
  if (ec) return Status::IoError("cannot create '" + aside.string() + "': " + ec.message());
  for (const auto& entry : fs::directory_iterator(run_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (Kept(name)) continue;
    std::error_code mv;
    fs::rename(entry.path(), aside / name, mv);
    if (mv) return Status::IoError("cannot move '" + entry.path().string() + "' aside: " + mv.message());
  }
  if (ec) return Status::IoError("cannot list '" + run_dir + "': " + ec.message());
  return Status::Ok();
}

// Puts a run set aside by --overwrite back, replacing what a start that never began left there.
// Best effort: called from destructors and before a new claim.
void RestoreSetAside(const std::string& run_dir) {
  const fs::path aside = fs::path(run_dir) / kReplaced;
  std::error_code ec;
  if (!fs::is_directory(aside, ec)) return;
  if (!ClearRunDirectory(run_dir).ok()) return;
  for (const auto& entry : fs::directory_iterator(aside, ec)) {
    std::error_code mv;
    fs::rename(entry.path(), fs::path(run_dir) / entry.path().filename(), mv);
    if (mv) return;  // leave the rest in .replaced rather than lose it
  }
  fs::remove(aside, ec);
}

void Release(const std::string& key) {
  if (key.empty()) return;
  std::lock_guard<std::mutex> guard(HeldMutex());
  auto it = Held().find(key);
  if (it == Held().end() || --it->second.claims > 0) return;
  RestoreSetAside(it->second.path);  // a start that never began replaces nothing
  ::close(it->second.fd);  // releases the lock
  Held().erase(it);
}

nlohmann::json ReadSummary(const std::string& run_dir) {
  std::ifstream in(run_dir + "/summary.json");
  if (!in) return nullptr;
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
}

// A summary says "complete": true when the run did all it was configured to do (or stopped at
// its privacy budget); a run stopped early to be resumed (train.stop_at_step) says false.
bool SummarySaysComplete(const std::string& run_dir) {
  nlohmann::json j = ReadSummary(run_dir);
  return j.is_object() && j.contains("complete") && j["complete"].is_boolean() &&
         j["complete"].get<bool>();
}

// "5 of 5 rounds", "stopped: ..." — what summary.json says about how the run ended.
std::string HowItEnded(const std::string& run_dir) {
  nlohmann::json j = ReadSummary(run_dir);
  if (j.is_discarded() || !j.is_object()) return "it has a summary.json";
  std::string how;
  for (const char* unit : {"rounds", "steps"}) {
    if (j.contains(unit) && j[unit].is_number_integer()) {
      const std::string n = std::to_string(j[unit].get<int64_t>());
      how = n + " of " + n + " " + unit;
    }
  }
  if (j.contains("stopped") && j["stopped"].is_string()) {
    how += (how.empty() ? "" : "; ") + std::string("stopped: ") + j["stopped"].get<std::string>();
  }
  return how.empty() ? "it has a summary.json" : how;
}

}  // namespace

bool HoldsRun(const std::string& run_dir) {
  std::error_code ec;
  for (const char* f : kRecordFiles) {
    if (fs::exists(run_dir + "/" + f, ec)) return true;
  }
  return false;
}

RunDirClaim::~RunDirClaim() { Release(key_); }

RunDirClaim& RunDirClaim::operator=(RunDirClaim&& other) noexcept {
  if (this != &other) {
    Release(key_);
    key_ = std::move(other.key_);
    other.key_.clear();
  }
  return *this;
}

StatusOr<RunDirClaim> ClaimRunDirectory(const std::string& run_dir,
                                        const RunDirOptions& options) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) return Status::IoError("cannot create run directory '" + run_dir + "': " + ec.message());
  RunDirClaim claim;
  const std::string key = fs::weakly_canonical(run_dir, ec).string();
  std::lock_guard<std::mutex> guard(HeldMutex());
  if (auto it = Held().find(key); it != Held().end() && it->second.owner != ::getpid()) {
    Held().erase(it);  // the parent's, inherited by fork: its lock is not this process's
  }
  if (auto it = Held().find(key); it != Held().end()) {
    ++it->second.claims;
    claim.key_ = key;
    return claim;
  }

  const std::string lock_path = run_dir + "/.lock";
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError("cannot open '" + lock_path + "': " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {0};
    (void)!::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      std::string holder(pid);
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      return Status::FailedPrecondition(
          "run directory " + run_dir + " is in use by another tandem process" +
          (holder.empty() ? "" : " (pid " + holder + ")") +
          "; two runs cannot share one name (set another `name`)");
    }
    return Status::IoError("cannot lock '" + lock_path + "': " + std::strerror(err));
  }
  auto give_up = [&](Status s) -> StatusOr<RunDirClaim> {
    ::close(fd);  // releases the lock
    return s;
  };
  const std::string name = fs::path(run_dir).filename().string();
  // An earlier --overwrite whose process died before its run began: the run it set aside is
  // still the directory's record.
  RestoreSetAside(run_dir);
  if (options.resume && !options.overwrite) {
    if (SummarySaysComplete(run_dir)) {
      return give_up(Status::FailedPrecondition("run " + name + " is complete (" +
                                                HowItEnded(run_dir) + "); nothing to do (" +
                                                run_dir + " is left as it is)"));
    }
  } else if (options.overwrite) {
    if (Status s = SetAsideRunDirectory(run_dir); !s.ok()) {
      RestoreSetAside(run_dir);
      return give_up(s);
    }
  } else if (HoldsRun(run_dir)) {
    return give_up(Status::FailedPrecondition(
        run_dir + " already holds a run; pass --resume to continue it, --overwrite to replace "
        "it, or set another `name`"));
  } else {
    // Leftovers of a start that failed before its run began.
    if (Status s = ClearRunDirectory(run_dir); !s.ok()) return give_up(s);
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, pid.data(), pid.size(), 0);
  Held()[key] = {fd, 1, ::getpid(), run_dir};
  claim.key_ = key;
  return claim;
}

Status WriteRunRecord(const std::string& run_dir, const Config& config,
                      const CorpusFingerprint& data, bool resumed) {
  // The run has begun: a run that --overwrite set aside is replaced for good.
  std::error_code ec;
  fs::remove_all(fs::path(run_dir) / kReplaced, ec);
  if (ec) return Status::IoError("cannot remove '" + run_dir + "/" + kReplaced + "': " + ec.message());
  const std::string resolved = config.ResolvedToml();
  TANDEM_RETURN_IF_ERROR(WriteFileAtomic(run_dir + "/config.resolved.toml",
                                         std::vector<uint8_t>(resolved.begin(), resolved.end())));
  const std::string path = run_dir + "/run.json";
  nlohmann::json record;
  if (resumed) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    record = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (record.is_discarded() || !record.is_object()) record = nlohmann::json::object();
  }
  if (!record.contains("tandem_version")) {
    record["tandem_version"] = TandemVersion();
    record["data"] = {{"source", data.source}, {"files", data.files}, {"sha256", data.sha256}};
    record["sessions"] = nlohmann::json::array();
  }
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char started[32];
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  record["sessions"].push_back({{"started", started},
                                {"tandem_version", TandemVersion()},
                                {"data_sha256", data.sha256},
                                {"resumed", resumed}});
  const std::string text = record.dump(2) + "\n";
  return WriteFileAtomic(path, std::vector<uint8_t>(text.begin(), text.end()));
}

std::vector<std::string> DescribeRunRecord(const std::string& run_dir) {
  std::ifstream in(run_dir + "/run.json");
  if (!in) return {};
  std::stringstream text;
  text << in.rdbuf();
  auto j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return {run_dir + "/run.json does not parse"};
  std::vector<std::string> lines;
  lines.push_back("tandem version " + j.value("tandem_version", std::string("unknown")));
  if (j.contains("data") && j["data"].is_object()) {
    const auto& d = j["data"];
    const size_t files = d.contains("files") && d["files"].is_array() ? d["files"].size() : 0;
    lines.push_back("data " + d.value("source", std::string("?")) + " (" +
                    std::to_string(files) + " file" + (files == 1 ? "" : "s") + "), sha256 " +
                    d.value("sha256", std::string("?")));
  }
  if (j.contains("sessions") && j["sessions"].is_array()) {
    for (const auto& s : j["sessions"]) {
      if (!s.is_object()) continue;
      if (s.value("tandem_version", std::string()) != j.value("tandem_version", std::string())) {
        lines.push_back("a session started " + s.value("started", std::string("?")) +
                        " ran tandem " + s.value("tandem_version", std::string("?")));
      }
      if (j.contains("data") && s.value("data_sha256", std::string()) !=
                                    j["data"].value("sha256", std::string())) {
        lines.push_back("a session started " + s.value("started", std::string("?")) +
                        " saw other data (sha256 " + s.value("data_sha256", std::string("?")) +
                        ")");
      }
    }
  }
  return lines;
}

const char* TandemVersion() { return TANDEM_VERSION; }

}  // namespace tandem

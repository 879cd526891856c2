// The run log; see coordinator/run_log.h.
#include "coordinator/run_log.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

constexpr char kStateFormat[] = "tandem-coordinator-state";

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Status AppendLine(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << '\n';
  out.flush();
  if (!out) return Status::IoError("cannot append to '" + path + "'");
  return Status::Ok();
}

// Keeps the lines of rounds before `next_round`: a line written after the last checkpoint
// belongs to a round that the resumed run will do again.
Status TrimMetrics(const std::string& path, uint64_t next_round) {
  std::ifstream in(path);
  if (!in) return Status::Ok();
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("round") || !j["round"].is_number_unsigned()) continue;
    if (j["round"].get<uint64_t>() < next_round) kept += line + "\n";
  }
  return WriteTextFile(path, kept);
}

Status SaveCheckpoint(const std::string& dir, const ServerAlgorithm& algorithm,
                      const RunTotals& c) {
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> meta;
  algorithm.SaveState(&tensors, &meta);
  for (const char* key : {"format", "next_round", "next_task_id", "rng", "elapsed",
                          "initial_val_loss", "bytes_up", "bytes_down", "aborted"}) {
    if (meta.count(key)) return Status::Internal(std::string("algorithm metadata uses ") + key);
  }
  meta["format"] = kStateFormat;
  meta["next_round"] = std::to_string(c.engine.next_round);
  meta["next_task_id"] = std::to_string(c.engine.next_task_id);
  meta["rng"] = c.engine.rng_state;
  std::ostringstream elapsed, initial;
  elapsed.precision(17);
  initial.precision(17);
  elapsed << c.elapsed;
  initial << c.initial_val_loss;
  meta["elapsed"] = elapsed.str();
  meta["initial_val_loss"] = initial.str();
  meta["bytes_up"] = std::to_string(c.bytes_up);
  meta["bytes_down"] = std::to_string(c.bytes_down);
  meta["aborted"] = std::to_string(c.aborted);
  std::vector<TensorToWrite> out;
  for (const auto& [name, values] : tensors) {
    out.push_back({name, DType::kF32, {static_cast<int64_t>(values.size())}, values.data()});
  }
  const std::string path = dir + "/coordinator.safetensors";
  TANDEM_RETURN_IF_ERROR(WriteSafetensors(path, out, meta));
  // The state may hold the coordinator's own secrets (central noise's key): owner only.
  std::error_code ec;
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace,
                  ec);
  if (ec) return Status::IoError("cannot restrict '" + path + "': " + ec.message());
  return Status::Ok();
}

Status LoadCheckpoint(const std::string& path, ServerAlgorithm* algorithm, RunTotals* c) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  auto meta = [&](const std::string& k) { return RequireMetadata(file, k, path); };
  TANDEM_ASSIGN_OR_RETURN(std::string format, meta("format"));
  if (format != kStateFormat) {
    return Status::Corruption(path + ": not a coordinator checkpoint (format " + format + ")");
  }
  std::map<std::string, std::vector<float>> tensors;
  for (const auto& [name, t] : file.tensors) {
    if (t.dtype != DType::kF32) return Status::Corruption(path + ": tensor " + name + " not F32");
    std::vector<float> v(t.elements());
    std::memcpy(v.data(), t.bytes.data(), v.size() * sizeof(float));
    tensors[name] = std::move(v);
  }
  try {
    TANDEM_ASSIGN_OR_RETURN(std::string s, meta("next_round"));
    c->engine.next_round = std::stoull(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("next_task_id"));
    c->engine.next_task_id = std::stoull(s);
    TANDEM_ASSIGN_OR_RETURN(c->engine.rng_state, meta("rng"));
    TANDEM_ASSIGN_OR_RETURN(s, meta("elapsed"));
    c->elapsed = std::stod(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("initial_val_loss"));
    c->initial_val_loss = s == "nan" ? std::nan("") : std::stod(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("bytes_up"));
    c->bytes_up = std::stoull(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("bytes_down"));
    c->bytes_down = std::stoull(s);
    TANDEM_ASSIGN_OR_RETURN(s, meta("aborted"));
    c->aborted = std::stoull(s);
  } catch (const std::exception&) {
    return Status::Corruption(path + ": a number in the metadata does not parse");
  }
  return algorithm->LoadState(tensors, file.metadata);
}

}  // namespace

Status WriteTextFile(const std::string& path, const std::string& text) {
  return WriteFileAtomic(path, std::vector<uint8_t>(text.begin(), text.end()));
}

StatusOr<RunLog> RunLog::Open(const std::string& run_dir, bool resume,
                              ServerAlgorithm* algorithm) {
  RunLog log(run_dir, algorithm);
  log.started_ = Now();
  const std::string ckpt_dir = log.checkpoint_dir();
  std::error_code ec;
  fs::create_directories(ckpt_dir, ec);
  if (ec) return Status::IoError("cannot create '" + ckpt_dir + "': " + ec.message());
  const std::string state_path = ckpt_dir + "/coordinator.safetensors";
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  log.totals_.initial_val_loss = std::nan("");
  if (resume && fs::exists(state_path)) {
    TANDEM_RETURN_IF_ERROR(LoadCheckpoint(state_path, algorithm, &log.totals_));
    TANDEM_RETURN_IF_ERROR(TrimMetrics(metrics_path, log.totals_.engine.next_round));
    log.resumed_ = true;
  } else {
    fs::remove(metrics_path, ec);
  }
  return log;
}

double RunLog::Elapsed() const { return totals_.elapsed + (Now() - started_); }

Status RunLog::WriteStart(const std::map<std::string, double>& metrics) {
  nlohmann::json line = {{"round", 0}, {"time_s", Elapsed()}};
  for (const auto& [k, v] : metrics) line[k] = v;
  if (metrics.count("val_loss")) totals_.initial_val_loss = metrics.at("val_loss");
  return AppendLine(run_dir_ + "/metrics.jsonl", line.dump());
}

StatusOr<nlohmann::json> RunLog::WriteRound(uint64_t round,
                                            const std::map<std::string, double>& metrics,
                                            const EngineState& engine) {
  nlohmann::json line = {{"round", round}, {"time_s", Elapsed()}};
  for (const auto& [k, v] : metrics) line[k] = v;
  totals_.bytes_up += static_cast<uint64_t>(metrics.at("bytes_up"));
  totals_.bytes_down += static_cast<uint64_t>(metrics.at("bytes_down"));
  line["bytes_up_total"] = totals_.bytes_up;
  line["bytes_down_total"] = totals_.bytes_down;
  if (metrics.count("aborted")) ++totals_.aborted;
  TANDEM_RETURN_IF_ERROR(AppendLine(run_dir_ + "/metrics.jsonl", line.dump()));
  totals_.engine = engine;
  totals_.elapsed = Elapsed();
  started_ = Now();
  const std::string dir = checkpoint_dir();
  TANDEM_RETURN_IF_ERROR(SaveCheckpoint(dir, *algorithm_, totals_));
  for (const RunModel& m : algorithm_->Models()) {
    TANDEM_RETURN_IF_ERROR(SaveGpt(dir + "/" + m.name + ".safetensors", *m.model));
    // Adapters go beside their base, as a file `tandem eval|generate --lora` takes.
    if (m.model->has_lora()) {
      TANDEM_RETURN_IF_ERROR(SaveLora(dir + "/" + m.name + ".lora.safetensors", *m.model));
    }
  }
  return line;
}

Status RunLog::WriteSummary(const nlohmann::json& summary) {
  return WriteTextFile(run_dir_ + "/summary.json", summary.dump(2) + "\n");
}

}  // namespace tandem

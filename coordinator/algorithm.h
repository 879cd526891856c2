// The coordinator half of an algorithm (DESIGN.md "Algorithms"): the interface the round engine
// drives, the tasks it hands out, and what an algorithm declares so that the runtime — engine,
// run log, checkpoints, privacy wrapper, grouping — never has to name it. Flower's Strategy is
// the model: a small object with a fixed life cycle, plugged into a runtime that asks it what it
// needs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/split.h"
#include "models/model_config.h"
#include "wire/message.h"

namespace tandem {

class Config;
class Gpt;

// A model the run keeps: written every round as checkpoints/<name>.safetensors (a file any
// `tandem eval`, `generate` or `--checkpoint` accepts), and, when it is a headline model, scored
// on the held-out split at round 0 and on the test split at the end (several headline models:
// each is reported as <key>.<suffix> and the run's figure is their mean).
struct RunModel {
  std::string name;       // file stem: "model", "llm", "model.slm-tiny"
  Gpt* model = nullptr;  // owned by the half; evaluating runs a forward pass on it
  bool headline = false;
  std::string suffix;     // of its metrics when there are several headline models ("slm-tiny")
  int eval_batch = 16;    // windows per evaluation batch at round 0 (as its half evaluates it)
};

// A connected client as the engine sees it.
struct ClientInfo {
  std::string name;  // the identity from the authenticated channel, e.g. "client-3"
  int index = -1;    // K of "client-K", or -1 for another name
  std::vector<std::string> capabilities;
};

// What a task's results contribute (DESIGN.md "contributions"): the float tensor `tensor` of
// `length` values, with the result's weight. With the privacy pipeline on, such a task's results
// never reach the algorithm one by one: it gets their weighted mean through OnAggregate().
struct ContributionSpec {
  std::string tensor;
  size_t length = 0;
};

// The privacy pipeline's answer for a contribution task: the mean of the contributions that made
// it (under DP: the noised sum over the expected cohort size; under secure aggregation alone: the
// weighted mean of the survivors).
struct Aggregate {
  std::vector<float> mean;
  size_t count = 0;           // contributions in the sum
  double total_weight = 0.0;  // their summed weight (the cohort size the sum is divided by, under DP)
};

// One task of a round: the same kind, parameters and payload go to every cohort member (an
// algorithm may adjust a member's copy in ServerAlgorithm::Customize).
struct TaskSpec {
  std::string kind;
  wire::Params params;
  std::vector<wire::Tensor> tensors;
  // When set, the task goes only to these of the previous task's members (secure aggregation's
  // steps go to the previous step's survivors); otherwise to all of them.
  std::optional<std::vector<std::string>> members;
  // Set when the results are contributions the privacy pipeline must protect.
  std::optional<ContributionSpec> contribution;
};

// How a task ended, for the algorithm's OnTaskClosed.
struct TaskReport {
  uint64_t task_id = 0;
  std::string kind;
  std::vector<std::string> assigned;   // cohort members the task went to
  std::vector<std::string> responded;  // whose results were accepted, in arrival order
  size_t failed = 0;    // lost, refused the task, or could not be reached
  size_t rejected = 0;  // results that failed validation (they changed nothing)
  double seconds = 0.0;
};

// A contribution task's result folded in as its upload arrives, its values before the rest of
// the result (docs/protocol.md "Streamed contributions"). Made by ServerAlgorithm::StreamResult
// and driven by the engine, from the engine's thread, until Finish succeeds or Abandon is called;
// it must not outlive the task it was made for.
class ResultStream {
 public:
  virtual ~ResultStream() = default;
  // The contribution's next values, starting at value `offset` (which must be folded()). An error
  // folds nothing.
  virtual Status Add(size_t offset, std::span<const float> values) = 0;
  // Values folded so far.
  virtual size_t folded() const = 0;
  // The rest of the result, once every value is in: its contribution tensor carries name, dtype
  // and shape but no data. Checks what OnResult would check besides the values, then counts the
  // result. On an error the result is not counted and the engine abandons the stream.
  virtual Status Finish(const wire::TaskResult& rest) = 0;
  // Gives up. Values already folded cannot be taken out again: when folded() > 0 the task's
  // aggregate is void (the engine then aborts the round); otherwise nothing changed.
  virtual void Abandon() = 0;
};

// The server half of an algorithm (FedAvg, distillation, secure-aggregation steps...). The engine
// calls it from one thread, in this order per round: BeginRound, then for each task OnResult* and
// OnTaskClosed (which returns the round's next task or none), then EndRound; AbortRound instead of
// EndRound when a task could not reach its min_results in time.
class ServerAlgorithm {
 public:
  virtual ~ServerAlgorithm() = default;
  virtual std::string name() const = 0;
  // Task kinds a client must offer to be chosen for a cohort.
  virtual std::vector<std::string> RequiredCapabilities() const = 0;
  // The first task of round `round` for `cohort`.
  virtual StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) = 0;
  // A cohort member's copy of the task, before it is sent; only called when CustomizesTasks().
  // Otherwise every member gets the same message, sent as one broadcast.
  virtual bool CustomizesTasks() const { return false; }
  virtual void Customize(const ClientInfo& client, wire::TaskAssign* assign) {}
  // Validates one result and folds it in. An error rejects the result and must leave the
  // algorithm's state exactly as it was.
  virtual Status OnResult(const ClientInfo& client, const wire::TaskResult& result) = 0;
  // A member offers the open contribution task's result before its values arrive, declaring its
  // weight and number of values. A stream to fold the values into as they arrive, or nullptr to
  // take the result whole through OnResult (the default: an algorithm that needs the whole
  // upload, e.g. the privacy pipeline's clipping, keeps it). An error refuses the stream only: the
  // upload then comes whole and OnResult judges it.
  virtual StatusOr<std::unique_ptr<ResultStream>> StreamResult(const ClientInfo& client,
                                                               double weight, size_t values) {
    return std::unique_ptr<ResultStream>();
  }
  // The task closed with enough results. Takes the server-side step when the round is over and
  // returns nullopt, or returns the round's next task.
  virtual StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) = 0;
  // The round could not complete: forget its partial state; the model stays as it was.
  virtual void AbortRound() = 0;
  // After the round's last task: evaluation and the algorithm's numbers for the metrics line.
  virtual Status EndRound(uint64_t round, std::map<std::string, double>* metrics) = 0;
  // After EndRound or AbortRound: numbers every round's line carries, completed or not (ε spent).
  virtual void AddRoundMetrics(std::map<std::string, double>* metrics) {}
  // With the privacy pipeline on: the aggregate of a contribution task's results, delivered
  // before that task's OnTaskClosed (whose report then lists the contributors). An error
  // rejects the aggregate and aborts the round.
  virtual Status OnAggregate(const Aggregate& aggregate) {
    return Status::FailedPrecondition(name() + " does not take aggregated contributions");
  }
  // Asked before each round starts: a reason to end the run here (a privacy budget that the next
  // round would exceed), or nullopt to go on. The run then ends normally, saying why.
  virtual std::optional<std::string> StopBeforeRound(uint64_t round) { return std::nullopt; }
  // Everything needed to continue bit for bit: float tensors and string metadata.
  virtual void SaveState(std::map<std::string, std::vector<float>>* tensors,
                         std::map<std::string, std::string>* metadata) const = 0;
  virtual Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                           const std::map<std::string, std::string>& metadata) = 0;

  // --- What the runtime asks of the algorithm ------------------------------------------------
  // The models this half keeps (RunModel): checkpointed every round, the headline ones scored.
  virtual std::vector<RunModel> Models() const { return {}; }
  // Why the privacy pipeline cannot wrap this half as configured — it needs every client's
  // upload (the pipeline reveals only their mean), or reports something in the clear, or uploads
  // nothing to protect — or nullopt when it can.
  virtual std::optional<std::string> PrivacyConflict() const { return std::nullopt; }
};


// What a LoadState reads of the state its SaveState wrote, with the errors every half gives: a
// missing entry is Corruption ("checkpoint lacks KEY"), one that names something other than
// what the run's config builds is FailedPrecondition (the checkpoint belongs to another run).
StatusOr<std::string> SavedValue(const std::map<std::string, std::string>& metadata,
                                 const std::string& key);
// `key` holds `expected`: "checkpoint holds WHAT <saved>, the config asks for <expected>".
Status ExpectSavedValue(const std::map<std::string, std::string>& metadata, const std::string& key,
                        const std::string& expected, const std::string& what);
// The tensor `name`, of exactly `size` values (the model's or the state's size).
StatusOr<const std::vector<float>*> SavedTensor(
    const std::map<std::string, std::vector<float>>& tensors, const std::string& name,
    size_t size);

// What an algorithm declares about itself to the coordinator runtime, beyond its tasks (which
// declare their contributions in TaskSpec::contribution).
struct AlgorithmTraits {
  // It averages weights: clients of several architectures (federation.client_models) are run as
  // same-architecture groups, one coordinator half per group (coordinator/grouped_server.h).
  // Algorithms that move only predictions take every architecture in one half.
  bool averages_weights = false;
};

// What a run's coordinator halves share (clients of several architectures: one half per group):
// models loaded once (a teacher every group distils from, an LLM every group trains) and any
// other object built once (the teacher's targets of the round). Owned by the runtime; outlives
// every half. Not thread-safe: halves run on the engine's thread.
class SharedObjects {
 public:
  // The model at `path` (a safetensors checkpoint), loaded on first use. `key` names the config
  // key that gave the path, for errors. `trained_as`: when not empty, some half trains the model,
  // and the runtime saves and evaluates it once for all of them under that name ("llm").
  StatusOr<std::shared_ptr<Gpt>> LoadModel(const std::string& key, const std::string& path,
                                           const std::string& trained_as = "");
  // The object under `key`, made by `make` on first use.
  template <typename T>
  std::shared_ptr<T> Object(const std::string& key, const std::function<std::shared_ptr<T>()>& make) {
    auto it = objects_.find(key);
    if (it == objects_.end()) it = objects_.emplace(key, make()).first;
    return std::static_pointer_cast<T>(it->second);
  }
  // The trained shared models, by the name they are saved under.
  const std::map<std::string, std::shared_ptr<Gpt>>& trained() const { return trained_; }

 private:
  std::map<std::string, std::shared_ptr<Gpt>> models_;  // by path
  std::map<std::string, std::shared_ptr<Gpt>> trained_;
  std::map<std::string, std::shared_ptr<void>> objects_;
};

// What the runtime hands an algorithm when it builds a coordinator half.
struct ServerContext {
  const Config* config = nullptr;  // the run's config: the algorithm reads its own section
  uint64_t seed = 1;
  const DatasetSplits* splits = nullptr;
  ModelConfig model;              // the clients' architecture (the group's, when grouped)
  std::string init_checkpoint;    // where the clients' model starts; "" = fresh from the seed
  // federation.client_models: client K runs client_models[K % size]; empty when all run
  // `model`. Set for a group too (the groups share what depends on every architecture, such as
  // windows as long as the shortest context).
  std::vector<ModelConfig> client_models;
  bool privacy = false;           // the privacy pipeline will wrap this half
  std::string group;              // the group's name ("slm-tiny") when grouped; "" otherwise
  SharedObjects* shared = nullptr;
};

// An algorithm's coordinator half as the runtime knows it: a name, its traits, the keys its
// client half reads from the shared config (so the coordinator does not call them unknown), and
// how to build it. Registered by name in algorithms/registry.h.
struct ServerPlugin {
  std::string name;
  // Its traits under a config (an algorithm's own keys may change them); read before any half
  // is built.
  std::function<StatusOr<AlgorithmTraits>(const Config&)> traits;
  std::vector<std::string> client_keys;
  // Config sections this algorithm's keys used to live in: a key there is an error that names its
  // new home, "<name>.<key>".
  std::vector<std::string> moved_sections;
  // Reads and checks the algorithm's own config section, then builds the half. Called once per
  // group when grouped, else once.
  std::function<StatusOr<std::unique_ptr<class ServerAlgorithm>>(const ServerContext&)> create;
};

}  // namespace tandem

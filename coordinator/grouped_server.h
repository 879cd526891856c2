// Same-architecture groups for heterogeneous clients (`federation.client_models` under an
// algorithm that averages weights): the clients of one architecture form a group, each group has its own
// global model and server half, and weights are averaged only among a group's members. One
// GroupedServer wraps one inner ServerAlgorithm per group and splits every task between them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/engine.h"
#include "data/corpus.h"
#include "models/gpt.h"
#include "models/model_config.h"

namespace tandem {

// The groups of a `federation.client_models` list: the distinct architectures in order of first
// appearance. Client K sits at list position K % size.
struct ClientGroups {
  std::vector<int> group_of_position;  // position -> group
  std::vector<size_t> first_position;  // group -> the position where it first appears
};
ClientGroups GroupClientModels(const std::vector<ModelConfig>& client_models);

// One group: a name and the server half that trains its model, built as for a run of that
// architecture alone.
struct ServerGroup {
  std::string name;  // the preset ("slm-tiny"): the suffix of its metrics, and in logs
  std::unique_ptr<ServerAlgorithm> server;
};

// State the groups share besides the round (one LLM that every group's SLM distils from and
// into): saved once, outside the groups' prefixes (its names must not begin with
// "group"), and evaluated once per completed round, after every group's EndRound.
class GroupShared {
 public:
  virtual ~GroupShared() = default;
  virtual Status EndRound(uint64_t round, std::map<std::string, double>* metrics) = 0;
  virtual void SaveState(std::map<std::string, std::vector<float>>* tensors,
                         std::map<std::string, std::string>* metadata) const = 0;
  // An error must leave the state as it was.
  virtual Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                           const std::map<std::string, std::string>& metadata) = 0;
  // The shared models the run keeps (ServerAlgorithm::Models).
  virtual std::vector<RunModel> Models() const { return {}; }
};

// A model every group uses, the groups' servers holding the same std::shared_ptr (a cloud LLM,
// which they then neither save nor evaluate): saved as "<name>.params",
// reported as "<name>_val_loss" on `validation` (eval_tokens of it; nothing when it is empty).
class SharedModelState : public GroupShared {
 public:
  SharedModelState(std::string name, std::shared_ptr<Gpt> model, std::vector<Record> validation,
                   int64_t eval_tokens);
  Status EndRound(uint64_t round, std::map<std::string, double>* metrics) override;
  void SaveState(std::map<std::string, std::vector<float>>* tensors,
                 std::map<std::string, std::string>* metadata) const override;
  Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                   const std::map<std::string, std::string>& metadata) override;
  std::vector<RunModel> Models() const override {
    return {{name_, model_.get(), false, "", 16}};
  }

 private:
  std::string name_;
  std::shared_ptr<Gpt> model_;
  std::vector<Record> validation_;
  int64_t eval_tokens_;
};

// Every task is split by group: each group taking part gets its own sub-cohort, its own spec (sent
// to each member through Customize) and its own sub-report; the kinds of the groups' tasks must
// agree (they are one algorithm). A group none of whose members answered a task is aborted for
// the rest of the round and keeps its model; the others go on.
//
// Clients are placed by their index K (names "client-K"): group group_of_position[K % size]. A
// client of another name cannot be placed: it is left out of every task (the merged spec lists
// the members, so the engine never sends it one; a round whose min_results counted on it aborts)
// and its results are rejected.
//
// Metrics: each group's EndRound numbers as "<key>.<group name>" ("val_loss.slm-tiny"), plus, for
// each group in the cohort, "cohort.<group name>" (its members) and "results.<group name>" (its
// accepted results over the round's tasks). Each key also appears once without a suffix, merged
// over the groups that reported it: the maximum for "*_max", the sum for other "*_s" (server-side
// work the groups do one after another), exp of the merged "*_loss" for "*_ppl", the unweighted
// mean for everything else ("val_loss" is the mean of the groups' held-out losses). Then
// GroupShared's numbers, unsuffixed. A group that sat out the round reports nothing, so the
// merged numbers of such a round cover fewer groups.
//
// Privacy: the pipeline sums one contribution vector over the whole cohort, and the groups'
// vectors differ in length, so OnAggregate fails; the merged spec marks no contribution, and the
// coordinator refuses [privacy] with client_models for these algorithms.
//
// State: each group's tensors and metadata under "group<g>/", the group count and names in
// metadata "groups" and "group_names", the shared state unprefixed. LoadState refuses a
// checkpoint of another group count or names, and leaves the state unchanged on any error.
//
// Thread-safety: none; the engine calls it from one thread.
class GroupedServer : public ServerAlgorithm {
 public:
  // `groups` non-empty with distinct names and the same required capabilities; every value of
  // `group_of_position` a group, every group in it.
  static StatusOr<std::unique_ptr<GroupedServer>> Create(
      std::vector<ServerGroup> groups, std::vector<int> group_of_position,
      std::unique_ptr<GroupShared> shared = nullptr);

  std::string name() const override { return groups_[0].server->name(); }
  std::vector<std::string> RequiredCapabilities() const override;
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override;
  bool CustomizesTasks() const override { return true; }
  void Customize(const ClientInfo& client, wire::TaskAssign* assign) override;
  Status OnResult(const ClientInfo& client, const wire::TaskResult& result) override;
  StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) override;
  void AbortRound() override;
  Status EndRound(uint64_t round, std::map<std::string, double>* metrics) override;
  void AddRoundMetrics(std::map<std::string, double>* metrics) override;
  Status OnAggregate(const Aggregate& aggregate) override;
  std::optional<std::string> StopBeforeRound(uint64_t round) override;
  void SaveState(std::map<std::string, std::vector<float>>* tensors,
                 std::map<std::string, std::string>* metadata) const override;
  Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                   const std::map<std::string, std::string>& metadata) override;

  // Each group's models as "<name>.<group>" (model.slm-tiny), its headline ones suffixed with the
  // group's name, then the shared ones.
  std::vector<RunModel> Models() const override;

  size_t group_count() const { return groups_.size(); }
  const std::string& group_name(size_t g) const { return groups_[g].name; }
  ServerAlgorithm& group(size_t g) { return *groups_[g].server; }
  // The group of client index K, or -1 for a client that cannot be placed (K < 0).
  int GroupOf(int client_index) const;

 private:
  GroupedServer(std::vector<ServerGroup> groups, std::vector<int> group_of_position,
                std::unique_ptr<GroupShared> shared);
  int GroupOfName(const std::string& name) const;
  // The groups' specs of one task as the one spec the engine sends: their kind, members the union
  // of each group's (its spec's, or else `members[g]`), and nothing else: Customize fills in each
  // member's group's params and tensors.
  StatusOr<TaskSpec> Merge(std::vector<std::optional<TaskSpec>> specs,
                           const std::vector<std::vector<std::string>>& members);
  Status LoadUnchecked(const std::map<std::string, std::vector<float>>& tensors,
                       const std::map<std::string, std::string>& metadata);
  void ResetRound();

  std::vector<ServerGroup> groups_;
  std::vector<int> group_of_position_;
  std::unique_ptr<GroupShared> shared_;

  // The round in progress.
  uint64_t round_ = 0;
  std::vector<bool> active_;                    // taking part in the open task
  std::vector<std::optional<TaskSpec>> specs_;  // each active group's spec of the open task
  std::vector<size_t> rejected_;                // results the group refused in the open task
  std::vector<size_t> cohort_;                  // the group's members in the round's cohort
  std::vector<size_t> results_;                 // results the group accepted this round
};

}  // namespace tandem

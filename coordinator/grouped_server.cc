// Same-architecture groups for heterogeneous clients; see coordinator/grouped_server.h.
#include "coordinator/grouped_server.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/logging.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string GroupPrefix(size_t g) { return "group" + std::to_string(g) + "/"; }

std::string JoinNames(const std::vector<ServerGroup>& groups) {
  std::string out;
  for (const auto& g : groups) out += (out.empty() ? "" : ",") + g.name;
  return out;
}

// Each group's numbers with the group's suffix, and every key once without one, merged over the
// groups that reported it (the rules are in the header).
void MergeGroupMetrics(const std::vector<std::map<std::string, double>>& per_group,
                       const std::vector<ServerGroup>& groups,
                       std::map<std::string, double>* metrics) {
  std::map<std::string, std::vector<double>> values;
  for (size_t g = 0; g < per_group.size(); ++g) {
    for (const auto& [key, value] : per_group[g]) {
      (*metrics)[key + "." + groups[g].name] = value;
      values[key].push_back(value);
    }
  }
  for (const auto& [key, v] : values) {
    double merged = 0.0;
    if (EndsWith(key, "_max")) {
      merged = *std::max_element(v.begin(), v.end());
    } else if (EndsWith(key, "_s")) {
      for (double x : v) merged += x;
    } else {
      for (double x : v) merged += x;
      merged /= static_cast<double>(v.size());
    }
    (*metrics)[key] = merged;
  }
  // A perplexity is that of the merged loss, not the mean of the groups' perplexities.
  for (const auto& [key, v] : values) {
    if (!EndsWith(key, "_ppl")) continue;
    auto loss = metrics->find(key.substr(0, key.size() - 4) + "_loss");
    if (loss != metrics->end()) (*metrics)[key] = std::exp(loss->second);
  }
}

// The entries of `in` whose names begin with `prefix`, without it.
template <typename T>
std::map<std::string, T> Unprefixed(const std::map<std::string, T>& in, const std::string& prefix) {
  std::map<std::string, T> out;
  for (auto it = in.lower_bound(prefix); it != in.end() && it->first.rfind(prefix, 0) == 0; ++it) {
    out.emplace(it->first.substr(prefix.size()), it->second);
  }
  return out;
}

}  // namespace

ClientGroups GroupClientModels(const std::vector<ModelConfig>& client_models) {
  ClientGroups out;
  std::vector<ModelConfig> seen;
  for (size_t p = 0; p < client_models.size(); ++p) {
    auto it = std::find(seen.begin(), seen.end(), client_models[p]);
    if (it == seen.end()) {
      out.group_of_position.push_back(static_cast<int>(seen.size()));
      out.first_position.push_back(p);
      seen.push_back(client_models[p]);
    } else {
      out.group_of_position.push_back(static_cast<int>(it - seen.begin()));
    }
  }
  return out;
}

// ---- SharedModelState ----

SharedModelState::SharedModelState(std::string name, std::shared_ptr<Gpt> model,
                                   std::vector<Record> validation, int64_t eval_tokens)
    : name_(std::move(name)), model_(std::move(model)), validation_(std::move(validation)),
      eval_tokens_(eval_tokens) {}

Status SharedModelState::EndRound(uint64_t, std::map<std::string, double>* metrics) {
  TANDEM_ASSIGN_OR_RETURN(double loss, HeldOutLoss(*model_, validation_, 8, eval_tokens_));
  if (std::isfinite(loss)) (*metrics)[name_ + "_val_loss"] = loss;
  return Status::Ok();
}

void SharedModelState::SaveState(std::map<std::string, std::vector<float>>* tensors,
                                 std::map<std::string, std::string>* metadata) const {
  const auto p = model_->params();
  (*tensors)[name_ + ".params"] = std::vector<float>(p.begin(), p.end());
  (*metadata)[name_ + ".model"] = model_->config().ToString();
}

Status SharedModelState::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                                   const std::map<std::string, std::string>& metadata) {
  TANDEM_RETURN_IF_ERROR(ExpectSavedValue(metadata, name_ + ".model", model_->config().ToString(),
                                          "the shared " + name_));
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float>* params,
                          SavedTensor(tensors, name_ + ".params", model_->params().size()));
  std::copy(params->begin(), params->end(), model_->params().begin());
  return Status::Ok();
}

// ---- GroupedServer ----

StatusOr<std::unique_ptr<GroupedServer>> GroupedServer::Create(
    std::vector<ServerGroup> groups, std::vector<int> group_of_position,
    std::unique_ptr<GroupShared> shared) {
  if (groups.empty()) return Status::InvalidArgument("a grouped server needs at least one group");
  std::set<std::string> names;
  for (const auto& g : groups) {
    if (g.server == nullptr) return Status::InvalidArgument("group " + g.name + " has no server");
    if (g.name.empty() || !names.insert(g.name).second) {
      return Status::InvalidArgument("group names must be distinct and not empty: " +
                                     JoinNames(groups));
    }
    if (g.server->RequiredCapabilities() != groups[0].server->RequiredCapabilities()) {
      return Status::InvalidArgument("groups " + groups[0].name + " and " + g.name +
                                     " ask clients for different tasks");
    }
  }
  if (group_of_position.empty()) {
    return Status::InvalidArgument("a grouped server needs the group of every list position");
  }
  std::vector<bool> used(groups.size(), false);
  for (int g : group_of_position) {
    if (g < 0 || static_cast<size_t>(g) >= groups.size()) {
      return Status::InvalidArgument("list position in group " + std::to_string(g) + " of " +
                                     std::to_string(groups.size()));
    }
    used[g] = true;
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    if (!used[g]) return Status::InvalidArgument("group " + groups[g].name + " has no clients");
  }
  return std::unique_ptr<GroupedServer>(
      new GroupedServer(std::move(groups), std::move(group_of_position), std::move(shared)));
}

GroupedServer::GroupedServer(std::vector<ServerGroup> groups, std::vector<int> group_of_position,
                             std::unique_ptr<GroupShared> shared)
    : groups_(std::move(groups)), group_of_position_(std::move(group_of_position)),
      shared_(std::move(shared)) {
  ResetRound();
}

void GroupedServer::ResetRound() {
  const size_t n = groups_.size();
  active_.assign(n, false);
  specs_.assign(n, std::nullopt);
  rejected_.assign(n, 0);
  cohort_.assign(n, 0);
  results_.assign(n, 0);
}

int GroupedServer::GroupOf(int client_index) const {
  if (client_index < 0) return -1;
  return group_of_position_[static_cast<size_t>(client_index) % group_of_position_.size()];
}

int GroupedServer::GroupOfName(const std::string& name) const {
  return GroupOf(ClientIndexFromName(name));
}

std::vector<std::string> GroupedServer::RequiredCapabilities() const {
  return groups_[0].server->RequiredCapabilities();  // every group's, checked in Create
}

StatusOr<TaskSpec> GroupedServer::Merge(std::vector<std::optional<TaskSpec>> specs,
                                        const std::vector<std::vector<std::string>>& members) {
  TaskSpec merged;
  bool first = true;
  std::vector<std::string> all;
  for (size_t g = 0; g < specs.size(); ++g) {
    if (!specs[g]) continue;
    if (first) {
      merged.kind = specs[g]->kind;
      first = false;
    } else if (specs[g]->kind != merged.kind) {
      return Status::Internal("groups " + groups_[g].name + " and others asked for tasks of "
                              "different kinds (" + specs[g]->kind + ", " + merged.kind + ")");
    }
    const std::vector<std::string>& m = specs[g]->members ? *specs[g]->members : members[g];
    all.insert(all.end(), m.begin(), m.end());
  }
  if (first) return Status::Internal("no group has a task");
  // Always explicit: a client that is in no group is never sent a task.
  merged.members = std::move(all);
  specs_ = std::move(specs);
  std::fill(rejected_.begin(), rejected_.end(), 0);
  return merged;
}

StatusOr<TaskSpec> GroupedServer::BeginRound(uint64_t round,
                                             const std::vector<ClientInfo>& cohort) {
  auto log = GetLogger("coordinator");
  ResetRound();
  round_ = round;
  std::vector<std::vector<ClientInfo>> sub(groups_.size());
  std::vector<std::vector<std::string>> members(groups_.size());
  for (const ClientInfo& c : cohort) {
    const int g = GroupOf(c.index);
    if (g < 0) {
      log->warn("round {}: client {} is not named client-K, so its architecture group is "
                "unknown: it is left out of the round", round, c.name);
      continue;
    }
    sub[g].push_back(c);
    members[g].push_back(c.name);
  }
  std::vector<std::optional<TaskSpec>> specs(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    cohort_[g] = sub[g].size();
    if (sub[g].empty()) continue;
    StatusOr<TaskSpec> spec = groups_[g].server->BeginRound(round, sub[g]);
    if (!spec.ok()) {
      for (size_t h = 0; h < g; ++h) {
        if (active_[h]) groups_[h].server->AbortRound();
      }
      ResetRound();
      return spec.status().WithContext("group " + groups_[g].name);
    }
    specs[g] = std::move(spec).value();
    active_[g] = true;
  }
  if (std::none_of(active_.begin(), active_.end(), [](bool a) { return a; })) {
    // Nobody to send a task to: the engine closes it at once with no results and aborts the
    // round, and the run goes on.
    TaskSpec nobody;
    nobody.kind = RequiredCapabilities().front();
    nobody.members.emplace();
    return nobody;
  }
  StatusOr<TaskSpec> merged = Merge(std::move(specs), members);
  if (!merged.ok()) AbortRound();
  return merged;
}

void GroupedServer::Customize(const ClientInfo& client, wire::TaskAssign* assign) {
  const int g = GroupOf(client.index);
  // Merge lists only placed members of active groups; anyone else keeps the merged spec's empty
  // task, which a client refuses.
  if (g < 0 || !active_[g] || !specs_[g]) return;
  const TaskSpec& spec = *specs_[g];
  assign->params = spec.params;
  assign->tensors = spec.tensors;
  if (groups_[g].server->CustomizesTasks()) groups_[g].server->Customize(client, assign);
}

Status GroupedServer::OnResult(const ClientInfo& client, const wire::TaskResult& result) {
  const int g = GroupOf(client.index);
  if (g < 0) {
    return Status::InvalidArgument("client " + client.name + " is in no architecture group");
  }
  if (!active_[g]) {
    return Status::FailedPrecondition("group " + groups_[g].name + " has no task open");
  }
  Status s = groups_[g].server->OnResult(client, result);
  if (s.ok()) {
    ++results_[g];
  } else {
    ++rejected_[g];
  }
  return s;
}

StatusOr<std::optional<TaskSpec>> GroupedServer::OnTaskClosed(const TaskReport& report) {
  auto log = GetLogger("coordinator");
  const size_t n = groups_.size();
  std::vector<std::vector<std::string>> assigned(n), responded(n);
  for (const auto& name : report.assigned) {
    if (const int g = GroupOfName(name); g >= 0) assigned[g].push_back(name);
  }
  for (const auto& name : report.responded) {
    if (const int g = GroupOfName(name); g >= 0) responded[g].push_back(name);
  }
  bool any = false;
  for (size_t g = 0; g < n; ++g) {
    if (!active_[g]) continue;
    if (responded[g].empty()) {
      // Its model stays as it was; the other groups go on.
      log->warn("round {}: no client of group {} answered task {}; the group sits out the rest "
                "of the round, its model unchanged", round_, groups_[g].name, report.task_id);
      groups_[g].server->AbortRound();
      active_[g] = false;
      specs_[g].reset();
      continue;
    }
    any = true;
  }
  if (!any) {
    return Status::FailedPrecondition("task " + std::to_string(report.task_id) +
                                      " got no result from any architecture group");
  }
  std::vector<std::optional<TaskSpec>> next(n);
  bool some_next = false, some_done = false;
  for (size_t g = 0; g < n; ++g) {
    if (!active_[g]) continue;
    TaskReport sub;
    sub.task_id = report.task_id;
    sub.kind = report.kind;
    sub.assigned = assigned[g];
    sub.responded = responded[g];
    sub.rejected = rejected_[g];
    const size_t answered = sub.responded.size() + sub.rejected;
    sub.failed = sub.assigned.size() > answered ? sub.assigned.size() - answered : 0;
    sub.seconds = report.seconds;
    // Groups take their server-side steps one after another (a model they share, such as one
    // LLM that every group's SLM distils from and into, is stepped by one group at a time).
    StatusOr<std::optional<TaskSpec>> r = groups_[g].server->OnTaskClosed(sub);
    if (!r.ok()) return r.status().WithContext("group " + groups_[g].name);
    (r->has_value() ? some_next : some_done) = true;
    next[g] = std::move(*r);
  }
  if (some_next && some_done) {
    return Status::Internal("after task " + std::to_string(report.task_id) +
                            " some groups ended the round and others asked for another task");
  }
  if (some_done) return std::optional<TaskSpec>();
  TANDEM_ASSIGN_OR_RETURN(TaskSpec merged, Merge(std::move(next), responded));
  return std::optional<TaskSpec>(std::move(merged));
}

void GroupedServer::AbortRound() {
  for (auto& g : groups_) g.server->AbortRound();
  ResetRound();
}

Status GroupedServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  std::vector<std::map<std::string, double>> per_group(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (!active_[g]) continue;
    Status s = groups_[g].server->EndRound(round, &per_group[g]);
    if (!s.ok()) return s.WithContext("group " + groups_[g].name);
  }
  MergeGroupMetrics(per_group, groups_, metrics);
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (cohort_[g] == 0) continue;
    (*metrics)["cohort." + groups_[g].name] = static_cast<double>(cohort_[g]);
    (*metrics)["results." + groups_[g].name] = static_cast<double>(results_[g]);
  }
  if (shared_) TANDEM_RETURN_IF_ERROR(shared_->EndRound(round, metrics));
  return Status::Ok();
}

void GroupedServer::AddRoundMetrics(std::map<std::string, double>* metrics) {
  std::vector<std::map<std::string, double>> per_group(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) groups_[g].server->AddRoundMetrics(&per_group[g]);
  MergeGroupMetrics(per_group, groups_, metrics);
}

Status GroupedServer::OnAggregate(const Aggregate&) {
  return Status::FailedPrecondition(
      "architecture groups (federation.client_models) cannot take one aggregate over the whole "
      "cohort: each group's contributions have their own length");
}

std::optional<std::string> GroupedServer::StopBeforeRound(uint64_t round) {
  for (auto& g : groups_) {
    if (std::optional<std::string> why = g.server->StopBeforeRound(round)) {
      return "group " + g.name + ": " + *why;
    }
  }
  return std::nullopt;
}

void GroupedServer::SaveState(std::map<std::string, std::vector<float>>* tensors,
                              std::map<std::string, std::string>* metadata) const {
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::map<std::string, std::vector<float>> t;
    std::map<std::string, std::string> m;
    groups_[g].server->SaveState(&t, &m);
    const std::string prefix = GroupPrefix(g);
    for (auto& [name, values] : t) (*tensors)[prefix + name] = std::move(values);
    for (auto& [key, value] : m) (*metadata)[prefix + key] = std::move(value);
  }
  (*metadata)["groups"] = std::to_string(groups_.size());
  (*metadata)["group_names"] = JoinNames(groups_);
  if (shared_) shared_->SaveState(tensors, metadata);
}

Status GroupedServer::LoadState(const std::map<std::string, std::vector<float>>& tensors,
                                const std::map<std::string, std::string>& metadata) {
  auto count = metadata.find("groups");
  if (count == metadata.end() || count->second != std::to_string(groups_.size())) {
    return Status::FailedPrecondition(
        "the checkpoint holds " +
        (count == metadata.end() ? std::string("no architecture groups") : count->second +
                                                                              " architecture groups") +
        ", the config (federation.client_models) makes " + std::to_string(groups_.size()));
  }
  auto names = metadata.find("group_names");
  if (names == metadata.end() || names->second != JoinNames(groups_)) {
    return Status::FailedPrecondition(
        "the checkpoint's architecture groups are " +
        (names == metadata.end() ? std::string("unnamed") : names->second) +
        ", the config's (federation.client_models) " + JoinNames(groups_));
  }
  // A group that fails to load must not leave the groups before it loaded: keep what was here.
  std::map<std::string, std::vector<float>> before_tensors;
  std::map<std::string, std::string> before_metadata;
  SaveState(&before_tensors, &before_metadata);
  Status s = LoadUnchecked(tensors, metadata);
  if (!s.ok()) {
    Status restored = LoadUnchecked(before_tensors, before_metadata);
    TANDEM_CHECK(restored.ok());
  }
  return s;
}

Status GroupedServer::LoadUnchecked(const std::map<std::string, std::vector<float>>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
  for (size_t g = 0; g < groups_.size(); ++g) {
    const std::string prefix = GroupPrefix(g);
    Status s = groups_[g].server->LoadState(Unprefixed(tensors, prefix),
                                            Unprefixed(metadata, prefix));
    if (!s.ok()) return s.WithContext("group " + groups_[g].name);
  }
  if (shared_) TANDEM_RETURN_IF_ERROR(shared_->LoadState(tensors, metadata));
  return Status::Ok();
}

std::vector<RunModel> GroupedServer::Models() const {
  std::vector<RunModel> models;
  for (const ServerGroup& g : groups_) {
    for (RunModel m : g.server->Models()) {
      m.name += "." + g.name;
      m.suffix = g.name;
      models.push_back(std::move(m));
    }
  }
  if (shared_) {
    for (RunModel m : shared_->Models()) models.push_back(std::move(m));
  }
  return models;
}

}  // namespace tandem

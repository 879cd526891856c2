// route-gapg's task; see algorithms/route_gapg/tasks.h.
#include "algorithms/route_gapg/tasks.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <sstream>

#include "client/task_params.h"
#include "data/arithmetic.h"

namespace tandem {
namespace {

std::string JoinLevels(const std::vector<int>& levels) {
  std::string out;
  for (int l : levels) out += (out.empty() ? "" : ",") + std::to_string(l);
  return out;
}

StatusOr<std::vector<int>> ParseLevels(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1 || v > kArithmeticMaxLevel) {
      return Status::InvalidArgument("route.levels: '" + text + "' is not a list of levels 1.." +
                                     std::to_string(kArithmeticMaxLevel));
    }
    out.push_back(static_cast<int>(v));
  }
  if (out.empty()) return Status::InvalidArgument("route.levels is empty");
  return out;
}

// The first operand's value: the prompt's leading digits (operands are non-negative).
int FirstOperand(const std::string& prompt) {
  int v = 0;
  for (char c : prompt) {
    if (c < '0' || c > '9') break;
    v = v * 10 + (c - '0');
  }
  return v;
}

// The first operator's character: the one after the leading digits (operands are non-negative).
char FirstOperator(const std::string& prompt) {
  for (char c : prompt) {
    if (c < '0' || c > '9') return c;
  }
  return '\0';
}

}  // namespace

std::string RouteGapgOperators(const std::vector<int>& levels) {
  std::string out;
  for (int level : levels) {
    auto spec = GetArithmeticLevel(level);
    if (!spec.ok()) continue;
    for (char op : spec->operators) {
      if (out.find(op) == std::string::npos) out += op;
    }
  }
  return out;
}

StatusOr<int> RouteGapgPartCount(const std::string& split, const std::vector<int>& levels,
                                 int64_t operand_parts, int clients) {
  if (split != "operand" && operand_parts != 0) {
    return Status::InvalidArgument("route-gapg.operand_parts applies to split = \"operand\"");
  }
  if (split == "level") return static_cast<int>(levels.size());
  if (split == "operator") return static_cast<int>(RouteGapgOperators(levels).size());
  if (split == "operand") return operand_parts > 0 ? static_cast<int>(operand_parts) : clients;
  return Status::InvalidArgument("route-gapg.split: unknown split '" + split +
                                 "' (known: level, operand, operator)");
}

void RouteGapgTrainTask::Encode(wire::Params* params) const {
  auto& p = *params;
  p["route.levels"] = JoinLevels(levels);
  p["route.examples_per_level"] = examples_per_level;
  p["route.test_fraction"] = test_fraction;
  p["route.task_data_seed"] = static_cast<int64_t>(task_data_seed);
  p["route.task_data_examples_per_level"] = task_data_examples_per_level;
  p["route.seed"] = static_cast<int64_t>(seed);
  p["route.split"] = split;
  p["route.parts"] = static_cast<int64_t>(parts);
  p["route.part"] = static_cast<int64_t>(part);
  p["route.client"] = static_cast<int64_t>(client);
  p["route.budget"] = budget;
  p["route.trainable"] = trainable;
  p["route.mode"] = mode;
  p["route.local_steps"] = local_steps;
  p["route.lr"] = lr;
  p["route.group_size"] = static_cast<int64_t>(group_size);
  p["route.prompts_per_step"] = static_cast<int64_t>(prompts_per_step);
  p["route.temperature"] = temperature;
  p["route.max_tokens"] = static_cast<int64_t>(max_tokens);
  p["route.answer_correct"] = answer_correct;
  p["route.handoff_correct"] = handoff_correct;
  p["route.rho"] = rho;
  p["route.warm_start_steps"] = warm_start_steps;
  p["route.warm_start_handoff_fraction"] = warm_start_handoff_fraction;
  p["route.warm_start_lr"] = warm_start_lr;
  p["route.warm_start_batch"] = static_cast<int64_t>(warm_start_batch);
  p["route.device_version"] = device_version;
}

StatusOr<RouteGapgTrainTask> RouteGapgTrainTask::Decode(const wire::Params& params) {
  RouteGapgTrainTask t;
  TANDEM_ASSIGN_OR_RETURN(std::string levels, StringParam(params, "route.levels"));
  TANDEM_ASSIGN_OR_RETURN(t.levels, ParseLevels(levels));
  TANDEM_ASSIGN_OR_RETURN(t.examples_per_level,
                          IntParam(params, "route.examples_per_level", 1, 10'000'000));
  TANDEM_ASSIGN_OR_RETURN(t.test_fraction, RealParam(params, "route.test_fraction", 0.01, 0.99));
  TANDEM_ASSIGN_OR_RETURN(int64_t task_data_seed,
                          IntParam(params, "route.task_data_seed", 0, INT64_MAX));
  t.task_data_seed = static_cast<uint64_t>(task_data_seed);
  TANDEM_ASSIGN_OR_RETURN(t.task_data_examples_per_level,
                          IntParam(params, "route.task_data_examples_per_level", 0, 10'000'000));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, IntParam(params, "route.seed", 0, INT64_MAX));
  t.seed = static_cast<uint64_t>(seed);
  TANDEM_ASSIGN_OR_RETURN(t.split, StringParam(params, "route.split"));
  const auto& splits = RouteGapgSplits();
  if (std::find(splits.begin(), splits.end(), t.split) == splits.end()) {
    return Status::InvalidArgument("route.split: unknown split '" + t.split + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(int64_t parts, IntParam(params, "route.parts", 1, 100'000));
  TANDEM_ASSIGN_OR_RETURN(int64_t part, IntParam(params, "route.part", 0, parts - 1));
  TANDEM_ASSIGN_OR_RETURN(int64_t client, IntParam(params, "route.client", 0, 100'000'000));
  t.parts = static_cast<int>(parts);
  t.part = static_cast<int>(part);
  t.client = static_cast<int>(client);
  if (t.split == "level" && t.parts != static_cast<int>(t.levels.size())) {
    return Status::InvalidArgument("route.parts: the level split makes one part per level");
  }
  if (t.split == "operator" && t.parts != static_cast<int>(RouteGapgOperators(t.levels).size())) {
    return Status::InvalidArgument(
        "route.parts: the operator split makes one part per operator of the levels");
  }
  TANDEM_ASSIGN_OR_RETURN(t.budget, RealParam(params, "route.budget", 0.0, 1.0));
  if (!(t.budget > 0.0)) return Status::InvalidArgument("route.budget must be in (0, 1]");
  TANDEM_ASSIGN_OR_RETURN(t.trainable, StringParam(params, "route.trainable"));
  if (t.trainable != "marker" && t.trainable != "all") {
    return Status::InvalidArgument("route.trainable: '" + t.trainable + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(t.mode, StringParam(params, "route.mode"));
  if (t.mode != "gapg" && t.mode != "grpo") {
    return Status::InvalidArgument("route.mode: '" + t.mode + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(t.local_steps, IntParam(params, "route.local_steps", 0, 1'000'000));
  TANDEM_ASSIGN_OR_RETURN(t.lr, RealParam(params, "route.lr", 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t g, IntParam(params, "route.group_size", 2, 1024));
  TANDEM_ASSIGN_OR_RETURN(int64_t pps, IntParam(params, "route.prompts_per_step", 1, 4096));
  t.group_size = static_cast<int>(g);
  t.prompts_per_step = static_cast<int>(pps);
  TANDEM_ASSIGN_OR_RETURN(t.temperature, RealParam(params, "route.temperature", 0.01, 100.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t mt, IntParam(params, "route.max_tokens", 1, 64));
  t.max_tokens = static_cast<int>(mt);
  TANDEM_ASSIGN_OR_RETURN(t.answer_correct, RealParam(params, "route.answer_correct", -1e6, 1e6));
  TANDEM_ASSIGN_OR_RETURN(t.handoff_correct,
                          RealParam(params, "route.handoff_correct", -1e6, 1e6));
  if (!(t.answer_correct > t.handoff_correct && t.handoff_correct > 0.0)) {
    return Status::InvalidArgument("route.answer_correct > route.handoff_correct > 0 is required");
  }
  TANDEM_ASSIGN_OR_RETURN(t.rho, RealParam(params, "route.rho", -1.0, 1e6));
  TANDEM_ASSIGN_OR_RETURN(t.warm_start_steps,
                          IntParam(params, "route.warm_start_steps", 0, 1'000'000));
  TANDEM_ASSIGN_OR_RETURN(t.warm_start_handoff_fraction,
                          RealParam(params, "route.warm_start_handoff_fraction", 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(t.warm_start_lr, RealParam(params, "route.warm_start_lr", 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t wb, IntParam(params, "route.warm_start_batch", 1, 4096));
  t.warm_start_batch = static_cast<int>(wb);
  TANDEM_ASSIGN_OR_RETURN(t.device_version,
                          IntParam(params, "route.device_version", 1, INT64_MAX));
  return t;
}

RouteConfig RouteGapgTrainTask::PromptSettings() const {
  RouteConfig rc;
  rc.seed = seed;
  rc.levels = levels;
  rc.examples_per_level = examples_per_level;
  rc.test_fraction = test_fraction;
  rc.task_data_seed = task_data_seed;
  rc.task_data_examples_per_level = task_data_examples_per_level;
  rc.max_tokens = max_tokens;
  return rc;
}

StatusOr<RoutePrompts> ClientRoutePrompts(const RoutePrompts& prompts, const std::string& split,
                                          const std::vector<int>& levels, int part,
                                          int parts) {
  const std::string operators = RouteGapgOperators(levels);
  if (levels.empty() || parts < 1 || part < 0 || part >= parts ||
      (split == "level" && parts != static_cast<int>(levels.size())) ||
      (split == "operator" && parts != static_cast<int>(operators.size()))) {
    return Status::InvalidArgument("route-gapg: part " + std::to_string(part) + " of " +
                                   std::to_string(parts) + " over " +
                                   std::to_string(levels.size()) + " levels under split '" +
                                   split + "'");
  }
  const int client = part, clients = parts;
  std::function<bool(const ArithmeticExample&)> mine;
  if (split == "level") {
    const int level = levels[static_cast<size_t>(part)];
    mine = [level](const ArithmeticExample& e) { return e.level == level; };
  } else if (split == "operand") {
    mine = [client, clients](const ArithmeticExample& e) {
      auto spec = GetArithmeticLevel(e.level);
      if (!spec.ok()) return false;
      const int lo = spec->digits == 1 ? 0 : static_cast<int>(std::pow(10, spec->digits - 1));
      const int hi = static_cast<int>(std::pow(10, spec->digits)) - 1;
      const int64_t v = FirstOperand(e.prompt) - lo;
      return static_cast<int>(v * clients / (hi - lo + 1)) == client;
    };
  } else if (split == "operator") {
    const char op = operators[static_cast<size_t>(part)];
    mine = [op](const ArithmeticExample& e) { return FirstOperator(e.prompt) == op; };
  } else {
    return Status::InvalidArgument("route-gapg.split: unknown split '" + split +
                                   "' (known: level, operand, operator)");
  }
  RoutePrompts out;
  for (const auto& e : prompts.train) {
    if (mine(e)) out.train.push_back(e);
  }
  for (const auto& e : prompts.test) {
    if (mine(e)) out.test.push_back(e);
  }
  if (out.train.empty() || out.test.empty()) {
    return Status::InvalidArgument(
        "route-gapg: part " + std::to_string(part) + " of split '" + split +
        "' has " + std::to_string(out.train.size()) + " training and " +
        std::to_string(out.test.size()) + " held-out prompts; both must be non-empty");
  }
  return out;
}

}  // namespace tandem

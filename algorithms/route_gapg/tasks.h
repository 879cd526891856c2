// The task of `route-gapg`, encoded and decoded by both halves:
//   "route-gapg.train": a few GAPG steps of the device's answer-or-hand-off policy on the
//   client's own training prompts, the cloud asked through the coordinator's inference service.
//   Tensors: "policy" (the trainable values, route.trainable's notion: the hand-off marker's
//   output row or every parameter; every round) and "device" (every weight of the device model,
//   only when the client does not hold `device_version` yet). The result is the contribution
//   "delta": the trainable values trained − sent, weighted by the client's training prompts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "route/route_run.h"
#include "wire/message.h"

namespace tandem {

inline constexpr char kRouteGapgTrainTask[] = "route-gapg.train";

// How the prompts of route-gapg.levels are divided into parts, one part per client:
//   "level":   part P is the prompts of levels[P] (|levels| parts);
//   "operand": P of N parts is the prompts, of every level, whose first operand falls in the
//              P-th of N equal ranges of the level's operand values;
//   "operator": part P is the prompts, of every level, whose first operator is the P-th of
//              RouteGapgOperators(levels) (level 2: part 0 the additions, part 1 the
//              subtractions), so there are as many parts as the levels have operators.
inline const std::vector<std::string>& RouteGapgSplits() {
  static const std::vector<std::string> splits = {"level", "operand", "operator"};
  return splits;
}

// The operators of `levels` (data/arithmetic.h), each once, in the order the levels list them:
// {2, 4} gives "+-*". Levels outside 1..kArithmeticMaxLevel contribute nothing.
std::string RouteGapgOperators(const std::vector<int>& levels);

// How many parts `split` makes of `levels`' prompts for `clients` clients: |levels| for "level",
// |RouteGapgOperators(levels)| for "operator", `operand_parts` (or `clients` when 0) for
// "operand". Errors: an unknown split, operand_parts set for a split other than "operand".
StatusOr<int> RouteGapgPartCount(const std::string& split, const std::vector<int>& levels,
                                 int64_t operand_parts, int clients);

struct RouteGapgTrainTask {
  // Which prompts: the route.* prompt settings (levels, examples_per_level, test_fraction,
  // seed) as MakeRoutePrompts reads them, and this client's share of them.
  std::vector<int> levels;         // "route.levels", comma-separated on the wire
  int64_t examples_per_level = 2000;
  double test_fraction = 0.3;
  // The task-tuning run's records (route.task_data_seed, route.task_data_examples_per_level in
  // route_run.h) are never held-out prompts; 0 examples: no exclusion.
  uint64_t task_data_seed = 0;
  int64_t task_data_examples_per_level = 0;
  uint64_t seed = 1;               // the run's: the held-out split and the rollouts' randomness
  std::string split = "level";     // RouteGapgSplits()
  int parts = 1;                   // how many parts the split makes
  int part = 0;                    // this client's part (set per member)
  int client = 0;                  // K: the client the task is for (set per member)
  double budget = 1.0;             // this client's hand-off budget, in (0, 1]
  // The policy gradient, as route.* in route_run.h.
  std::string trainable = "marker";
  std::string mode = "gapg";
  int64_t local_steps = 4;
  double lr = 5e-4;
  int group_size = 8;
  int prompts_per_step = 8;
  double temperature = 1.0;
  int max_tokens = 8;
  double answer_correct = 1.0, handoff_correct = 0.5;
  double rho = 0.5;                // < 0: no filter, every training prompt
  // The supervised warm start that teaches the marker, on this client's own prompts (0: none;
  // the coordinator sends it in round 1 only).
  int64_t warm_start_steps = 0;
  double warm_start_handoff_fraction = 0.3;
  double warm_start_lr = 1e-3;
  int warm_start_batch = 16;
  int64_t device_version = 1;      // which device weights "policy" applies to

  void Encode(wire::Params* params) const;
  // Range-checks every value, as RouteConfigFromConfig and RouteGapgServerConfig do.
  static StatusOr<RouteGapgTrainTask> Decode(const wire::Params& params);

  // The route.* settings MakeRoutePrompts reads (levels, examples_per_level, test_fraction,
  // task_data_seed, task_data_examples_per_level, seed).
  RouteConfig PromptSettings() const;
};

// Part `part` of `parts` of `prompts` (its training and held-out prompts) under `split`: see
// RouteGapgSplits(). Errors: an unknown split, a part outside [0, parts) (for "level", parts
// must be |levels|; for "operator", |RouteGapgOperators(levels)|), a part with no training or no
// test prompt.
StatusOr<RoutePrompts> ClientRoutePrompts(const RoutePrompts& prompts, const std::string& split,
                                          const std::vector<int>& levels, int part, int parts);

}  // namespace tandem

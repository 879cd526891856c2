// One client's share of a route-gapg round, without sockets: the supervised warm start (round 1),
// the adaptive prompt filter, and GAPG (or GRPO) steps on the client's own training prompts, the
// rewards under the client's hand-off budget. The client half (client.h) runs it with the cloud
// behind the coordinator's inference service; tests run it with the cloud in the process.
//
// The budget: within a round the client's sampled completions pass, in order, through the
// test-time cap of route/handoff.h (HandOffCap at `budget`), as its queries will at test time; a
// hand-off the cap refuses earns 0, so the policy learns to hand off within its budget, and the
// cloud is not asked about it. With budget 1 nothing is refused and the rewards are GapgReward's.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "algorithms/route_gapg/tasks.h"
#include "core/rng.h"
#include "core/status.h"
#include "data/arithmetic.h"
#include "models/gpt.h"
#include "models/trainable.h"
#include "route/gapg.h"

namespace tandem {

// Where the policy's trainable values sit in `model`'s parameters: the hand-off marker's row of
// the tied token embedding (wte, (V,C): C values) for "marker", every parameter for "all" (the
// notion of route.trainable in route/route_run.h).
ParamRange RoutePolicyRange(const Gpt& model, const std::string& trainable);

// The randomness of client `client`'s local steps in round `round`: a round replayed after a
// coordinator restart draws the same prompts and samples.
Rng RouteGapgRng(uint64_t seed, uint64_t round, int client);

struct LocalGapgReport {
  int64_t steps = 0;
  double mean_reward = 0.0;         // over the round's sampled completions
  double handoff_rate = 0.0;        // share of them that hand off
  double local_correct_rate = 0.0;  // share that are correct answers of the device's own
  int64_t refused_handoffs = 0;     // hand-offs over the budget (rewarded 0)
  int64_t completions = 0;
  int64_t kept_mixed = -1, kept_cloud_only = -1;  // the filter's kept set; -1: no filter
  double warm_loss = 0.0;           // the warm start's last loss (0: none)
  double pg_loss = 0.0;             // mean over the steps
};

// Runs the task's warm start (task.warm_start_steps), one filter pass (task.rho >= 0) over
// `train`, then task.local_steps policy-gradient steps on `model` in place, with a fresh AdamW
// (no weight decay for "marker"; 0.1 for "all", as route_run) and randomness `rng`. Only
// RoutePolicyRange(model, task.trainable) changes. `oracle` is asked at most once per prompt.
StatusOr<LocalGapgReport> RunLocalGapg(Gpt& model, std::span<const ArithmeticExample> train,
                                       const RouteGapgTrainTask& task, CloudOracle& oracle,
                                       Rng& rng);

}  // namespace tandem

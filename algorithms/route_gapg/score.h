// The policy's score on one part's held-out prompts, by the rule of `tandem route eval` with
// route.baseline = "policy" (route/route_run.cc): the queries in an order drawn from the seed; the
// policy asks for the cloud when its marker probability at the answer's first token (at the
// task's temperature) is among the budget's share of the highest it gives the part's training
// prompts; the cap grants or refuses (`cap` as route.cap: "online", HandOffCap at `budget` in that
// order; "ranked", RankedHandOffGrants: the budget's share of the part's held-out prompts, to the
// highest marker probabilities, every query asking); the cloud answers greedily, the
// device with its marker banned (FallbackAnswer). Also the device alone and the cloud alone on the
// same prompts, for the gap closed. `tandem route eval` cannot restrict itself to an operand
// range; this is how the last round of a route-gapg run scores every client's part.
#pragma once

#include <cstdint>
#include <string>

#include "algorithms/route_gapg/tasks.h"
#include "core/status.h"
#include "models/gpt.h"

namespace tandem {

struct RouteShareScore {
  int64_t queries = 0, correct = 0;
  int64_t local_answered = 0, local_correct = 0;
  int64_t handoffs = 0;
  int64_t device_correct = 0, cloud_correct = 0;  // each alone, on every query
  double accuracy() const { return queries ? double(correct) / queries : 0.0; }
  double local_accuracy() const {
    return local_answered ? double(local_correct) / local_answered : 0.0;
  }
  double call_ratio() const { return queries ? double(handoffs) / queries : 0.0; }
  double device_accuracy() const { return queries ? double(device_correct) / queries : 0.0; }
  double cloud_accuracy() const { return queries ? double(cloud_correct) / queries : 0.0; }
};

// Scores `policy` on `prompts.test` (the online threshold from `prompts.train`) at `budget`
// through `cap` ("online" or "ranked"), with the task's seed, temperature and max_tokens.
// Errors: no training or held-out prompt, an unknown cap.
StatusOr<RouteShareScore> ScoreRouteShare(const Gpt& policy, const Gpt& cloud,
                                          const RoutePrompts& prompts, double budget,
                                          const std::string& cap, const RouteGapgTrainTask& task);

}  // namespace tandem

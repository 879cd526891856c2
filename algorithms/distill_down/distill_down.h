// `distill-down`: the cloud LLM's top-k predictions on public windows go down with fedavg's task,
// and the edge SLMs learn from them beside their own data; the SLMs are averaged (or, with
// distill-down.slms = "local", each stays on its client). Its keys: [distill-down], plus fedavg's
// [client], [strategy] and [eval].
#pragma once

#include "algorithms/algorithm.h"
#include "algorithms/distill_down/server.h"
#include "algorithms/distill_up/server.h"

namespace tandem {

Algorithm DistillDownAlgorithm();

// The settings of the coordinator half that runs distill-down with local SLMs: distill-up's
// (algorithms/distill_up/server.h) with fedmkt's downward targets alone, no uploads and no
// server steps.
DistillUpConfig LocalDistillDownConfig(const DistillDownConfig& down);

}  // namespace tandem

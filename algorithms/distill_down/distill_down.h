// `distill-down`: the cloud LLM's top-k predictions on public windows go down with fedavg's task,
// and the edge SLMs learn from them beside their own data; the SLMs are averaged (or, with
// distill-down.slms = "local", each stays on its client). Its keys: [distill-down], plus fedavg's
// [client], [strategy] and [eval].
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm DistillDownAlgorithm();

}  // namespace tandem

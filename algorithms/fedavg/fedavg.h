// `fedavg` (McMahan et al. 2017) and its server optimizers (FedProx, FedAvgM, FedAdam, FedYogi,
// median, trimmed mean): SLM deltas up, the averaged SLM down. Its keys: [client] (local
// training), [strategy] (the server step) and [eval].
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm FedAvgAlgorithm();

}  // namespace tandem

// `distill-up` (FedDF, Lin et al. 2020): the clients' own SLMs upload their predictions on
// public windows as contributions; the cloud LLM learns by distillation to their ensemble.
// Its keys: [distill-up], plus [client] (the SLMs' local training) and [eval].
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm DistillUpAlgorithm();

// The coordinator half of distill-up (mutual = false) or fedmkt (mutual = true), reading the
// algorithm's own section.
StatusOr<std::unique_ptr<ServerAlgorithm>> CreateUpwardServer(const ServerContext& context,
                                                              const std::string& section,
                                                              bool mutual);

}  // namespace tandem

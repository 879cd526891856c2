// The algorithms a config can name (algorithm.name), registered in one place: registry.cc lists
// the built-in ones; a program or test may add its own before it starts a run.
#pragma once

#include <string>
#include <vector>

#include "algorithms/algorithm.h"
#include "core/status.h"

namespace tandem {

// Every registered algorithm, built-in ones first, in registration order.
const std::vector<Algorithm>& Algorithms();
std::vector<std::string> AlgorithmNames();
// The algorithm named `name`; NotFound lists the registered names.
StatusOr<const Algorithm*> FindAlgorithm(const std::string& name);
// The algorithm a config names (algorithm.name, "fedavg" by default), with the config's file
// and line in the error.
StatusOr<const Algorithm*> AlgorithmOf(const class Config& config);
// Adds an algorithm (its name must be new). Not thread-safe: call before any run starts.
Status RegisterAlgorithm(Algorithm algorithm);

}  // namespace tandem

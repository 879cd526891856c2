// An algorithm as a whole (DESIGN.md "Algorithms"): its coordinator half and its client half,
// under one name. Each folder of algorithms/ makes one; algorithms/registry.h lists them.
#pragma once

#include <string>

#include "client/context.h"
#include "coordinator/algorithm.h"

namespace tandem {

struct Algorithm {
  std::string name;     // algorithm.name in a config
  std::string summary;  // one line for --help and docs: what moves, who learns
  ServerPlugin server;
  ClientPlugin client;
};

}  // namespace tandem

// The registry of algorithms; see algorithms/registry.h.
#include "algorithms/registry.h"

#include "algorithms/distill_down/distill_down.h"
#include "algorithms/distill_up/distill_up.h"
#include "algorithms/fedavg/fedavg.h"
#include "algorithms/fedbiot/fedbiot.h"
#include "algorithms/fedcollm/fedcollm.h"
#include "algorithms/fedmkt/fedmkt.h"
#include "algorithms/offsite/offsite.h"
#include "algorithms/route_gapg/route_gapg.h"
#include "algorithms/submodel/submodel.h"
#include "core/config.h"

namespace tandem {
namespace {

std::vector<Algorithm>& Registry() {
  static std::vector<Algorithm> registry = {
      FedAvgAlgorithm(), DistillDownAlgorithm(), DistillUpAlgorithm(), FedMktAlgorithm(),
      FedCoLLMAlgorithm(), SubmodelAlgorithm(), OffsiteAlgorithm(), FedBiOTAlgorithm(), RouteGapgAlgorithm(),
  };
  return registry;
}

}  // namespace

const std::vector<Algorithm>& Algorithms() { return Registry(); }

std::vector<std::string> AlgorithmNames() {
  std::vector<std::string> names;
  for (const Algorithm& a : Registry()) names.push_back(a.name);
  return names;
}

StatusOr<const Algorithm*> FindAlgorithm(const std::string& name) {
  for (const Algorithm& a : Registry()) {
    if (a.name == name) return &a;
  }
  std::string known;
  for (const Algorithm& a : Registry()) known += (known.empty() ? "" : ", ") + a.name;
  return Status::NotFound("no algorithm '" + name + "' (known: " + known + ")");
}

StatusOr<const Algorithm*> AlgorithmOf(const Config& config) {
  TANDEM_ASSIGN_OR_RETURN(std::string name,
                          config.GetChoice("algorithm.name", "fedavg", AlgorithmNames()));
  return FindAlgorithm(name);
}

Status RegisterAlgorithm(Algorithm algorithm) {
  if (algorithm.name.empty() || !algorithm.server.create || !algorithm.client.create) {
    return Status::InvalidArgument("an algorithm needs a name and both halves");
  }
  for (const Algorithm& a : Registry()) {
    if (a.name == algorithm.name) {
      return Status::InvalidArgument("algorithm '" + algorithm.name + "' is already registered");
    }
  }
  Registry().push_back(std::move(algorithm));
  return Status::Ok();
}

}  // namespace tandem

// fedmkt's registration; see algorithms/fedmkt/fedmkt.h.
#include "algorithms/fedmkt/fedmkt.h"

#include "algorithms/distill_up/distill_up.h"
#include "algorithms/fedmkt/client.h"

namespace tandem {

Algorithm FedMktAlgorithm() {
  Algorithm a;
  a.name = "fedmkt";
  a.summary = "both of distill-down and distill-up every round, with own SLMs on the clients";
  a.server.name = a.name;
  a.server.traits = [](const Config&) -> StatusOr<AlgorithmTraits> { return AlgorithmTraits{}; };
  a.server.moved_sections = {"distill"};
  a.server.create = [](const ServerContext& context) {
    return CreateUpwardServer(context, "fedmkt", /*mutual=*/true);
  };
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<FedMktClient>(context));
  };
  return a;
}

}  // namespace tandem

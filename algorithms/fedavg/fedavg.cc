// fedavg's registration; see algorithms/fedavg/fedavg.h.
#include "algorithms/fedavg/fedavg.h"

#include "algorithms/common/server_models.h"
#include "algorithms/fedavg/client.h"
#include "algorithms/fedavg/server.h"

namespace tandem {

Algorithm FedAvgAlgorithm() {
  Algorithm a;
  a.name = "fedavg";
  a.summary = "SLM deltas up, the averaged SLM down (FedProx, FedAvgM, FedAdam, FedYogi, ...)";
  a.server.name = a.name;
  a.server.traits = [](const Config&) -> StatusOr<AlgorithmTraits> {
    return AlgorithmTraits{.averages_weights = true};
  };
  a.server.create = [](const ServerContext& context)
      -> StatusOr<std::unique_ptr<ServerAlgorithm>> {
    TANDEM_ASSIGN_OR_RETURN(FedAvgServerConfig config,
                            FedAvgServerConfigFromConfig(*context.config));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model, StartingModel(context));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(config.strategy));
    return std::unique_ptr<ServerAlgorithm>(std::make_unique<FedAvgServer>(
        std::move(config), std::move(model), std::move(strategy), context.splits->validation));
  };
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<FedAvgClient>(context));
  };
  return a;
}

}  // namespace tandem

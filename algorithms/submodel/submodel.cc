// submodel's registration; see algorithms/submodel/submodel.h.
#include "algorithms/submodel/submodel.h"

#include "algorithms/common/server_models.h"
#include "algorithms/submodel/client.h"
#include "algorithms/submodel/server.h"

namespace tandem {

Algorithm SubmodelAlgorithm() {
  Algorithm a;
  a.name = "submodel";
  a.summary = "sub-models of the LLM down by tier (static, rolling or importance windows), their "
              "deltas up, mapped back into the LLM and averaged per coordinate";
  a.server.name = a.name;
  a.server.traits = [](const Config&) -> StatusOr<AlgorithmTraits> {
    return AlgorithmTraits{.averages_weights = false};
  };
  a.server.create = [](const ServerContext& context)
      -> StatusOr<std::unique_ptr<ServerAlgorithm>> {
    if (!context.client_models.empty()) {
      return Status::InvalidArgument(
          "submodel cuts every client's model out of [model]; federation.client_models does not "
          "apply (give clients smaller models with submodel.width_divisors)");
    }
    TANDEM_ASSIGN_OR_RETURN(SubmodelServerConfig config,
                            SubmodelServerConfigFromConfig(*context.config));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(config.strategy));
    if (strategy->NeedsIndividualContributions() || config.strategy.name == "fedprox") {
      return Status::InvalidArgument(
          "submodel averages each coordinate over the clients that cover it; strategy.name = \"" +
          config.strategy.name + "\" does not apply (use fedavg, fedavgm, fedadam or fedyogi)");
    }
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model, StartingModel(context));
    return std::unique_ptr<ServerAlgorithm>(std::make_unique<SubmodelServer>(
        std::move(config), std::move(model), std::move(strategy), context.splits->validation,
        context.splits->public_, context.privacy));
  };
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<SubmodelClient>(context));
  };
  return a;
}

}  // namespace tandem

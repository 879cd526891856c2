// offsite's registration; see algorithms/offsite/offsite.h.
#include "algorithms/offsite/offsite.h"

#include "algorithms/common/server_models.h"
#include "algorithms/offsite/client.h"
#include "algorithms/offsite/server.h"

namespace tandem {

Algorithm OffsiteFamilyAlgorithm(const std::string& name, const std::string& summary) {
  Algorithm a;
  a.name = name;
  a.summary = summary;
  a.server.name = a.name;
  a.server.traits = [](const Config&) -> StatusOr<AlgorithmTraits> {
    return AlgorithmTraits{.averages_weights = false};
  };
  a.server.create = [name](const ServerContext& context)
      -> StatusOr<std::unique_ptr<ServerAlgorithm>> {
    if (!context.client_models.empty()) {
      return Status::InvalidArgument(name + " sends every client the emulator of [model]; "
                                     "federation.client_models does not apply");
    }
    TANDEM_ASSIGN_OR_RETURN(OffsiteServerConfig config,
                            OffsiteServerConfigFromConfig(*context.config, name));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(config.strategy));
    if (config.strategy.name == "fedprox") {
      return Status::InvalidArgument(name + ": strategy.name = \"fedprox\" does not apply; " +
                                     (name == "fedbiot" ? "fedbiot.proximal_mu is its proximal term"
                                                        : "use fedbiot for a proximal term"));
    }
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> llm, StartingModel(context));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<OffsiteServer> server,
                            OffsiteServer::Create(std::move(config), std::move(llm),
                                                  std::move(strategy), context.splits->validation,
                                                  context.splits->public_));
    return std::unique_ptr<ServerAlgorithm>(std::move(server));
  };
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<OffsiteClient>(context));
  };
  return a;
}

Algorithm OffsiteAlgorithm() {
  return OffsiteFamilyAlgorithm(
      "offsite", "the LLM's bottom and top blocks as adapters trained through an emulator of the "
                 "rest (Offsite-Tuning), plugged back into the LLM");
}

}  // namespace tandem

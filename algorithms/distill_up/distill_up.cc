// distill-up's registration; see algorithms/distill_up/distill_up.h.
#include "algorithms/distill_up/distill_up.h"

#include "algorithms/common/server_models.h"
#include "algorithms/distill_up/client.h"
#include "algorithms/fedavg/server.h"
#include "algorithms/distill_up/server.h"
#include "core/config.h"
#include "core/logging.h"

namespace tandem {

StatusOr<std::unique_ptr<ServerAlgorithm>> CreateUpwardServer(const ServerContext& context,
                                                              const std::string& section,
                                                              bool mutual) {
  const Config& config = *context.config;
  TANDEM_ASSIGN_OR_RETURN(DistillUpConfig up, DistillUpConfigFromConfig(config, section, mutual));
  TANDEM_ASSIGN_OR_RETURN(FedAvgServerConfig fedavg, FedAvgServerConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Gpt> llm,
                          LoadCloudModel(context, section + ".llm", up.llm));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<DistillUpServer> server,
                          DistillUpServer::Create(up, fedavg.local, llm, context.model,
                                                  context.splits->public_,
                                                  context.splits->validation, fedavg.eval_tokens,
                                                  context.seed, context.client_models,
                                                  fedavg.client_eval,
                                                  PublicCorpus(*context.splits)));
  GetLogger("coordinator")
      ->info("{}: the LLM ({}) learns from the clients' {} predictions on {} public windows a "
             "round at T = {:g}", section, llm->config().ToString(), context.model.ToString(),
             up.windows, up.temperature);
  return std::unique_ptr<ServerAlgorithm>(std::move(server));
}

Algorithm DistillUpAlgorithm() {
  Algorithm a;
  a.name = "distill-up";
  a.summary = "SLM predictions on public windows up, aggregated; the LLM learns by KD (FedDF)";
  a.server.name = a.name;
  a.server.traits = [](const Config&) -> StatusOr<AlgorithmTraits> { return AlgorithmTraits{}; };
  a.server.moved_sections = {"distill"};
  a.server.create = [](const ServerContext& context) {
    return CreateUpwardServer(context, "distill-up", /*mutual=*/false);
  };
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<DistillUpClient>(context));
  };
  return a;
}

}  // namespace tandem

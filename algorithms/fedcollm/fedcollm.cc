// fedcollm's registration; see algorithms/fedcollm/fedcollm.h.
#include "algorithms/fedcollm/fedcollm.h"

#include "algorithms/common/server_models.h"
#include "algorithms/fedavg/server.h"
#include "algorithms/fedcollm/client.h"
#include "algorithms/fedcollm/server.h"
#include "core/config.h"
#include "core/logging.h"

namespace tandem {
namespace {

StatusOr<std::unique_ptr<ServerAlgorithm>> CreateServer(const ServerContext& context) {
  const Config& config = *context.config;
  TANDEM_ASSIGN_OR_RETURN(FedCoLLMConfig collm, FedCoLLMConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(FedAvgServerConfig fedavg, FedAvgServerConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> slm, StartingModel(context));
  // Grouped: one LLM learns from every group in turn, saved and evaluated once by the runtime.
  const bool shared = !context.group.empty();
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Gpt> llm,
                          LoadCloudModel(context, "fedcollm.llm", collm.llm,
                                         shared ? "llm" : ""));
  StatusOr<std::unique_ptr<FedCoLLMServer>> made =
      FedCoLLMServer::Create(collm, fedavg.local, fedavg.strategy, std::move(slm), llm,
                             context.splits->public_, context.splits->validation,
                             fedavg.eval_tokens, context.seed, PublicCorpus(*context.splits));
  if (!made.ok()) return made.status();
  std::unique_ptr<FedCoLLMServer> server = std::move(made).value();
  server->set_llm_shared(shared);
  GetLogger("coordinator")
      ->info("fedcollm: rank-{} adapters on the SLM, distilled both ways with the LLM ({}) on {} "
             "public windows a round", collm.lora.rank, llm->config().ToString(), collm.windows);
  return std::unique_ptr<ServerAlgorithm>(std::move(server));
}

}  // namespace

Algorithm FedCoLLMAlgorithm() {
  Algorithm a;
  a.name = "fedcollm";
  a.summary = "SLM LoRA deltas up, averaged; the coordinator distils LLM <-> SLM on public data";
  a.server.name = a.name;
  a.server.traits = [](const Config&) -> StatusOr<AlgorithmTraits> {
    return AlgorithmTraits{.averages_weights = true};
  };
  a.server.moved_sections = {"distill"};
  a.server.create = CreateServer;
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<FedCoLLMClient>(context));
  };
  return a;
}

}  // namespace tandem

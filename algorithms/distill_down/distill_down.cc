// distill-down's registration; see algorithms/distill_down/distill_down.h.
#include "algorithms/distill_down/distill_down.h"

#include <algorithm>

#include "algorithms/common/server_models.h"
#include "algorithms/distill_down/client.h"
#include "algorithms/distill_down/server.h"
#include "algorithms/distill_up/server.h"
#include "core/config.h"
#include "core/logging.h"

namespace tandem {
namespace {



StatusOr<std::unique_ptr<ServerAlgorithm>> CreateServer(const ServerContext& context) {
  auto log = GetLogger("coordinator");
  const Config& config = *context.config;
  TANDEM_ASSIGN_OR_RETURN(DistillDownConfig down, DistillDownConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(FedAvgServerConfig fedavg, FedAvgServerConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Gpt> teacher,
                          LoadCloudModel(context, "distill-down.teacher", down.teacher));
  if (down.slms == "local") {
    // fedmkt's downward half alone: the clients' own SLMs learn from the teacher's targets, and
    // nothing comes back.
    log->info("distill-down: teacher {} ({}), top-{} targets at T = {:g} on {} public windows a "
              "round; each client keeps its own {}", down.teacher, teacher->config().ToString(),
              down.top_k, down.temperature, down.windows, context.model.ToString());
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<DistillUpServer> server,
                            DistillUpServer::Create(LocalDistillDownConfig(down), fedavg.local,
                                                    teacher, context.model,
                                                    context.splits->public_,
                                                    context.splits->validation,
                                                    fedavg.eval_tokens, context.seed,
                                                    context.client_models, fedavg.client_eval));
    return std::unique_ptr<ServerAlgorithm>(std::move(server));
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model, StartingModel(context));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(fedavg.strategy));
  auto inner = std::make_unique<FedAvgServer>(fedavg, std::move(model), std::move(strategy),
                                              context.splits->validation);
  // Every group gets the same targets, so the windows are as long as the shortest context.
  int window = context.model.context;
  for (const ModelConfig& m : context.client_models) window = std::min(window, m.context);
  std::shared_ptr<SharedTeacher> shared = context.shared->Object<SharedTeacher>(
      "distill-down.teacher", [&] { return std::make_shared<SharedTeacher>(teacher, window); });
  log->info("distill-down: teacher {} ({}), top-{} targets at T = {:g} on {} public windows of "
            "{} tokens a round", down.teacher, teacher->config().ToString(), down.top_k,
            down.temperature, down.windows, window);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<DistillDownServer> server,
                          DistillDownServer::Create(down, std::move(inner), shared,
                                                    context.splits->public_, context.seed));
  return std::unique_ptr<ServerAlgorithm>(std::move(server));
}

}  // namespace

DistillUpConfig LocalDistillDownConfig(const DistillDownConfig& down) {
  DistillUpConfig c;
  c.mutual = true;
  c.upload = false;
  c.server_steps = 0;
  c.temperature = down.temperature;
  c.windows = down.windows;
  c.top_k = down.top_k;
  c.client_alpha = down.alpha;
  c.client_weight = down.weight;
  c.llm = down.teacher;
  return c;
}

Algorithm DistillDownAlgorithm() {
  Algorithm a;
  a.name = "distill-down";
  a.summary = "the LLM's top-k logits on public windows down; SLMs learn by KD beside their data";
  a.server.name = a.name;
  a.server.traits = [](const Config& config) -> StatusOr<AlgorithmTraits> {
    TANDEM_ASSIGN_OR_RETURN(std::string slms,
                            config.GetChoice("distill-down.slms", "fedavg", {"fedavg", "local"}));
    // Local SLMs move only predictions: every architecture in one half.
    return AlgorithmTraits{.averages_weights = slms == "fedavg"};
  };
  a.server.moved_sections = {"distill"};
  a.server.create = CreateServer;
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<DistillDownClient>(context));
  };
  return a;
}

}  // namespace tandem

// route-gapg's registration; see algorithms/route_gapg/route_gapg.h.
#include "algorithms/route_gapg/route_gapg.h"

#include "algorithms/route_gapg/client.h"
#include "algorithms/route_gapg/server.h"
#include "models/gpt_checkpoint.h"

namespace tandem {

Algorithm RouteGapgAlgorithm() {
  Algorithm a;
  a.name = "route-gapg";
  a.summary = "the device's answer-or-hand-off policy post-trained with GAPG on every client's "
              "own prompts, the cloud answering hand-offs through the inference service";
  a.server.name = a.name;
  a.server.traits = [](const Config&) -> StatusOr<AlgorithmTraits> {
    return AlgorithmTraits{.averages_weights = false};
  };
  a.server.create = [](const ServerContext& context)
      -> StatusOr<std::unique_ptr<ServerAlgorithm>> {
    if (!context.client_models.empty()) {
      return Status::InvalidArgument("route-gapg trains one device model; "
                                     "federation.client_models does not apply");
    }
    TANDEM_ASSIGN_OR_RETURN(RouteGapgServerConfig config,
                            RouteGapgServerConfigFromConfig(*context.config));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(config.strategy));
    auto device = LoadGpt(config.device_checkpoint);
    if (!device.ok()) return device.status().WithContext("route-gapg.device_checkpoint");
    if (!((*device)->config() == context.model)) {
      return Status::InvalidArgument("route-gapg.device_checkpoint holds " +
                                     (*device)->config().ToString() +
                                     ", and the clients' [model] is " + context.model.ToString() +
                                     "; they must be the same");
    }
    auto cloud = LoadGpt(config.cloud_checkpoint);
    if (!cloud.ok()) return cloud.status().WithContext("route-gapg.cloud_checkpoint");
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<RouteGapgServer> server,
                            RouteGapgServer::Create(std::move(config), std::move(*device),
                                                    std::move(*cloud), std::move(strategy),
                                                    context.splits->validation));
    return std::unique_ptr<ServerAlgorithm>(std::move(server));
  };
  a.client.name = a.name;
  a.client.create = [](ClientContext* context) -> StatusOr<std::unique_ptr<TaskHandler>> {
    return std::unique_ptr<TaskHandler>(std::make_unique<RouteGapgClient>(context));
  };
  return a;
}

}  // namespace tandem

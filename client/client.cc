// `tandem client`; see client/client.h.
#include "client/client.h"

#include "client/fedavg_client.h"
#include "client/private_handler.h"
#include "core/compute_slots.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/threads.h"
#include "models/gpt_checkpoint.h"
#include "models/model_config.h"
#include "wire/transport.h"
#include "wire/transport_config.h"

namespace tandem {

StatusOr<SessionSummary> RunClient(const Config& config, const ClientOptions& options) {
  auto log = GetLogger("client");
  TANDEM_ASSIGN_OR_RETURN(std::string name, config.GetString("name", "run"));
  TANDEM_ASSIGN_OR_RETURN(std::string out_dir, config.GetString("out_dir", "runs"));
  const std::string run_dir = out_dir + "/" + name;
  TANDEM_ASSIGN_OR_RETURN(ModelConfig model, ModelConfigFromConfig(config, "model"));
  // Heterogeneous clients run the architecture the list gives their index, and start from the
  // matching entry of federation.client_init_checkpoints when there is one.
  TANDEM_ASSIGN_OR_RETURN(std::vector<ModelConfig> client_models, ClientModelsFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> client_inits,
                          config.GetStringList("federation.client_init_checkpoints", {}));
  std::string own_init;
  if (!client_models.empty()) {
    const size_t k = static_cast<size_t>(options.index) % client_models.size();
    model = client_models[k];
    if (!client_inits.empty()) {
      if (client_inits.size() != client_models.size()) {
        return Status::InvalidArgument("federation.client_init_checkpoints must have one entry per "
                                       "federation.client_models entry");
      }
      own_init = client_inits[k];
    }
  }
  TANDEM_ASSIGN_OR_RETURN(wire::TransportConfig transport,
                          wire::TransportConfigFromConfig(config, run_dir));
  if (!options.keys_dir.empty()) transport.keys_dir = options.keys_dir;
  SessionOptions session;
  session.stop = options.stop;
  TANDEM_ASSIGN_OR_RETURN(session.give_up_s,
                          config.GetDouble("client.give_up_s", session.give_up_s, 1.0, 1e7));
  TANDEM_ASSIGN_OR_RETURN(ClientData data, LoadClientData(config, options.index));
  // The coordinator's keys; this process only needs to accept them.
  config.MarkUsed("");
  const std::string endpoint = options.connect.empty() ? transport.endpoint : options.connect;
  if (endpoint.rfind("tcp://", 0) == 0 && endpoint.size() >= 2 &&
      endpoint.compare(endpoint.size() - 2, 2, ":0") == 0) {
    return Status::InvalidArgument("client " + std::to_string(options.index) +
                                   ": no coordinator address (federation.endpoint is " + endpoint +
                                   "); pass --connect tcp://HOST:PORT");
  }
  TANDEM_ASSIGN_OR_RETURN(wire::TransportOptions link_options,
                          wire::ClientTransportOptions(transport, endpoint, options.index));
  link_options.zmq_context = options.zmq_context;
  // Alone on a node it may use the node's cores (or TANDEM_THREADS, which `tandem run` and the
  // SLURM script set when several processes share a machine).
  const int threads = options.threads > 0 ? options.threads : ComputeThreads(1);
  log->info("client {}: {} training and {} held-out records, {} compute threads, connecting to {}",
            options.index, data.train.size(), data.validation.size(), threads, endpoint);
  const ComputeSlots slots = ComputeSlots::ForMachine();
  FedAvgClient handler(model, std::move(data), options.index, threads,
                       options.use_compute_slots ? &slots : nullptr);
  // Where a client's own SLM starts (distill-up): the SLM trained on the public categories.
  TANDEM_ASSIGN_OR_RETURN(std::string init, config.GetString("model.init_checkpoint", ""));
  if (!client_models.empty()) init = own_init;
  if (!init.empty()) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> start, LoadGpt(init));
    if (!(start->config() == model)) {
      return Status::InvalidArgument("model.init_checkpoint '" + init + "' holds " +
                                     start->config().ToString() + ", the config asks for " +
                                     model.ToString());
    }
    handler.SetInitialParams({start->params().begin(), start->params().end()});
  }
  // The privacy pipeline acts only on tasks the coordinator marks as contributions.
  PrivateTaskHandler protected_handler(&handler);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<wire::Client> link, wire::Client::Connect(link_options));
  return RunSession(link.get(), &protected_handler, session);
}

}  // namespace tandem

// `tandem client`; see client/client.h.
#include "client/client.h"

#include "client/context.h"
#include "client/private_handler.h"
#include "core/compute_slots.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/threads.h"
#include "core/timer.h"
#include "models/gpt_checkpoint.h"
#include "models/model_config.h"
#include "wire/transport.h"
#include "wire/transport_config.h"

namespace tandem {
namespace {

// Runs the algorithm's tasks on this client's share of the machine: it holds `threads` compute
// slots while it computes (clients on one machine share its cores) and reports the compute time,
// without the wait for a slot, as the result's compute_s (bench/round_overhead.sh compares the
// round's critical path with it).
class ComputeHandler : public TaskHandler {
 public:
  ComputeHandler(std::unique_ptr<TaskHandler> inner, int threads, const ComputeSlots* slots)
      : inner_(std::move(inner)), threads_(std::max(1, threads)), slots_(slots) {}
  std::vector<std::string> Capabilities() const override { return inner_->Capabilities(); }
  void OnWelcome(uint32_t client_index) override { inner_->OnWelcome(client_index); }
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override {
    ComputeSlots::Lease lease;
    if (slots_ != nullptr) {
      TANDEM_ASSIGN_OR_RETURN(lease, slots_->Acquire(threads_));
    }
    SetComputeThreads(threads_);
    Stopwatch compute;
    Status s = inner_->Run(round, task, result);
    if (s.ok()) result->metrics["compute_s"] = compute.Seconds();
    return s;
  }

 private:
  std::unique_ptr<TaskHandler> inner_;
  int threads_;
  const ComputeSlots* slots_;
};

}  // namespace

StatusOr<SessionSummary> RunClient(const Config& config, const ClientPlugin& algorithm,
                                   const ClientOptions& options) {
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
  // A host that does not resolve would otherwise look like a coordinator that never answers.
  Status address = wire::CheckCoordinatorAddress(endpoint);
  if (!address.ok()) return address.WithContext("client " + std::to_string(options.index));
  TANDEM_ASSIGN_OR_RETURN(wire::TransportOptions link_options,
                          wire::ClientTransportOptions(transport, endpoint, options.index));
  link_options.zmq_context = options.zmq_context;
  // Alone on a node it may use the node's cores (or TANDEM_THREADS, which `tandem run` and the
  // SLURM script set when several processes share a machine).
  const int threads = options.threads > 0 ? options.threads : ComputeThreads(1);
  log->info("client {}: {} training and {} held-out records, {} compute threads, connecting to {}",
            options.index, data.train.size(), data.validation.size(), threads, endpoint);
  // Where this client's own model starts, for algorithms whose clients keep one: the SLM trained
  // on the public categories, say.
  TANDEM_ASSIGN_OR_RETURN(std::string init, config.GetString("model.init_checkpoint", ""));
  if (!client_models.empty()) init = own_init;
  std::vector<float> own_params;
  if (!init.empty()) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> start, LoadGpt(init));
    if (!(start->config() == model)) {
      return Status::InvalidArgument("model.init_checkpoint '" + init + "' holds " +
                                     start->config().ToString() + ", the config asks for " +
                                     model.ToString());
    }
    own_params.assign(start->params().begin(), start->params().end());
  }
  ClientContext context(options.index, model, std::move(data), std::move(own_params));
  context.set_link(link_options);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<TaskHandler> inner, algorithm.create(&context));
  const ComputeSlots slots = ComputeSlots::ForMachine();
  ComputeHandler handler(std::move(inner), threads, options.use_compute_slots ? &slots : nullptr);
  // The privacy pipeline acts only on tasks the coordinator marks as contributions.
  PrivateTaskHandler protected_handler(&handler);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<wire::Client> link, wire::Client::Connect(link_options));
  return RunSession(link.get(), &protected_handler, session);
}

}  // namespace tandem

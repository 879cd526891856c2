// The client half of route-gapg; see algorithms/route_gapg/client.h.
#include "algorithms/route_gapg/client.h"

#include <chrono>
#include <cstring>

#include "algorithms/common/task_parts.h"
#include "algorithms/route_gapg/local_gapg.h"
#include "models/tokenizer.h"
#include "route/handoff.h"

namespace tandem {

RouteGapgClient::RouteGapgClient(ClientContext* context, CloudAnswer cloud)
    : context_(context), cloud_(std::move(cloud)) {
  if (!cloud_) {
    // The service's greedy completion of the prompt, read as route/handoff.h's line.
    cloud_ = [this](std::string_view prompt) -> StatusOr<std::string> {
      TANDEM_ASSIGN_OR_RETURN(serve::RemoteCloud * service, Service());
      serve::CompleteRequest request;
      request.prompt = {ByteTokenizer::kEndOfText};
      ByteTokenizer::EncodeAppend(prompt, &request.prompt);
      request.max_tokens = max_tokens_;
      request.sampling.temperature = 0.0f;
      request.stop = '\n';
      TANDEM_ASSIGN_OR_RETURN(serve::CompleteReply reply, service->Complete(request));
      return ParseCompletion(ByteTokenizer::Decode(reply.tokens)).answer;
    };
  }
  oracle_ = std::make_unique<CloudOracle>(cloud_);
}

RouteGapgClient::~RouteGapgClient() = default;

std::vector<std::string> RouteGapgClient::Capabilities() const { return {kRouteGapgTrainTask}; }

StatusOr<serve::RemoteCloud*> RouteGapgClient::Service() {
  if (service_) return service_.get();
  const wire::TransportOptions* link = context_->link();
  if (link == nullptr) {
    return Status::FailedPrecondition("route-gapg: this client has no link to the coordinator "
                                      "to ask its inference service");
  }
  serve::RemoteOptions options;
  options.transport = *link;
  options.transport.service_session = true;  // "<client name>.serve", with or without CURVE
  options.timeout = std::chrono::milliseconds(60000);
  TANDEM_ASSIGN_OR_RETURN(service_, serve::RemoteCloud::Connect(options));
  return service_.get();
}

Status RouteGapgClient::Run(uint64_t round, const wire::TaskAssign& task,
                            wire::TaskResult* result) {
  if (task.kind != kRouteGapgTrainTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  TANDEM_ASSIGN_OR_RETURN(RouteGapgTrainTask train, RouteGapgTrainTask::Decode(task.params));
  if (train.client != context_->index()) {
    return Status::InvalidArgument("the task is for client " + std::to_string(train.client) +
                                   ", this is client " + std::to_string(context_->index()));
  }
  const ModelConfig& config = context_->model_config();
  Gpt& device = context_->model("route-gapg device",
                                [&] { return std::make_unique<Gpt>(config); });
  const wire::Tensor* weights = FindTensor(task.tensors, "device");
  const size_t n = device.params().size();
  if (weights != nullptr) {
    if (weights->dtype != wire::DType::kFloat32 || weights->shape.size() != 1 ||
        weights->shape[0] != n) {
      return Status::InvalidArgument("expected a tensor 'device' of f32[" + std::to_string(n) +
                                     "]");
    }
  } else if (device_version_ != train.device_version) {
    return Status::FailedPrecondition("the task is for device version " +
                                      std::to_string(train.device_version) +
                                      " without its weights, and this client holds " +
                                      std::to_string(device_version_));
  }
  const ParamRange range = RoutePolicyRange(device, train.trainable);
  const size_t m = range.end - range.begin;
  const wire::Tensor* policy = FindTensor(task.tensors, "policy");
  if (policy == nullptr || policy->dtype != wire::DType::kFloat32 || policy->shape.size() != 1 ||
      policy->shape[0] != m) {
    return Status::InvalidArgument("expected a tensor 'policy' of f32[" + std::to_string(m) + "]");
  }
  // This client's prompts, made once per setting.
  std::string key = train.split + "/" + std::to_string(train.part) + "/" +
                    std::to_string(train.parts) + "/" +
                    std::to_string(train.examples_per_level) + "/" +
                    std::to_string(train.test_fraction) + "/" + std::to_string(train.seed);
  for (int level : train.levels) key += "/" + std::to_string(level);
  if (key != prompts_key_) {
    TANDEM_ASSIGN_OR_RETURN(RoutePrompts all, MakeRoutePrompts(train.PromptSettings()));
    TANDEM_ASSIGN_OR_RETURN(prompts_, ClientRoutePrompts(all, train.split, train.levels,
                                                         train.part, train.parts));
    prompts_key_ = key;
  }
  // Everything is checked; only now does the client's device change.
  if (weights != nullptr) {
    weights->CopyTo(device.params());
    device_version_ = train.device_version;
  }
  const std::vector<float> sent = policy->ToFloat32();
  std::copy(sent.begin(), sent.end(), device.params().begin() + range.begin);

  max_tokens_ = train.max_tokens;
  const int64_t queries_before = oracle_->queries();
  Rng rng = RouteGapgRng(train.seed, round, train.client);
  TANDEM_ASSIGN_OR_RETURN(LocalGapgReport report,
                          RunLocalGapg(device, prompts_.train, train, *oracle_, rng));
  std::vector<float> delta(device.params().begin() + range.begin,
                           device.params().begin() + range.end);
  for (size_t i = 0; i < m; ++i) delta[i] -= sent[i];
  result->tensors = {wire::Tensor::Float32("delta", {m}, delta)};
  result->weight = static_cast<double>(prompts_.train.size());
  auto& metrics = result->metrics;
  metrics["train_loss"] = report.pg_loss;
  metrics["mean_reward"] = report.mean_reward;
  metrics["handoff_rate"] = report.handoff_rate;
  metrics["local_correct_rate"] = report.local_correct_rate;
  metrics["refused_handoffs"] = static_cast<double>(report.refused_handoffs);
  metrics["cloud_queries"] = static_cast<double>(oracle_->queries() - queries_before);
  metrics["cloud_queries_total"] = static_cast<double>(oracle_->queries());
  metrics["kept_mixed"] = static_cast<double>(report.kept_mixed);
  metrics["kept_cloud_only"] = static_cast<double>(report.kept_cloud_only);
  if (train.warm_start_steps > 0) metrics["warm_loss"] = report.warm_loss;
  if (service_) {
    const wire::TransportStats s = service_->transport_stats();
    metrics["serve_bytes_up"] = static_cast<double>(s.bytes_sent);
    metrics["serve_bytes_down"] = static_cast<double>(s.bytes_received);
  }
  return Status::Ok();
}

}  // namespace tandem

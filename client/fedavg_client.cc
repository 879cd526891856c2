// The client half of fedavg; see client/fedavg_client.h.
#include "client/fedavg_client.h"

#include <cmath>
#include <cstring>
#include <set>

#include "client/task_params.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "data/batcher.h"
#include "data/partition.h"
#include "models/adamw.h"
#include "train/data_setup.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

constexpr char kTrainTask[] = "fedavg.train";
constexpr char kEvalTask[] = "fedavg.eval";


}  // namespace

StatusOr<ClientData> LoadClientData(const Config& config, int index) {
  TANDEM_ASSIGN_OR_RETURN(DataConfig data, DataConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(int64_t clients, config.GetInt("federation.clients", 4, 1, 100'000));
  if (index < 0 || index >= clients) {
    return Status::InvalidArgument("client id " + std::to_string(index) + " is outside 0.." +
                                   std::to_string(clients - 1) + " (federation.clients = " +
                                   std::to_string(clients) + ")");
  }
  TANDEM_ASSIGN_OR_RETURN(std::string spec_text,
                          config.GetString("federation.partition", "by-category"));
  auto spec = ParsePartitionSpec(spec_text);
  if (!spec.ok()) {
    return Status::InvalidArgument(config.source() + ": federation.partition: " +
                                   spec.status().message());
  }
  TANDEM_ASSIGN_OR_RETURN(DatasetSplits splits, LoadSplits(data));
  TANDEM_ASSIGN_OR_RETURN(auto parts, PartitionRecords(splits.train, *spec,
                                                       static_cast<int>(clients), data.seed));
  ClientData out;
  for (size_t i : parts[index]) out.train.push_back(splits.train[i]);
  if (spec->kind == PartitionKind::kByCategory) {
    // Held-out records of the client's own categories.
    std::set<std::string> mine;
    for (const auto& r : out.train) mine.insert(r.category);
    for (const auto& r : splits.validation) {
      if (mine.count(r.category)) out.validation.push_back(r);
    }
  } else if (!splits.validation.empty()) {
    auto val_parts = PartitionRecords(splits.validation, *spec, static_cast<int>(clients),
                                      data.seed + 1);
    if (val_parts.ok()) {
      for (size_t i : (*val_parts)[index]) out.validation.push_back(splits.validation[i]);
    }
  }
  if (out.train.empty()) {
    return Status::FailedPrecondition("client " + std::to_string(index) +
                                      " got no training records from partition " + spec_text);
  }
  return out;
}

FedAvgClient::FedAvgClient(const ModelConfig& model, ClientData data, int index, int threads,
                           const ComputeSlots* slots)
    : model_(std::make_unique<Gpt>(model)), data_(std::move(data)),
      train_tokens_(TokenDataset::FromRecords(data_.train)), index_(index),
      threads_(std::max(1, threads)), slots_(slots) {}

std::vector<std::string> FedAvgClient::Capabilities() const { return {kTrainTask, kEvalTask}; }

Status FedAvgClient::Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) {
  if (task.kind != kTrainTask && task.kind != kEvalTask) {
    return Status::InvalidArgument("unknown task kind '" + task.kind + "'");
  }
  ComputeSlots::Lease lease;
  if (slots_ != nullptr) {
    TANDEM_ASSIGN_OR_RETURN(lease, slots_->Acquire(threads_));
  }
  SetComputeThreads(threads_);
  // Time spent computing, without the wait for a compute slot: the round's critical path is
  // compared with it (bench/round_overhead.sh).
  Stopwatch compute;
  Status s = task.kind == kTrainTask ? Train(round, task, result) : Evaluate(task, result);
  if (s.ok()) result->metrics["compute_s"] = compute.Seconds();
  return s;
}

Status FedAvgClient::LoadGlobal(const wire::TaskAssign& task) {
  auto model = task.params.find("model");
  if (model == task.params.end() || !std::holds_alternative<std::string>(model->second) ||
      std::get<std::string>(model->second) != model_->config().ToString()) {
    return Status::InvalidArgument("task is for another model than this client's " +
                                   model_->config().ToString());
  }
  const size_t n = model_->params().size();
  if (task.tensors.size() != 1 || task.tensors[0].name != "params" ||
      task.tensors[0].dtype != wire::DType::kFloat32 || task.tensors[0].shape.size() != 1 ||
      task.tensors[0].shape[0] != n) {
    return Status::InvalidArgument("expected one tensor 'params' of f32[" + std::to_string(n) +
                                   "]");
  }
  task.tensors[0].CopyTo(model_->params());
  return Status::Ok();
}

Status FedAvgClient::Train(uint64_t round, const wire::TaskAssign& task,
                           wire::TaskResult* result) {
  const wire::Params& p = task.params;
  TANDEM_ASSIGN_OR_RETURN(int64_t local_steps, IntParam(p, "local_steps", 0, 10'000'000));
  TANDEM_ASSIGN_OR_RETURN(double local_epochs, RealParam(p, "local_epochs", 0.0, 1e4));
  TANDEM_ASSIGN_OR_RETURN(int64_t batch, IntParam(p, "batch", 1, 4096));
  TANDEM_ASSIGN_OR_RETURN(double lr, RealParam(p, "lr", 0.0, 10.0));
  TANDEM_ASSIGN_OR_RETURN(double weight_decay, RealParam(p, "weight_decay", 0.0, 10.0));
  TANDEM_ASSIGN_OR_RETURN(double grad_clip, RealParam(p, "grad_clip", 0.0, 1e9));
  TANDEM_ASSIGN_OR_RETURN(double mu, RealParam(p, "proximal_mu", 0.0, 1e6));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, IntParam(p, "seed", 0, INT64_MAX));
  TANDEM_RETURN_IF_ERROR(LoadGlobal(task));

  const int B = static_cast<int>(batch), T = model_->config().context;
  TANDEM_ASSIGN_OR_RETURN(Batcher batcher,
                          Batcher::Create(train_tokens_, B, T));
  int64_t steps = local_steps;
  if (local_epochs > 0) {
    const double tokens = static_cast<double>(batcher.data().size());
    steps = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(local_epochs * tokens / (B * T))));
  }
  const auto n = model_->params().size();
  std::vector<float> global(model_->params().begin(), model_->params().end());
  AdamWConfig adamw;
  adamw.weight_decay = static_cast<float>(weight_decay);
  AdamW opt(adamw, model_->layout());
  // The same (seed, client, round) gives the same batches, so a replayed round is identical.
  Rng rng = Rng(static_cast<uint64_t>(seed)).Fork((static_cast<uint64_t>(index_) << 32) ^ round);
  std::vector<int32_t> tokens(static_cast<size_t>(B) * T), targets(tokens.size());
  double loss_sum = 0.0;
  for (int64_t step = 0; step < steps; ++step) {
    batcher.Next(&rng, tokens.data(), targets.data());
    model_->ZeroGrad();
    const double loss = model_->Forward(tokens.data(), targets.data(), B, T);
    if (!std::isfinite(loss)) {
      return Status::Internal("local training diverged at step " + std::to_string(step) +
                              " (loss not finite); lower client.lr");
    }
    loss_sum += loss;
    model_->Backward();
    if (mu > 0) {
      // FedProx: the gradient of μ/2·‖w − w_global‖².
      auto w = model_->params();
      auto g = model_->grads();
      const float m = static_cast<float>(mu);
      for (size_t i = 0; i < n; ++i) g[i] += m * (w[i] - global[i]);
    }
    if (grad_clip > 0) ClipGradientNorm(model_->grads(), grad_clip);
    opt.Step(model_->params(), model_->grads(), static_cast<float>(lr));
  }
  std::vector<float> delta(n);
  const auto w = model_->params();
  for (size_t i = 0; i < n; ++i) delta[i] = w[i] - global[i];
  result->tensors.clear();
  result->tensors.push_back(wire::Tensor::Float32("delta", {n}, delta));
  result->weight = static_cast<double>(data_.train.size());
  result->metrics = {{"train_loss", steps > 0 ? loss_sum / steps : 0.0},
                     {"steps", static_cast<double>(steps)}};
  return Status::Ok();
}

Status FedAvgClient::Evaluate(const wire::TaskAssign& task, wire::TaskResult* result) {
  TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens, IntParam(task.params, "eval_tokens", 0, INT64_MAX));
  TANDEM_RETURN_IF_ERROR(LoadGlobal(task));
  if (data_.validation.empty()) {
    return Status::FailedPrecondition("this client has no held-out records");
  }
  TANDEM_ASSIGN_OR_RETURN(LossResult r, EvaluateLoss(*model_, data_.validation, 16, max_tokens));
  result->tensors.clear();
  result->weight = static_cast<double>(r.tokens);
  result->metrics = {{"val_loss", r.loss}};
  return Status::Ok();
}

}  // namespace tandem

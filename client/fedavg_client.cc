// The client half of fedavg; see client/fedavg_client.h.
#include "client/fedavg_client.h"

#include <algorithm>
#include <cmath>
#include <optional>
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
#include "distill/ensemble.h"
#include "distill/kd_loss.h"
#include "distill/topk.h"
#include "models/adamw.h"
#include "train/data_setup.h"
#include "train/evaluate.h"

namespace tandem {
namespace {

constexpr char kTrainTask[] = "fedavg.train";
constexpr char kEvalTask[] = "fedavg.eval";
constexpr char kDistillTask[] = "distill.train";
constexpr char kDistillUpTask[] = "distill.up";
constexpr char kMutualTask[] = "distill.mutual";
constexpr char kAdapterTask[] = "fedcollm.train";
constexpr char kAdapterEvalTask[] = "fedcollm.eval";
constexpr char kLocalEvalTask[] = "distill.eval";

const wire::Tensor* Named(const wire::TaskAssign& task, const std::string& name) {
  for (const auto& t : task.tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// The rows of `windows` (each T rows of `all`, in window order) as one TopKTargets.
TopKTargets GatherWindows(const TopKTargets& all, const std::vector<int>& windows, int T) {
  TopKTargets out;
  out.k = all.k;
  out.vocab = all.vocab;
  out.temperature = all.temperature;
  out.rows = static_cast<int>(windows.size()) * T;
  for (int w : windows) {
    const TopKTargets part = SliceTopK(all, w * T, T);
    out.indices.insert(out.indices.end(), part.indices.begin(), part.indices.end());
    out.probs.insert(out.probs.end(), part.probs.begin(), part.probs.end());
    out.tail.insert(out.tail.end(), part.tail.begin(), part.tail.end());
  }
  return out;
}


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
  out.public_ = splits.public_;
  out.all_validation = splits.validation;
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
      train_tokens_(TokenDataset::FromRecords(data_.train)),
      public_tokens_(TokenDataset::FromRecords(data_.public_)), index_(index),
      threads_(std::max(1, threads)), slots_(slots) {}

std::vector<std::string> FedAvgClient::Capabilities() const {
  return {kTrainTask,   kEvalTask,        kDistillTask,  kDistillUpTask,
          kMutualTask,  kAdapterTask,     kLocalEvalTask, kAdapterEvalTask};
}

struct FedAvgClient::KdBatches {
  int context = 0;              // window length: the task's kd.context, at most the model's
  std::vector<int32_t> starts;  // public-stream offset of each window
  TopKTargets targets;          // (windows · T) rows, window by window
  KdOptions options;
  double weight = 1.0;          // of the KD batch's loss against the own-data loss
};

StatusOr<FedAvgClient::KdBatches> FedAvgClient::LoadKd(const wire::TaskAssign& task) const {
  KdBatches kd;
  const wire::Params& p = task.params;
  TANDEM_ASSIGN_OR_RETURN(double alpha, RealParam(p, "kd.alpha", 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(double temperature, RealParam(p, "kd.temperature", 1e-3, 1e3));
  TANDEM_ASSIGN_OR_RETURN(kd.weight, RealParam(p, "kd.weight", 0.0, 1e3));
  kd.options.alpha = static_cast<float>(alpha);
  kd.options.temperature = static_cast<float>(temperature);
  const wire::Tensor* windows = Named(task, "kd.windows");
  const wire::Tensor* words = Named(task, "kd.topk_words");
  const wire::Tensor* values = Named(task, "kd.topk_values");
  if (windows == nullptr || windows->dtype != wire::DType::kUint32 || words == nullptr ||
      words->dtype != wire::DType::kUint32 || values == nullptr ||
      values->dtype != wire::DType::kFloat32) {
    return Status::InvalidArgument("a distill.train task needs u32 'kd.windows', u32 "
                                   "'kd.topk_words' and f32 'kd.topk_values'");
  }
  TANDEM_ASSIGN_OR_RETURN(kd.context, WindowContext(task.params));
  const int T = kd.context;
  const std::vector<uint32_t> starts = windows->ToUint32();
  if (starts.empty()) return Status::InvalidArgument("kd.windows is empty");
  if (public_tokens_.size() < static_cast<size_t>(T) + 1) {
    return Status::FailedPrecondition("this client's public split has fewer than " +
                                      std::to_string(T + 1) + " tokens");
  }
  const size_t last = public_tokens_.size() - static_cast<size_t>(T) - 1;
  for (uint32_t s : starts) {
    if (s > last) {
      return Status::InvalidArgument("kd.windows: start " + std::to_string(s) +
                                     " is past the public split's last window " +
                                     std::to_string(last));
    }
    kd.starts.push_back(static_cast<int32_t>(s));
  }
  TANDEM_ASSIGN_OR_RETURN(kd.targets, DecodeTopK(words->ToUint32(), values->ToFloat32()));
  if (kd.targets.rows != static_cast<int>(starts.size()) * T ||
      kd.targets.vocab != model_->config().vocab ||
      kd.targets.temperature != kd.options.temperature) {
    return Status::InvalidArgument("kd targets hold " + std::to_string(kd.targets.rows) +
                                   " rows of vocabulary " + std::to_string(kd.targets.vocab) +
                                   " at T " + std::to_string(kd.targets.temperature) +
                                   "; expected " + std::to_string(starts.size() * T) +
                                   " rows of " + std::to_string(model_->config().vocab) +
                                   " at the task's kd.temperature");
  }
  return kd;
}

Status FedAvgClient::Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) {
  if (task.kind != kTrainTask && task.kind != kEvalTask && task.kind != kDistillTask &&
      task.kind != kDistillUpTask && task.kind != kMutualTask && task.kind != kAdapterTask &&
      task.kind != kLocalEvalTask && task.kind != kAdapterEvalTask) {
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
  const bool evaluate = task.kind == kEvalTask || task.kind == kAdapterEvalTask;
  Status s = evaluate                      ? Evaluate(task, result)
             : task.kind == kLocalEvalTask ? EvaluateLocal(task, result)
                                           : Train(round, task, result);
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
  const wire::Tensor* params = Named(task, "params");
  if (params == nullptr || params->dtype != wire::DType::kFloat32 || params->shape.size() != 1 ||
      params->shape[0] != n) {
    return Status::InvalidArgument("expected a tensor 'params' of f32[" + std::to_string(n) + "]");
  }
  params->CopyTo(model_->params());
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
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, IntParam(p, "seed", 0, INT64_MAX));
  // distill.up and distill.mutual train this client's own SLM and upload its predictions.
  const bool up = task.kind == kDistillUpTask || task.kind == kMutualTask;
  // distill-down with local SLMs: the LLM's targets come down, and nothing goes back up.
  bool upload = true;
  if (p.count("kd.upload")) {
    TANDEM_ASSIGN_OR_RETURN(int64_t flag, IntParam(p, "kd.upload", 0, 1));
    upload = flag == 1;
  }
  double mu = 0.0;
  if (up) {
    // distill-up: this client's own SLM, which stays here between rounds.
    TANDEM_RETURN_IF_ERROR(UseLocalModel(task, static_cast<uint64_t>(seed)));
  } else {
    TANDEM_ASSIGN_OR_RETURN(mu, RealParam(p, "proximal_mu", 0.0, 1e6));
    TANDEM_RETURN_IF_ERROR(LoadGlobal(task));
  }
  // fedcollm: only the LoRA adapters train, on the frozen global base.
  const bool adapters = task.kind == kAdapterTask;
  if (adapters) TANDEM_RETURN_IF_ERROR(LoadAdapters(task));
  std::optional<KdBatches> kd;
  if (task.kind == kDistillTask || task.kind == kMutualTask) {
    TANDEM_ASSIGN_OR_RETURN(KdBatches loaded, LoadKd(task));
    kd = std::move(loaded);
  }

  const int B = static_cast<int>(batch), T = model_->config().context;
  TANDEM_ASSIGN_OR_RETURN(Batcher batcher,
                          Batcher::Create(train_tokens_, B, T));
  int64_t steps = local_steps;
  if (local_epochs > 0) {
    const double tokens = static_cast<double>(batcher.data().size());
    steps = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(local_epochs * tokens / (B * T))));
  }
  // What trains: every parameter, or the adapters alone.
  const std::span<float> trained = adapters ? model_->lora_params() : model_->params();
  const std::span<float> trained_grads = adapters ? model_->lora_grads() : model_->grads();
  const auto n = trained.size();
  std::vector<float> global(trained.begin(), trained.end());
  AdamWConfig adamw;
  adamw.weight_decay = static_cast<float>(weight_decay);
  AdamW opt(adamw, adapters ? model_->lora_layout() : model_->layout());
  // The same (seed, client, round) gives the same batches, so a replayed round is identical.
  Rng rng = Rng(static_cast<uint64_t>(seed)).Fork((static_cast<uint64_t>(index_) << 32) ^ round);
  std::vector<int32_t> tokens(static_cast<size_t>(B) * T), targets(tokens.size());
  // KD batches walk the task's public windows in order, B at a time, wrapping around.
  const int kd_windows = kd ? static_cast<int>(kd->starts.size()) : 0;
  const int kd_batch = std::min(B, std::max(kd_windows, 1));
  const int kdT = kd ? kd->context : T;
  std::vector<int32_t> kd_tokens(static_cast<size_t>(kd_batch) * kdT), kd_targets(kd_tokens.size());
  std::vector<float> dlogits;
  std::vector<int> chosen(kd_batch);
  double loss_sum = 0.0, kd_sum = 0.0, kl_sum = 0.0;
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
    if (kd) {
      const auto& pub = public_tokens_.tokens();
      for (int b = 0; b < kd_batch; ++b) {
        chosen[b] = static_cast<int>((step * kd_batch + b) % kd_windows);
        const size_t s = static_cast<size_t>(kd->starts[chosen[b]]);
        std::copy(pub.begin() + s, pub.begin() + s + kdT, kd_tokens.begin() + b * kdT);
        std::copy(pub.begin() + s + 1, pub.begin() + s + kdT + 1, kd_targets.begin() + b * kdT);
      }
      const TopKTargets teacher = GatherWindows(kd->targets, chosen, kdT);
      const int N = kd_batch * kdT, V = model_->config().vocab;
      model_->Forward(kd_tokens.data(), nullptr, kd_batch, kdT);
      const KdLoss l = KdTopKForward(model_->logits(), teacher, kd_targets.data(), N, V,
                                     kd->options);
      if (!std::isfinite(l.loss)) {
        return Status::Internal("distillation loss not finite at step " + std::to_string(step));
      }
      kd_sum += l.loss;
      kl_sum += l.kl;
      dlogits.resize(static_cast<size_t>(N) * V);
      KdTopKBackward(dlogits.data(), model_->logits(), teacher, kd_targets.data(), N, V,
                     kd->options, l.count, static_cast<float>(kd->weight));
      model_->BackwardFromLogits(dlogits.data());
    }
    if (mu > 0) {
      // FedProx: the gradient of μ/2·‖w − w_global‖².
      const float m = static_cast<float>(mu);
      for (size_t i = 0; i < n; ++i) trained_grads[i] += m * (trained[i] - global[i]);
    }
    if (grad_clip > 0) ClipGradientNorm(trained_grads, grad_clip);
    opt.Step(trained, trained_grads, static_cast<float>(lr));
  }
  result->tensors.clear();
  if (up && !upload) {
    result->weight = 1.0;
  } else if (up) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<float> probs, PredictWindows(task));
    result->tensors.push_back(wire::Tensor::Float32("probs", {probs.size()}, probs));
    result->weight = 1.0;  // the ensemble is a plain mean of the clients' distributions
  } else {
    std::vector<float> delta(n);
    for (size_t i = 0; i < n; ++i) delta[i] = trained[i] - global[i];
    result->tensors.push_back(wire::Tensor::Float32("delta", {n}, delta));
    result->weight = static_cast<double>(data_.train.size());
  }
  result->metrics = {{"train_loss", steps > 0 ? loss_sum / steps : 0.0},
                     {"steps", static_cast<double>(steps)}};
  if (kd && steps > 0) {
    result->metrics["kd_loss"] = kd_sum / steps;
    result->metrics["kd_kl"] = kl_sum / steps;
  }
  return Status::Ok();
}

StatusOr<int> FedAvgClient::WindowContext(const wire::Params& params) const {
  // Clients of different architectures predict on windows of the shortest context among them.
  if (!params.count("kd.context")) return model_->config().context;
  TANDEM_ASSIGN_OR_RETURN(int64_t context, IntParam(params, "kd.context", 1, model_->config().context));
  return static_cast<int>(context);
}

Status FedAvgClient::LoadAdapters(const wire::TaskAssign& task) {
  const wire::Params& p = task.params;
  LoraConfig lora;
  TANDEM_ASSIGN_OR_RETURN(int64_t rank, IntParam(p, "lora.rank", 1, 4096));
  TANDEM_ASSIGN_OR_RETURN(double alpha, RealParam(p, "lora.alpha", 1e-6, 1e6));
  TANDEM_ASSIGN_OR_RETURN(std::string targets, StringParam(p, "lora.targets"));
  lora.rank = static_cast<int>(rank);
  lora.alpha = static_cast<float>(alpha);
  lora.targets.clear();
  for (size_t at = 0; at <= targets.size();) {
    const size_t comma = std::min(targets.find(',', at), targets.size());
    lora.targets.push_back(targets.substr(at, comma - at));
    at = comma + 1;
  }
  TANDEM_RETURN_IF_ERROR(lora.Validate());
  if (!model_->has_lora()) {
    TANDEM_RETURN_IF_ERROR(model_->EnableLora(lora, 0));
  } else if (model_->lora_config().rank != lora.rank ||
             model_->lora_config().alpha != lora.alpha ||
             model_->lora_config().targets != lora.targets) {
    return Status::InvalidArgument("the task's LoRA configuration changed during the run");
  }
  const wire::Tensor* adapters = Named(task, "lora");
  const size_t n = model_->lora_params().size();
  if (adapters == nullptr || adapters->dtype != wire::DType::kFloat32 ||
      adapters->NumElements() != n) {
    return Status::InvalidArgument("expected a tensor 'lora' of f32[" + std::to_string(n) + "]");
  }
  adapters->CopyTo(model_->lora_params());
  return Status::Ok();
}

Status FedAvgClient::UseLocalModel(const wire::TaskAssign& task, uint64_t seed) {
  auto model = task.params.find("model");
  if (model == task.params.end() || !std::holds_alternative<std::string>(model->second) ||
      std::get<std::string>(model->second) != model_->config().ToString()) {
    return Status::InvalidArgument("task is for another model than this client's " +
                                   model_->config().ToString());
  }
  if (!local_ready_) {
    if (!initial_params_.empty()) {
      std::copy(initial_params_.begin(), initial_params_.end(), model_->params().begin());
    } else {
      model_->InitWeights(seed ^ (static_cast<uint64_t>(index_) << 20));
    }
    local_ready_ = true;
  }
  return Status::Ok();
}

StatusOr<std::vector<float>> FedAvgClient::PredictWindows(const wire::TaskAssign& task) {
  TANDEM_ASSIGN_OR_RETURN(double temperature, RealParam(task.params, "kd.temperature", 1e-3, 1e3));
  const wire::Tensor* windows = Named(task, "kd.windows");
  if (windows == nullptr || windows->dtype != wire::DType::kUint32 || windows->NumElements() == 0) {
    return Status::InvalidArgument("a distill.up task needs a non-empty u32 tensor 'kd.windows'");
  }
  TANDEM_ASSIGN_OR_RETURN(const int T, WindowContext(task.params));
  const int V = model_->config().vocab;
  const std::vector<uint32_t> starts = windows->ToUint32();
  if (public_tokens_.size() < static_cast<size_t>(T) + 1) {
    return Status::FailedPrecondition("this client's public split is shorter than one context");
  }
  const size_t last = public_tokens_.size() - static_cast<size_t>(T) - 1;
  const auto& pub = public_tokens_.tokens();
  std::vector<float> probs(starts.size() * static_cast<size_t>(T) * V);
  for (size_t w = 0; w < starts.size(); ++w) {
    if (starts[w] > last) {
      return Status::InvalidArgument("kd.windows: start " + std::to_string(starts[w]) +
                                     " is past the public split's last window");
    }
    model_->Forward(pub.data() + starts[w], nullptr, 1, T);
    EnsembleContribution(probs.data() + w * T * V, model_->logits(), T, V,
                         static_cast<float>(temperature), EnsembleMode::kMeanProbabilities);
  }
  return probs;
}

Status FedAvgClient::Evaluate(const wire::TaskAssign& task, wire::TaskResult* result) {
  TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens, IntParam(task.params, "eval_tokens", 0, INT64_MAX));
  TANDEM_RETURN_IF_ERROR(LoadGlobal(task));
  // fedcollm's SLM is the global base with the averaged adapters.
  if (task.kind == kAdapterEvalTask) TANDEM_RETURN_IF_ERROR(LoadAdapters(task));
  if (data_.validation.empty()) {
    return Status::FailedPrecondition("this client has no held-out records");
  }
  TANDEM_ASSIGN_OR_RETURN(LossResult r, EvaluateLoss(*model_, data_.validation, 16, max_tokens));
  result->tensors.clear();
  result->weight = static_cast<double>(r.tokens);
  result->metrics = {{"val_loss", r.loss}};
  return Status::Ok();
}

Status FedAvgClient::EvaluateLocal(const wire::TaskAssign& task, wire::TaskResult* result) {
  TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens, IntParam(task.params, "eval_tokens", 0, INT64_MAX));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, IntParam(task.params, "seed", 0, INT64_MAX));
  TANDEM_RETURN_IF_ERROR(UseLocalModel(task, static_cast<uint64_t>(seed)));
  if (data_.validation.empty() || data_.all_validation.empty()) {
    return Status::FailedPrecondition("this client has no held-out records");
  }
  TANDEM_ASSIGN_OR_RETURN(LossResult own, EvaluateLoss(*model_, data_.validation, 16, max_tokens));
  TANDEM_ASSIGN_OR_RETURN(LossResult all,
                          EvaluateLoss(*model_, data_.all_validation, 16, max_tokens));
  result->tensors.clear();
  result->weight = static_cast<double>(own.tokens);
  result->metrics = {{"own_val_loss", own.loss}, {"all_val_loss", all.loss}};
  return Status::Ok();
}

}  // namespace tandem

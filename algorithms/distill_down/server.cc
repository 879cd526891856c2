#include "algorithms/distill_down/server.h"

#include <algorithm>

#include "algorithms/common/task_parts.h"
#include "algorithms/distill_down/tasks.h"
#include "core/config.h"
#include "data/public_windows.h"
#include "core/timer.h"
#include "distill/topk.h"

namespace tandem {
namespace {

constexpr const char* kDistillTask = kDistillTrainTask;

}  // namespace

StatusOr<DistillDownConfig> DistillDownConfigFromConfig(const Config& config) {
  DistillDownConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.teacher, config.RequireString("distill-down.teacher"));
  TANDEM_ASSIGN_OR_RETURN(int64_t k, config.GetInt("distill-down.top_k", c.top_k, 1, 1 << 20));
  TANDEM_ASSIGN_OR_RETURN(c.temperature,
                          config.GetDouble("distill-down.temperature", c.temperature, 1e-3, 1e3));
  TANDEM_ASSIGN_OR_RETURN(c.alpha, config.GetDouble("distill-down.alpha", c.alpha, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(c.weight, config.GetDouble("distill-down.weight", c.weight, 0.0, 1e3));
  TANDEM_ASSIGN_OR_RETURN(int64_t w, config.GetInt("distill-down.windows", c.windows, 1, 65536));
  TANDEM_ASSIGN_OR_RETURN(c.slms, config.GetChoice("distill-down.slms", c.slms, {"fedavg", "local"}));
  c.top_k = static_cast<int>(k);
  c.windows = static_cast<int>(w);
  return c;
}

StatusOr<std::unique_ptr<DistillDownServer>> DistillDownServer::Create(
    DistillDownConfig config, std::unique_ptr<FedAvgServer> inner, std::unique_ptr<Gpt> teacher,
    const std::vector<Record>& public_records, uint64_t seed) {
  const int context = inner->model().config().context;
  return Create(std::move(config), std::move(inner),
                std::make_shared<SharedTeacher>(std::shared_ptr<Gpt>(std::move(teacher)), context), public_records, seed);
}

StatusOr<std::unique_ptr<DistillDownServer>> DistillDownServer::Create(
    DistillDownConfig config, std::unique_ptr<FedAvgServer> inner,
    std::shared_ptr<SharedTeacher> teacher, const std::vector<Record>& public_records,
    uint64_t seed) {
  const ModelConfig& slm = inner->model().config();
  const ModelConfig& llm = teacher->model->config();
  const int context = teacher->context;
  if (llm.vocab != slm.vocab) {
    return Status::InvalidArgument("distill-down.teacher has a vocabulary of " +
                                   std::to_string(llm.vocab) + ", the SLM " +
                                   std::to_string(slm.vocab));
  }
  if (context < 1 || context > slm.context) {
    return Status::InvalidArgument("distill-down windows of " + std::to_string(context) +
                                   " tokens do not fit the SLM's context " +
                                   std::to_string(slm.context));
  }
  if (llm.context < context) {
    return Status::InvalidArgument("distill-down.teacher's context " + std::to_string(llm.context) +
                                   " is shorter than the distillation windows' " +
                                   std::to_string(context));
  }
  if (config.top_k > slm.vocab) {
    return Status::InvalidArgument("distill-down.top_k " + std::to_string(config.top_k) +
                                   " exceeds the vocabulary " + std::to_string(slm.vocab));
  }
  TokenDataset tokens = TokenDataset::FromRecords(public_records);
  if (tokens.size() < static_cast<size_t>(context) + 1) {
    return Status::InvalidArgument(
        "distill-down needs a public split of at least one context (" +
        std::to_string(context + 1) + " tokens), it has " + std::to_string(tokens.size()) +
        "; set data.public_categories or data.public_fraction");
  }
  return std::unique_ptr<DistillDownServer>(new DistillDownServer(
      std::move(config), std::move(inner), std::move(teacher), std::move(tokens), seed));
}

DistillDownServer::DistillDownServer(DistillDownConfig config, std::unique_ptr<FedAvgServer> inner,
                                     std::shared_ptr<SharedTeacher> teacher,
                                     TokenDataset public_tokens, uint64_t seed)
    : config_(std::move(config)), inner_(std::move(inner)), teacher_(std::move(teacher)),
      public_tokens_(std::move(public_tokens)), seed_(seed) {}

std::vector<std::string> DistillDownServer::RequiredCapabilities() const {
  std::vector<std::string> caps = inner_->RequiredCapabilities();
  std::replace(caps.begin(), caps.end(), std::string(kFedAvgTrainTask), std::string(kDistillTask));
  return caps;
}


std::vector<uint32_t> DistillDownServer::DrawWindows(uint64_t round) const {
  return PublicWindows::Draw(public_tokens_.size(), teacher_->context, config_.windows, seed_,
                             round);
}

size_t DistillDownServer::AddTargets(const std::vector<uint32_t>& starts, TaskSpec* spec) {
  SharedTeacher& t = *teacher_;
  if (t.targets.empty() || t.starts != starts || t.k != config_.top_k ||
      t.temperature != config_.temperature) {
    TaskSpec computed;
    t.bytes = AddTeacherTargets(*t.model, public_tokens_, starts, t.context, config_.top_k,
                                config_.temperature, &computed);
    t.targets = std::move(computed.tensors);
    t.starts = starts;
    t.k = config_.top_k;
    t.temperature = config_.temperature;
  }
  spec->tensors.insert(spec->tensors.end(), t.targets.begin(), t.targets.end());
  return t.bytes;
}

StatusOr<TaskSpec> DistillDownServer::BeginRound(uint64_t round,
                                                 const std::vector<ClientInfo>& cohort) {
  kd_sum_ = kl_sum_ = kd_weight_ = 0.0;
  TANDEM_ASSIGN_OR_RETURN(TaskSpec spec, inner_->BeginRound(round, cohort));
  if (spec.kind != kFedAvgTrainTask) return spec;
  Stopwatch watch;
  const std::vector<uint32_t> starts = DrawWindows(round);
  spec.kind = kDistillTask;
  KdTaskSettings kd;
  kd.options.alpha = static_cast<float>(config_.alpha);
  kd.options.temperature = static_cast<float>(config_.temperature);
  kd.weight = config_.weight;
  EncodeKd(kd, &spec.params);
  // Windows shorter than this SLM's context (a teacher shared with smaller-context groups).
  const bool shorter = teacher_->context != inner_->model().config().context;
  EncodeWindows(starts, shorter ? std::optional<int>(teacher_->context) : std::nullopt,
                &spec.params, &spec.tensors);
  targets_bytes_ = AddTargets(starts, &spec) + starts.size() * 4;
  teacher_s_ = watch.Seconds();
  return spec;
}

Status DistillDownServer::OnResult(const ClientInfo& client, const wire::TaskResult& result) {
  TANDEM_RETURN_IF_ERROR(inner_->OnResult(client, result));
  auto kd = result.metrics.find("kd_loss");
  auto kl = result.metrics.find("kd_kl");
  if (kd != result.metrics.end() && kl != result.metrics.end() && result.weight > 0) {
    kd_sum_ += kd->second * result.weight;
    kl_sum_ += kl->second * result.weight;
    kd_weight_ += result.weight;
  }
  return Status::Ok();
}

void DistillDownServer::AbortRound() {
  inner_->AbortRound();
  kd_sum_ = kl_sum_ = kd_weight_ = 0.0;
}

Status DistillDownServer::EndRound(uint64_t round, std::map<std::string, double>* metrics) {
  TANDEM_RETURN_IF_ERROR(inner_->EndRound(round, metrics));
  if (kd_weight_ > 0) {
    (*metrics)["kd_loss"] = kd_sum_ / kd_weight_;
    (*metrics)["kd_kl"] = kl_sum_ / kd_weight_;
  }
  (*metrics)["teacher_s"] = teacher_s_;
  (*metrics)["kd_targets_bytes"] = static_cast<double>(targets_bytes_);
  return Status::Ok();
}

}  // namespace tandem

// Local training shared by client halves; see algorithms/common/client_training.h.
#include "algorithms/common/client_training.h"

#include <cmath>
#include <memory>

#include "core/rng.h"
#include "train/evaluate.h"

namespace tandem {

StatusOr<TrainReport> TrainOnOwnData(const ClientContext& context, Gpt* model,
                                     const OwnDataTraining& training, std::vector<float>* start) {
  const LocalTrainConfig& t = training.params.train;
  const int B = t.batch, T = model->config().context;
  TANDEM_ASSIGN_OR_RETURN(Batcher batcher, Batcher::Create(context.train_tokens(), B, T));
  const int64_t steps = training.params.Steps(batcher.data().size(), T);
  TrainerOptions options;
  options.trainable = training.trainable;
  options.adamw.weight_decay = static_cast<float>(t.weight_decay);
  options.grad_clip = t.grad_clip;
  LocalTrainer trainer(model, options);
  start->assign(trainer.params().begin(), trainer.params().end());
  TextTerm text(std::move(batcher));
  std::vector<LossTerm*> terms = {&text};
  terms.insert(terms.end(), training.extra.begin(), training.extra.end());
  std::unique_ptr<ProximalTerm> prox;
  if (training.proximal_mu > 0) {
    prox = std::make_unique<ProximalTerm>(training.proximal_mu, *start);
    terms.push_back(prox.get());
  }
  Rng rng = Rng(training.params.seed)
                .Fork((static_cast<uint64_t>(context.index()) << 32) ^ training.round);
  return trainer.Run(terms, steps, static_cast<float>(t.lr), rng);
}

void ReportTraining(const TrainReport& report, wire::TaskResult* result) {
  result->metrics = {{"train_loss", report.steps > 0 ? report.Mean("train_loss") : 0.0},
                     {"steps", static_cast<double>(report.steps)}};
  const double kd = report.Mean("kd_loss");
  if (report.steps > 0 && !std::isnan(kd)) {
    result->metrics["kd_loss"] = kd;
    result->metrics["kd_kl"] = report.Mean("kd_kl");
  }
}

void UploadDelta(const ClientContext& context, std::span<const float> trained,
                 const std::vector<float>& start, wire::TaskResult* result) {
  const size_t n = trained.size();
  std::vector<float> delta(n);
  for (size_t i = 0; i < n; ++i) delta[i] = trained[i] - start[i];
  result->tensors.clear();
  result->tensors.push_back(wire::Tensor::Float32("delta", {n}, delta));
  result->weight = static_cast<double>(context.data().train.size());
}

Status EvaluateOwn(const ClientContext& context, Gpt& model, int64_t max_tokens,
                   wire::TaskResult* result) {
  if (context.data().validation.empty()) {
    return Status::FailedPrecondition("this client has no held-out records");
  }
  TANDEM_ASSIGN_OR_RETURN(LossResult r,
                          EvaluateLoss(model, context.data().validation, 16, max_tokens));
  result->tensors.clear();
  result->weight = static_cast<double>(r.tokens);
  result->metrics = {{"val_loss", r.loss}};
  return Status::Ok();
}

}  // namespace tandem

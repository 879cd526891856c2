// Own-model client pieces; see algorithms/common/own_model.h.
#include "algorithms/common/own_model.h"

#include "algorithms/common/task_parts.h"
#include "client/task_params.h"
#include "distill/confidence.h"
#include "distill/ensemble.h"
#include "distill/votes.h"
#include "train/evaluate.h"

namespace tandem {

StatusOr<Gpt*> OwnModelFor(ClientContext* context, const wire::TaskAssign& task, uint64_t seed) {
  TANDEM_RETURN_IF_ERROR(CheckModelName(task.params, context->model_config()));
  return &context->own(seed);
}

std::vector<float> PredictWindows(Gpt& model, const PublicWindows& windows, float temperature) {
  const int T = windows.context(), V = model.config().vocab;
  std::vector<float> probs(static_cast<size_t>(windows.count()) * T * V);
  std::vector<int32_t> tokens(T), targets(T);
  for (int w = 0; w < windows.count(); ++w) {
    windows.Gather(w, tokens.data(), targets.data());
    model.Forward(tokens.data(), nullptr, 1, T);
    EnsembleContribution(probs.data() + static_cast<size_t>(w) * T * V, model.logits(), T, V,
                         temperature, EnsembleMode::kMeanProbabilities);
  }
  return probs;
}

StatusOr<std::vector<float>> PredictUpload(Gpt& model, const PublicWindows& windows,
                                           float temperature, EnsembleUpload upload,
                                           int vote_top_k) {
  if (upload == EnsembleUpload::kMean) return PredictWindows(model, windows, temperature);
  const int T = windows.context(), V = model.config().vocab, N = windows.count() * T;
  if (upload == EnsembleUpload::kVotes && (vote_top_k < 1 || vote_top_k > V)) {
    return Status::InvalidArgument("kd.vote_top_k = " + std::to_string(vote_top_k) +
                                   " is not in [1, " + std::to_string(V) + "]");
  }
  std::vector<float> logits(static_cast<size_t>(N) * V);  // (N,V)
  std::vector<int32_t> tokens(T), targets(T);
  for (int w = 0; w < windows.count(); ++w) {
    windows.Gather(w, tokens.data(), targets.data());
    model.Forward(tokens.data(), nullptr, 1, T);
    std::copy(model.logits(), model.logits() + static_cast<size_t>(T) * V,
              logits.begin() + static_cast<size_t>(w) * T * V);
  }
  std::vector<float> out(EnsembleUploadLength(upload, N, V));
  if (upload == EnsembleUpload::kConfidence) {
    ConfidenceContribution(out.data(), logits.data(), N, V, temperature);
  } else {
    VoteContribution(out.data(), logits.data(), N, V, vote_top_k);
  }
  return out;
}

Status EvaluateOwnModel(ClientContext* context, const wire::TaskAssign& task,
                        wire::TaskResult* result) {
  TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens, DecodeEvalTokens(task.params));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, IntParam(task.params, "seed", 0, INT64_MAX));
  TANDEM_ASSIGN_OR_RETURN(Gpt * model, OwnModelFor(context, task, static_cast<uint64_t>(seed)));
  const ClientData& data = context->data();
  if (data.validation.empty() || data.all_validation.empty()) {
    return Status::FailedPrecondition("this client has no held-out records");
  }
  TANDEM_ASSIGN_OR_RETURN(LossResult own, EvaluateLoss(*model, data.validation, 16, max_tokens));
  TANDEM_ASSIGN_OR_RETURN(LossResult all,
                          EvaluateLoss(*model, data.all_validation, 16, max_tokens));
  result->tensors.clear();
  result->weight = static_cast<double>(own.tokens);
  result->metrics = {{"own_val_loss", own.loss}, {"all_val_loss", all.loss}};
  return Status::Ok();
}

}  // namespace tandem

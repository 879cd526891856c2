// The local trainer; see train/local_trainer.h.
#include "train/local_trainer.h"

#include <cmath>

namespace tandem {

TextTerm::TextTerm(Batcher batcher, std::string name)
    : batcher_(std::move(batcher)), name_(std::move(name)),
      tokens_(static_cast<size_t>(batcher_.batch()) * batcher_.context()),
      targets_(tokens_.size()) {}

StatusOr<TermLoss> TextTerm::Accumulate(Gpt& model, int64_t step, Rng& rng) {
  batcher_.Next(&rng, tokens_.data(), targets_.data());
  TermLoss out;
  out.loss = model.Forward(tokens_.data(), targets_.data(), batcher_.batch(), batcher_.context());
  if (std::isfinite(out.loss)) model.Backward();
  return out;
}

ProximalTerm::ProximalTerm(double mu, std::span<const float> anchor)
    : mu_(static_cast<float>(mu)), anchor_(anchor.begin(), anchor.end()) {}

void ProximalTerm::Bind(std::span<const float> params, std::span<float> grads) {
  TANDEM_CHECK(params.size() == anchor_.size() && grads.size() == anchor_.size());
  params_ = params;
  grads_ = grads;
}

StatusOr<TermLoss> ProximalTerm::Accumulate(Gpt&, int64_t, Rng&) {
  TANDEM_CHECK(params_.size() == anchor_.size());  // Bind() was called
  const size_t n = anchor_.size();
  double sq = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const float d = params_[i] - anchor_[i];
    grads_[i] += mu_ * d;
    sq += static_cast<double>(d) * d;
  }
  return TermLoss{0.5 * mu_ * sq};
}

double TrainReport::Mean(const std::string& key) const {
  for (const auto& [k, v] : means) {
    if (k == key) return v;
  }
  return std::numeric_limits<double>::quiet_NaN();
}

namespace {

// Whether the trainer steps the adapters' buffer rather than the base's.
bool StepsAdapters(const Gpt& model, const TrainerOptions& options) {
  if (!options.trainable) return false;
  const Trainable& t = *options.trainable;
  // Base ranges and adapters at once would be two buffers with two optimizers.
  TANDEM_CHECK(!(t.any_base() && t.adapters() && model.has_lora()));
  return t.adapters() && !t.any_base();
}
std::span<float> TrainedParams(Gpt& model, bool adapters) {
  return adapters ? model.lora_params() : model.params();
}
std::span<float> TrainedGrads(Gpt& model, bool adapters) {
  return adapters ? model.lora_grads() : model.grads();
}
const ParamLayout& TrainedLayout(const Gpt& model, bool adapters) {
  return adapters ? model.lora_layout() : model.layout();
}

}  // namespace

LocalTrainer::LocalTrainer(Gpt* model, TrainerOptions options)
    : model_(model), options_(options),
      params_(TrainedParams(*model, StepsAdapters(*model, options))),
      grads_(TrainedGrads(*model, StepsAdapters(*model, options))),
      opt_(options.adamw, TrainedLayout(*model, StepsAdapters(*model, options))) {
  if (options.trainable) {
    model->set_trainable(*options.trainable);
    if (options.trainable->any_base()) ranges_ = options.trainable->ranges();
  }
}

StatusOr<std::vector<TermLoss>> LocalTrainer::Step(const std::vector<LossTerm*>& terms, float lr,
                                                   Rng& rng) {
  model_->ZeroGrad();
  std::vector<TermLoss> losses;
  losses.reserve(terms.size());
  for (LossTerm* term : terms) {
    term->Bind(params_, grads_);
    TANDEM_ASSIGN_OR_RETURN(TermLoss l, term->Accumulate(*model_, step_, rng));
    if (!std::isfinite(l.loss)) {
      return Status::Internal("training diverged at step " + std::to_string(step_) + ": the " +
                              term->name() + " loss is not finite (lower the learning rate)");
    }
    losses.push_back(l);
  }
  last_grad_norm_ = ClipGradientNorm(grads_, options_.grad_clip);
  if (ranges_.empty()) {
    opt_.Step(params_, grads_, lr);
  } else {
    opt_.Step(params_, grads_, lr, ranges_);
  }
  ++step_;
  return losses;
}

StatusOr<TrainReport> LocalTrainer::Run(const std::vector<LossTerm*>& terms, int64_t steps,
                                        float lr, Rng& rng) {
  std::vector<double> loss(terms.size(), 0.0), kl(terms.size(), 0.0), ce(terms.size(), 0.0);
  std::vector<bool> has_kl(terms.size(), false), has_ce(terms.size(), false);
  for (int64_t s = 0; s < steps; ++s) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<TermLoss> step, Step(terms, lr, rng));
    for (size_t t = 0; t < terms.size(); ++t) {
      loss[t] += step[t].loss;
      if (!std::isnan(step[t].kl)) {
        kl[t] += step[t].kl;
        has_kl[t] = true;
      }
      if (!std::isnan(step[t].ce)) {
        ce[t] += step[t].ce;
        has_ce[t] = true;
      }
    }
  }
  TrainReport report;
  report.steps = steps;
  if (steps == 0) return report;
  for (size_t t = 0; t < terms.size(); ++t) {
    const std::string name = terms[t]->name();
    report.means.emplace_back(name + "_loss", loss[t] / steps);
    if (has_kl[t]) report.means.emplace_back(name + "_kl", kl[t] / steps);
    if (has_ce[t]) report.means.emplace_back(name + "_ce", ce[t] / steps);
  }
  return report;
}

}  // namespace tandem

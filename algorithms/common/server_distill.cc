// Coordinator-side distillation settings; see algorithms/common/server_distill.h.
#include "algorithms/common/server_distill.h"

#include <charconv>
#include <cmath>

#include "core/config.h"
#include "models/cross_entropy.h"

namespace tandem {

Status ReadServerDistillConfig(const Config& config, const std::string& section,
                               ServerDistillConfig* out) {
  ServerDistillConfig& c = *out;
  auto key = [&](const char* name) { return section + "." + name; };
  TANDEM_ASSIGN_OR_RETURN(c.temperature,
                          config.GetDouble(key("temperature"), c.temperature, 1e-3, 1e3));
  TANDEM_ASSIGN_OR_RETURN(c.alpha, config.GetDouble(key("alpha"), c.alpha, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t w, config.GetInt(key("windows"), c.windows, 1, 4096));
  TANDEM_ASSIGN_OR_RETURN(int64_t s, config.GetInt(key("server_steps"), c.server_steps, 0,
                                                   100000));
  TANDEM_ASSIGN_OR_RETURN(int64_t b, config.GetInt(key("server_batch"), c.server_batch, 1, 1024));
  TANDEM_ASSIGN_OR_RETURN(c.server_lr, config.GetDouble(key("server_lr"), c.server_lr, 0.0, 1.0));
  c.windows = static_cast<int>(w);
  c.server_steps = static_cast<int>(s);
  c.server_batch = static_cast<int>(b);
  return Status::Ok();
}

Status ReadLlmObjectiveConfig(const Config& config, const std::string& section,
                              ServerDistillConfig* out) {
  ServerDistillConfig& c = *out;
  auto key = [&](const char* name) { return section + "." + name; };
  TANDEM_ASSIGN_OR_RETURN(c.confidence.threshold,
                          config.GetDouble(key("confidence_threshold"), c.confidence.threshold,
                                           0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(c.confidence.weighting,
                          config.GetBool(key("confidence_weighting"), c.confidence.weighting));
  TANDEM_ASSIGN_OR_RETURN(c.english_weight,
                          config.GetDouble(key("english_weight"), c.english_weight, 0.0, 1e3));
  return Status::Ok();
}

PublicTextTerm::PublicTextTerm(Batcher batcher, float weight)
    : batcher_(std::move(batcher)), weight_(weight),
      tokens_(static_cast<size_t>(batcher_.batch()) * batcher_.context()),
      targets_(tokens_.size()) {}

StatusOr<TermLoss> PublicTextTerm::Accumulate(Gpt& model, int64_t, Rng& rng) {
  const int B = batcher_.batch(), T = batcher_.context(), N = B * T;
  const int V = model.config().vocab;
  batcher_.Next(&rng, tokens_.data(), targets_.data());
  model.Forward(tokens_.data(), nullptr, B, T);
  probs_.resize(static_cast<size_t>(N) * V);
  losses_.resize(N);
  int count = 0;
  TermLoss out;
  out.loss = CrossEntropyForward(probs_.data(), losses_.data(), model.logits(), targets_.data(), N,
                                 V, &count);
  out.ce = out.loss;
  if (!std::isfinite(out.loss)) return out;
  // The weighted gradient, in place over the probabilities.
  CrossEntropyBackward(probs_.data(), probs_.data(), targets_.data(), N, V, count, weight_);
  model.BackwardFromLogits(probs_.data());
  return out;
}

StatusOr<std::unique_ptr<PublicTextTerm>> MakeEnglishTerm(const ServerDistillConfig& config,
                                                          const std::string& section,
                                                          const std::vector<Record>& english,
                                                          int context) {
  if (!(config.english_weight > 0.0)) return std::unique_ptr<PublicTextTerm>();
  StatusOr<Batcher> batcher =
      Batcher::Create(TokenDataset::FromRecords(english), config.server_batch, context);
  if (!batcher.ok()) {
    return Status::InvalidArgument(section + ".english_weight > 0 needs public English text of at "
                                   "least one window (" + std::to_string(context + 1) +
                                   " tokens): " + batcher.status().message());
  }
  return std::make_unique<PublicTextTerm>(std::move(*batcher),
                                          static_cast<float>(config.english_weight));
}

ServerOptimizer::ServerOptimizer(std::string name, Gpt* model, TrainerOptions options)
    : name_(std::move(name)), model_(model), options_(std::move(options)),
      trainer_(std::make_unique<LocalTrainer>(model, options_)) {}

LocalTrainer& ServerOptimizer::BeginRound() {
  // What trains is set on the model; another trainer of the same model may have changed it.
  if (options_.trainable) model_->set_trainable(*options_.trainable);
  trainer_->set_steps_taken(0);
  return *trainer_;
}

void ServerOptimizer::Save(std::map<std::string, std::vector<float>>* tensors,
                           std::map<std::string, std::string>* metadata) const {
  const AdamW& opt = trainer_->optimizer();
  (*tensors)[name_ + ".adam_m"] = std::vector<float>(opt.m().begin(), opt.m().end());
  (*tensors)[name_ + ".adam_v"] = std::vector<float>(opt.v().begin(), opt.v().end());
  (*metadata)[name_ + ".adam_step"] = std::to_string(opt.step());
}

Status ServerOptimizer::Check(const std::map<std::string, std::vector<float>>& tensors,
                              const std::map<std::string, std::string>& metadata) const {
  const size_t n = trainer_->optimizer().m().size();
  for (const char* part : {".adam_m", ".adam_v"}) {
    auto it = tensors.find(name_ + part);
    if (it == tensors.end() || it->second.size() != n) {
      return Status::InvalidArgument("the checkpoint's " + name_ + part +
                                     " is missing or the wrong size (a checkpoint of an older "
                                     "tandem, which did not keep the server's optimiser?)");
    }
  }
  auto step = metadata.find(name_ + ".adam_step");
  int64_t value = -1;
  if (step != metadata.end()) {
    const std::string& t = step->second;
    auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
    if (ec != std::errc() || ptr != t.data() + t.size()) value = -1;
  }
  if (value < 0) {
    return Status::InvalidArgument("the checkpoint's " + name_ +
                                   ".adam_step is missing or not a step count");
  }
  return Status::Ok();
}

Status ServerOptimizer::Load(const std::map<std::string, std::vector<float>>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  TANDEM_RETURN_IF_ERROR(Check(tensors, metadata));
  AdamW& opt = trainer_->optimizer();
  const auto& m = tensors.at(name_ + ".adam_m");
  const auto& v = tensors.at(name_ + ".adam_v");
  std::copy(m.begin(), m.end(), opt.m().begin());
  std::copy(v.begin(), v.end(), opt.v().begin());
  opt.set_step(std::stoll(metadata.at(name_ + ".adam_step")));
  return Status::Ok();
}

}  // namespace tandem

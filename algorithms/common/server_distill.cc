// Coordinator-side distillation settings; see algorithms/common/server_distill.h.
#include "algorithms/common/server_distill.h"

#include <charconv>

#include "core/config.h"

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

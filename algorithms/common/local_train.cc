// Local training parameters; see algorithms/common/local_train.h.
#include "algorithms/common/local_train.h"

#include <algorithm>
#include <cmath>

#include "client/task_params.h"
#include "core/config.h"

namespace tandem {

StatusOr<LocalTrainConfig> LocalTrainConfigFromConfig(const Config& config) {
  LocalTrainConfig l;
  TANDEM_ASSIGN_OR_RETURN(l.local_steps, config.GetInt("client.local_steps", l.local_steps, 0,
                                                       10'000'000));
  TANDEM_ASSIGN_OR_RETURN(l.local_epochs, config.GetDouble("client.local_epochs", 0.0, 0.0, 1e4));
  if (l.local_steps == 0 && l.local_epochs == 0) {
    return Status::InvalidArgument(config.source() +
                                   ": set client.local_steps or client.local_epochs above 0");
  }
  TANDEM_ASSIGN_OR_RETURN(int64_t batch, config.GetInt("client.batch", l.batch, 1, 4096));
  l.batch = static_cast<int>(batch);
  TANDEM_ASSIGN_OR_RETURN(l.lr, config.GetDouble("client.lr", l.lr, 1e-9, 10.0));
  TANDEM_ASSIGN_OR_RETURN(l.weight_decay,
                          config.GetDouble("client.weight_decay", l.weight_decay, 0.0, 10.0));
  TANDEM_ASSIGN_OR_RETURN(l.grad_clip, config.GetDouble("client.grad_clip", l.grad_clip, 0.0));
  return l;
}

void LocalTrainParams::Encode(wire::Params* params) const {
  (*params)["local_steps"] = train.local_steps;
  (*params)["local_epochs"] = train.local_epochs;
  (*params)["batch"] = static_cast<int64_t>(train.batch);
  (*params)["lr"] = train.lr;
  (*params)["weight_decay"] = train.weight_decay;
  (*params)["grad_clip"] = train.grad_clip;
  (*params)["seed"] = static_cast<int64_t>(seed & 0x7FFFFFFFFFFFFFFFULL);
}

StatusOr<LocalTrainParams> LocalTrainParams::Decode(const wire::Params& p) {
  LocalTrainParams out;
  LocalTrainConfig& t = out.train;
  TANDEM_ASSIGN_OR_RETURN(t.local_steps, IntParam(p, "local_steps", 0, 10'000'000));
  TANDEM_ASSIGN_OR_RETURN(t.local_epochs, RealParam(p, "local_epochs", 0.0, 1e4));
  TANDEM_ASSIGN_OR_RETURN(int64_t batch, IntParam(p, "batch", 1, 4096));
  t.batch = static_cast<int>(batch);
  TANDEM_ASSIGN_OR_RETURN(t.lr, RealParam(p, "lr", 0.0, 10.0));
  TANDEM_ASSIGN_OR_RETURN(t.weight_decay, RealParam(p, "weight_decay", 0.0, 10.0));
  TANDEM_ASSIGN_OR_RETURN(t.grad_clip, RealParam(p, "grad_clip", 0.0, 1e9));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, IntParam(p, "seed", 0, INT64_MAX));
  out.seed = static_cast<uint64_t>(seed);
  return out;
}

int64_t LocalTrainParams::Steps(size_t tokens, int context) const {
  if (train.local_epochs <= 0) return train.local_steps;
  const double per_step = static_cast<double>(train.batch) * context;
  return std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(train.local_epochs * static_cast<double>(tokens) / per_step)));
}

}  // namespace tandem

// Coordinator-side distillation settings; see algorithms/common/server_distill.h.
#include "algorithms/common/server_distill.h"

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

}  // namespace tandem

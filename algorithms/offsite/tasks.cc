// offsite's task; see algorithms/offsite/tasks.h.
#include "algorithms/offsite/tasks.h"

#include "algorithms/common/task_parts.h"
#include "client/task_params.h"

namespace tandem {

void OffsiteTrainTask::Encode(wire::Params* params) const {
  local.Encode(params);
  (*params)["offsite.bottom"] = static_cast<int64_t>(bottom);
  (*params)["offsite.top"] = static_cast<int64_t>(top);
  (*params)["emulator.map"] = AlignmentMapToJson(emulator);
  (*params)["emulator.version"] = emulator_version;
  (*params)["offsite.proximal_mu"] = proximal_mu;
  (*params)["offsite.adapters"] = std::string(lora ? "lora" : "full");
  if (lora) EncodeLoraConfig(*lora, params);
}

StatusOr<OffsiteTrainTask> OffsiteTrainTask::Decode(const wire::Params& params) {
  OffsiteTrainTask task;
  TANDEM_ASSIGN_OR_RETURN(task.local, LocalTrainParams::Decode(params));
  TANDEM_ASSIGN_OR_RETURN(int64_t bottom, IntParam(params, "offsite.bottom", 0, 1024));
  TANDEM_ASSIGN_OR_RETURN(int64_t top, IntParam(params, "offsite.top", 0, 1024));
  TANDEM_ASSIGN_OR_RETURN(std::string map, StringParam(params, "emulator.map"));
  TANDEM_ASSIGN_OR_RETURN(task.emulator, AlignmentMapFromJson(map, "emulator.map"));
  TANDEM_ASSIGN_OR_RETURN(task.emulator_version,
                          IntParam(params, "emulator.version", 0, INT64_MAX));
  TANDEM_ASSIGN_OR_RETURN(task.proximal_mu, RealParam(params, "offsite.proximal_mu", 0.0, 1e6));
  TANDEM_ASSIGN_OR_RETURN(std::string adapters, StringParam(params, "offsite.adapters"));
  if (adapters == "lora") {
    TANDEM_ASSIGN_OR_RETURN(task.lora, DecodeLoraConfig(params));
  } else if (adapters != "full") {
    return Status::InvalidArgument("offsite.adapters must be \"full\" or \"lora\", got \"" +
                                   adapters + "\"");
  }
  task.bottom = static_cast<int>(bottom);
  task.top = static_cast<int>(top);
  const int blocks = static_cast<int>(task.emulator.layers.size());
  if (task.bottom + task.top >= blocks || task.bottom + task.top == 0) {
    return Status::InvalidArgument("offsite.bottom + offsite.top = " +
                                   std::to_string(task.bottom + task.top) +
                                   " adapter blocks, the emulator has " + std::to_string(blocks) +
                                   " blocks: at least one adapter and one emulator block");
  }
  return task;
}

}  // namespace tandem

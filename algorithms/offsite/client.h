// The client half of `offsite` and `fedbiot`: "offsite.train" loads the emulator when the task
// carries it (once per version; the client keeps it between rounds) and the adapters every round,
// trains the adapters alone on the client's own data, the emulator frozen (with FedBiOT's proximal
// term towards the adapters it was sent), and uploads the adapters' delta. With LoRA adapters
// ("offsite.adapters" = "lora") the emulator carries LoRA factors on its adapter blocks, which
// alone train and move; every base weight stays frozen. The client never holds the LLM.
#pragma once

#include <cstdint>

#include "client/context.h"
#include "client/session.h"

namespace tandem {

class OffsiteClient : public TaskHandler {
 public:
  explicit OffsiteClient(ClientContext* context) : context_(context) {}  // borrowed
  std::vector<std::string> Capabilities() const override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  ClientContext* context_;
  int64_t emulator_version_ = -1;  // the version the "emulator" model holds; -1: none
};

}  // namespace tandem

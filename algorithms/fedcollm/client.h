// The client half of `fedcollm`: "fedcollm.train" trains only LoRA adapters on the frozen global
// SLM and uploads their delta; "fedcollm.eval" scores the SLM with the averaged adapters.
#pragma once

#include "client/context.h"
#include "client/session.h"

namespace tandem {

class FedCoLLMClient : public TaskHandler {
 public:
  explicit FedCoLLMClient(ClientContext* context) : context_(context) {}  // borrowed
  std::vector<std::string> Capabilities() const override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  ClientContext* context_;
};

}  // namespace tandem

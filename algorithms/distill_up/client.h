// The client half of `distill-up` (FedDF): "distill.up" trains this client's own SLM on its data
// and uploads its predictions on the round's public windows; "distill.eval" scores the own SLM.
#pragma once

#include "client/context.h"
#include "client/session.h"

namespace tandem {

class DistillUpClient : public TaskHandler {
 public:
  explicit DistillUpClient(ClientContext* context) : context_(context) {}  // borrowed
  std::vector<std::string> Capabilities() const override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  ClientContext* context_;
};

}  // namespace tandem

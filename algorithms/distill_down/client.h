// The client half of `distill-down`: "distill.train" is fedavg's training of the global SLM plus,
// at every local step, a distillation batch on the round's public windows against the LLM's
// top-k targets; "fedavg.eval" as fedavg's. With local SLMs it answers fedmkt's tasks instead
// (each client's own SLM learns from the targets, and nothing goes up).
#pragma once

#include "algorithms/fedmkt/client.h"
#include "client/context.h"
#include "client/session.h"

namespace tandem {

class DistillDownClient : public TaskHandler {
 public:
  explicit DistillDownClient(ClientContext* context) : context_(context), local_(context) {}
  std::vector<std::string> Capabilities() const override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  ClientContext* context_;  // borrowed
  FedMktClient local_;      // the local-SLM form
};

}  // namespace tandem

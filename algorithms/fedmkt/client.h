// The client half of `fedmkt`: "distill.mutual" trains this client's own SLM on its data plus
// distillation to the LLM's top-k targets on the round's public windows, then uploads its own
// predictions on those windows (unless kd.upload = 0); "distill.eval" scores the own SLM.
// distill-down with local SLMs runs this half with kd.upload = 0.
#pragma once

#include "client/context.h"
#include "client/session.h"

namespace tandem {

class FedMktClient : public TaskHandler {
 public:
  explicit FedMktClient(ClientContext* context) : context_(context) {}  // borrowed
  std::vector<std::string> Capabilities() const override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  ClientContext* context_;
};

}  // namespace tandem

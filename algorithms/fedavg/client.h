// The client half of `fedavg` (McMahan et al. 2017): "fedavg.train" trains the global model it
// is sent on the client's own partition (with FedProx's term when μ > 0) and uploads the delta;
// "fedavg.eval" scores the model it is sent on the client's own held-out records.
#pragma once

#include "client/context.h"
#include "client/session.h"

namespace tandem {

class FedAvgClient : public TaskHandler {
 public:
  explicit FedAvgClient(ClientContext* context) : context_(context) {}  // borrowed
  std::vector<std::string> Capabilities() const override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  ClientContext* context_;
};

}  // namespace tandem

// The client half of `submodel`: "submodel.train" builds the sub-model the task describes (its
// alignment map into the global model, which is this client's configured architecture), loads
// the weights it is sent, trains them on the client's own partition and uploads the delta — in the
// sub-model's coordinates, or lifted into the global model's under the privacy pipeline.
#pragma once

#include "client/context.h"
#include "client/session.h"

namespace tandem {

class SubmodelClient : public TaskHandler {
 public:
  explicit SubmodelClient(ClientContext* context) : context_(context) {}  // borrowed
  std::vector<std::string> Capabilities() const override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  ClientContext* context_;
};

}  // namespace tandem

// The client half of `route-gapg`: "route-gapg.train" loads the device model when the task
// carries it (once per version; kept between rounds) and the policy's trainable values every
// round, runs RunLocalGapg (local_gapg.h) on this client's own training prompts, and uploads the
// trainable values' delta. Its cloud is the coordinator's inference service: the client's
// service session (serve/remote.h RemoteCloud, identity "<client name>.serve" with or without
// CURVE, opened on first use and kept) answering serve.complete greedily. The answers'
// correctness is cached by prompt in this process (CloudOracle), so each prompt is asked at most
// once per client process; a client process that restarts (a resumed run) rebuilds the cache by
// asking again.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "algorithms/route_gapg/tasks.h"
#include "client/context.h"
#include "client/session.h"
#include "route/gapg.h"
#include "serve/remote.h"

namespace tandem {

class RouteGapgClient : public TaskHandler {
 public:
  // `cloud`: the hand-off answers; empty = the coordinator's inference service over the
  // context's link (tests may put a cloud of their own here).
  explicit RouteGapgClient(ClientContext* context, CloudAnswer cloud = nullptr);  // borrowed
  ~RouteGapgClient() override;
  std::vector<std::string> Capabilities() const override;
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override;

 private:
  // The service session, connected on first use.
  StatusOr<serve::RemoteCloud*> Service();

  ClientContext* context_;
  CloudAnswer cloud_;
  std::unique_ptr<serve::RemoteCloud> service_;
  std::unique_ptr<CloudOracle> oracle_;
  int64_t device_version_ = 0;  // the version the "device" model holds; 0: none
  std::string prompts_key_;     // the settings `prompts_` were made from
  RoutePrompts prompts_;        // this client's share
  int max_tokens_ = 8;          // of the service's completions: the task's route.max_tokens
};

}  // namespace tandem

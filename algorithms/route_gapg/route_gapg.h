// `route-gapg`: federated GAPG post-training of the device's answer-or-hand-off policy. Device
// policy deltas up; the cloud answers the clients' hand-offs through the coordinator's inference
// service. Its keys: [route-gapg], [strategy], and serve.enabled = true.
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm RouteGapgAlgorithm();

}  // namespace tandem

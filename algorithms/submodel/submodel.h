// `submodel`: federated training of the cloud LLM through sub-models cut from it (HeteroFL,
// FedRolex, FjORD): each client trains the width-1/d slice its tier allows, and the coordinator
// maps every delta back through its alignment map. Its keys: [submodel] (tiers and windows),
// [client] (local training), [strategy] (the server step) and [eval].
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm SubmodelAlgorithm();

}  // namespace tandem

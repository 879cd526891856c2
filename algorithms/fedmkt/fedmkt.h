// `fedmkt` (FedMKT, Fan et al. 2024): knowledge both ways every round. The LLM's top-k targets on
// public windows go down; each client's own SLM learns from its data and them, then uploads its
// predictions on the same windows; the LLM learns α·CE + (1 − α)·KD against their ensemble
// (selection "mean") or, per position, the client whose prediction fits the text best ("min-ce",
// FedMKT's choice, which needs individual uploads). The coordinator half is distill-up's with
// the downward targets on (algorithms/distill_up/server.h); the client half and the task are
// here. Its keys: [fedmkt], plus [client] and [eval].
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm FedMktAlgorithm();

}  // namespace tandem

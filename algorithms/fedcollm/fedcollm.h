// `fedcollm` (FedCoLLM, Fan et al. 2024): clients train LoRA adapters on the shared SLM and
// upload their delta; the coordinator averages them, then distils LLM → SLM and SLM → LLM on
// public windows. Its keys: [fedcollm] and [model.lora], plus [client], [strategy] and [eval].
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm FedCoLLMAlgorithm();

}  // namespace tandem

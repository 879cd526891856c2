// `fedbiot` (FedBiOT, Wu et al. 2024): offsite (algorithms/offsite) with the emulator re-aligned to
// the full LLM, adapters plugged in, before every round, and a proximal term on the clients'
// adapter loss. Its keys: [fedbiot] (offsite's, plus proximal_mu), [client], [strategy], [eval].
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm FedBiOTAlgorithm();

}  // namespace tandem

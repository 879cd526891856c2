// `offsite` (Offsite-Tuning, Xiao et al. 2023): the cloud LLM's bottom and top blocks are adapters
// that clients fine-tune on their own data through an emulator of the rest (the middle blocks,
// uniformly dropped and optionally distilled); the averaged adapters are plugged back into the
// LLM. Its keys: [offsite], [client] (local training), [strategy] (the adapters' server step),
// [eval].
#pragma once

#include "algorithms/algorithm.h"

namespace tandem {

Algorithm OffsiteAlgorithm();

// What offsite and fedbiot share: the halves built over `section`'s keys.
Algorithm OffsiteFamilyAlgorithm(const std::string& name, const std::string& summary);

}  // namespace tandem

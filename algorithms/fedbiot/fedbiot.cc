// fedbiot's registration; see algorithms/fedbiot/fedbiot.h. Both halves are offsite's, built over
// the [fedbiot] section, which turns on the re-alignment and the proximal term.
#include "algorithms/fedbiot/fedbiot.h"

#include "algorithms/offsite/offsite.h"

namespace tandem {

Algorithm FedBiOTAlgorithm() {
  return OffsiteFamilyAlgorithm(
      "fedbiot", "offsite with the emulator re-aligned to the LLM every round and a proximal "
                 "term on the clients' adapters (FedBiOT)");
}

}  // namespace tandem

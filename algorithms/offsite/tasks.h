// The task of `offsite` and `fedbiot`, encoded and decoded by both halves:
//   "offsite.train": local training; the adapters (the emulator's bottom `bottom` and top `top`
//                    blocks, tensor "adapters", every round); the emulator (the LLM with its
//                    middle blocks dropped or re-aligned: map "emulator.map", version
//                    "emulator.version", and tensor "emulator" with all its weights only when
//                    the client does not hold that version yet); FedBiOT's proximal μ; and what
//                    the adapters are, "offsite.adapters": "full" (the blocks' weights) or "lora"
//                    (LoRA factors on those blocks, lora.rank/alpha/targets; the tensor
//                    "adapters" is then the factors alone, and the blocks' own weights stay the
//                    emulator's, frozen). The result is the contribution "delta": the adapters'
//                    trained − sent, weighted by the client's examples.
#pragma once

#include <cstdint>
#include <optional>

#include "algorithms/common/local_train.h"
#include "core/status.h"
#include "models/lora.h"
#include "prune/alignment_map.h"
#include "wire/message.h"

namespace tandem {

inline constexpr char kOffsiteTrainTask[] = "offsite.train";

struct OffsiteTrainTask {
  LocalTrainParams local;
  int bottom = 1;                 // "offsite.bottom": adapter blocks at the bottom
  int top = 1;                    // "offsite.top": and at the top
  AlignmentMap emulator;          // "emulator.map": which LLM blocks the emulator keeps
  int64_t emulator_version = 0;   // "emulator.version"
  double proximal_mu = 0.0;       // "offsite.proximal_mu" (FedBiOT; 0 for offsite)
  // "offsite.adapters" = "lora" and lora.*: the factors' rank, alpha and target linears (layers
  // empty: the adapter blocks are implied by bottom and top); nullopt = "full".
  std::optional<LoraConfig> lora;

  void Encode(wire::Params* params) const;
  // Checks the map, and that bottom + top leave at least one emulator block between them.
  static StatusOr<OffsiteTrainTask> Decode(const wire::Params& params);
};

}  // namespace tandem

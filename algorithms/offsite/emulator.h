// What both halves of offsite and fedbiot share about the emulator (Offsite-Tuning, Xiao et al.
// 2023): the LLM's bottom `bottom` and top `top` blocks are the adapters, which train; the blocks
// between them are compressed into the emulator, which stays frozen on the clients. A dropped
// block is an alignment map too (prune/alignment_map.h AlignmentMap::KeepLayers), so the
// emulator is an ordinary GPT cut out of the LLM (prune/plan.h EmulatorMap), and the adapters are
// the same blocks in both.
#pragma once

#include <span>
#include <vector>

#include "core/status.h"
#include "models/gpt.h"
#include "models/trainable.h"

namespace tandem {

// The adapters' ranges of `model`'s flat parameters: its bottom and top blocks.
std::vector<ParamRange> AdapterRanges(const Gpt& model, int bottom, int top);
// Total floats in `ranges`.
size_t RangesSize(const std::vector<ParamRange>& ranges);
// The values of `ranges` of `params`, concatenated.
std::vector<float> GatherRanges(std::span<const float> params, const std::vector<ParamRange>& ranges);
// Writes `values` (RangesSize long) into `ranges` of `params`.
void ScatterRanges(std::span<const float> values, const std::vector<ParamRange>& ranges,
                   std::span<float> params);

}  // namespace tandem

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
#include "models/lora.h"
#include "prune/alignment_map.h"
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

// --- LoRA adapters (`<section>.adapters = "lora"`) ------------------------------------------
// With LoRA the adapters are LoRA factors on the adapter blocks alone: the emulator carries them
// (unmerged, so its adapter blocks' base weights stay as cut), and what moves and is averaged is
// the emulator's lora_params(). The LLM carries no adapters: its adapter blocks hold their frozen
// base plus the merged factors, so the LLM file a run writes is standalone.

// `lora` on the adapter blocks of a model of `n_layer` blocks: [0, bottom) and
// [n_layer - top, n_layer).
LoraConfig AdapterLora(LoraConfig lora, int n_layer, int bottom, int top);
// Floats of `lora`'s factors on `weights` (A (in,r) and B (r,out) per adapted linear), from the
// shapes alone; requires lora.Validate() and its layers below n_layer.
size_t LoraSize(const GptWeights& weights, const LoraConfig& lora);
// Adds the emulator's LoRA factors, merged (w += scale · A @ B), into the LLM blocks they belong
// to: emulator block c is LLM block map.layers[c]. Requires `emulator` to have adapters (not
// merged) and the LLM's adapted weights to hold their base: the caller restores it first.
void MergeEmulatorLora(const Gpt& emulator, const AlignmentMap& map, Gpt* llm);

}  // namespace tandem

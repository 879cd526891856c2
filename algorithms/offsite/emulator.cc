// The emulator's shared pieces; see algorithms/offsite/emulator.h.
#include "algorithms/offsite/emulator.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tandem {

std::vector<ParamRange> AdapterRanges(const Gpt& model, int bottom, int top) {
  return Trainable::Blocks(model.config(), model.layout(), bottom, top).ranges();
}

size_t RangesSize(const std::vector<ParamRange>& ranges) {
  size_t n = 0;
  for (const ParamRange& r : ranges) n += r.end - r.begin;
  return n;
}

std::vector<float> GatherRanges(std::span<const float> params,
                                const std::vector<ParamRange>& ranges) {
  std::vector<float> out;
  out.reserve(RangesSize(ranges));
  for (const ParamRange& r : ranges) out.insert(out.end(), params.begin() + r.begin, params.begin() + r.end);
  return out;
}

void ScatterRanges(std::span<const float> values, const std::vector<ParamRange>& ranges,
                   std::span<float> params) {
  size_t at = 0;
  for (const ParamRange& r : ranges) {
    std::memcpy(params.data() + r.begin, values.data() + at, (r.end - r.begin) * sizeof(float));
    at += r.end - r.begin;
  }
}

LoraConfig AdapterLora(LoraConfig lora, int n_layer, int bottom, int top) {
  lora.layers.clear();
  for (int l = 0; l < n_layer; ++l) {
    if (l < bottom || l >= n_layer - top) lora.layers.push_back(l);
  }
  return lora;
}

size_t LoraSize(const GptWeights& weights, const LoraConfig& lora) {
  size_t n = 0;
  for (int l = 0; l < weights.config().n_layer; ++l) {
    if (!lora.has_layer(l)) continue;
    for (int k = 0; k < GptWeights::kNumLinear; ++k) {
      const char* name = GptWeights::LinearName(k);
      if (std::find(lora.targets.begin(), lora.targets.end(), name) == lora.targets.end()) continue;
      n += static_cast<size_t>(lora.rank) * (weights.linear_in(l, k) + weights.linear_out(l, k));
    }
  }
  return n;
}

void MergeEmulatorLora(const Gpt& emulator, const AlignmentMap& map, Gpt* llm) {
  const GptWeights& e = emulator.weights();
  TANDEM_CHECK(e.has_lora() && !e.lora_merged());
  TANDEM_CHECK(map.layers.size() == static_cast<size_t>(e.config().n_layer));
  GptWeights& w = llm->weights();
  const float* lora = e.lora_params().data();
  const LoraConfig& c = e.lora_config();
  for (int child = 0; child < e.config().n_layer; ++child) {
    const int parent = map.layers[child];
    for (int k = 0; k < GptWeights::kNumLinear; ++k) {
      const size_t a = e.lora_a_offset(child, k);
      if (a == SIZE_MAX) continue;
      TANDEM_CHECK(w.linear_in(parent, k) == e.linear_in(child, k) &&
                   w.linear_out(parent, k) == e.linear_out(child, k));
      LoraMerge(w.params().data() + w.block_offset(parent, GptWeights::LinearWeight(k)), lora + a,
                lora + e.lora_b_offset(child, k), e.linear_in(child, k), c.rank,
                e.linear_out(child, k), c.scale(), +1.0f);
    }
  }
}

}  // namespace tandem

// The emulator's shared pieces; see algorithms/offsite/emulator.h.
#include "algorithms/offsite/emulator.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tandem {

StatusOr<std::vector<int>> UniformEmulatorLayers(int n_layer, int bottom, int top, double keep) {
  const int middle = n_layer - bottom - top;
  if (bottom < 0 || top < 0 || bottom + top == 0 || middle < 1) {
    return Status::InvalidArgument(
        "the adapters (" + std::to_string(bottom) + " bottom and " + std::to_string(top) +
        " top blocks) must be at least one block and leave at least one of the model's " +
        std::to_string(n_layer) + " blocks for the emulator");
  }
  if (!(keep > 0.0 && keep <= 1.0)) {
    return Status::InvalidArgument("the emulator's keep ratio " + std::to_string(keep) +
                                   " is not in (0, 1]");
  }
  const int kept = std::clamp(static_cast<int>(std::lround(keep * middle)), 1, middle);
  std::vector<int> layers;
  for (int l = 0; l < bottom; ++l) layers.push_back(l);
  // Block i of `kept` sits at the centre of its share of the middle.
  for (int i = 0; i < kept; ++i) {
    const int at = bottom + static_cast<int>(std::floor((i + 0.5) * middle / kept));
    if (layers.empty() || layers.back() != at) layers.push_back(at);
  }
  for (int l = n_layer - top; l < n_layer; ++l) layers.push_back(l);
  return layers;
}

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

}  // namespace tandem

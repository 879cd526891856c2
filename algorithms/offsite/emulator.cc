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

}  // namespace tandem

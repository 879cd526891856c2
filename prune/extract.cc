#include "prune/extract.h"

#include <algorithm>

namespace tandem {

StatusOr<Alignment> Alignment::Create(AlignmentMap map) {
  TANDEM_RETURN_IF_ERROR(map.Validate());
  Alignment a;
  a.child_config_ = map.ChildConfig();
  a.parent_size_ = GptLayout(map.parent).total();
  a.offsets_ = ParentOffsets(map);
  a.map_ = std::move(map);
  return a;
}

void Alignment::Extract(std::span<const float> parent, std::span<float> child) const {
  TANDEM_CHECK(parent.size() == parent_size_ && child.size() == offsets_.size());
  const size_t n = offsets_.size();
  const size_t* o = offsets_.data();
  const float* p = parent.data();
  float* c = child.data();
  for (size_t i = 0; i < n; ++i) c[i] = p[o[i]];
}

void Alignment::ScatterAdd(std::span<const float> child_delta, float weight,
                           std::span<float> parent_sum, std::span<float> parent_coverage) const {
  TANDEM_CHECK(child_delta.size() == offsets_.size() && parent_sum.size() == parent_size_ &&
               parent_coverage.size() == parent_size_ && weight > 0.0f);
  const size_t n = offsets_.size();
  const size_t* o = offsets_.data();
  const float* d = child_delta.data();
  float* sum = parent_sum.data();
  float* cov = parent_coverage.data();
  for (size_t i = 0; i < n; ++i) {
    sum[o[i]] += weight * d[i];
    cov[o[i]] += weight;
  }
}

StatusOr<std::unique_ptr<GptWeights>> Extract(const GptWeights& parent, const AlignmentMap& map) {
  TANDEM_RETURN_IF_ERROR(map.Validate());
  if (!(parent.config() == map.parent)) {
    return Status::InvalidArgument("alignment map was made for a parent of shape " +
                                   map.parent.ToString() + ", not " +
                                   parent.config().ToString());
  }
  TANDEM_ASSIGN_OR_RETURN(Alignment a, Alignment::Create(map));
  auto child = std::make_unique<GptWeights>(a.child_config());
  a.Extract(parent.params(), child->params());
  return child;
}

StatusOr<ScatteredDelta> Scatter(std::span<const float> child_delta, const AlignmentMap& map) {
  TANDEM_ASSIGN_OR_RETURN(Alignment a, Alignment::Create(map));
  if (child_delta.size() != a.child_size()) {
    return Status::InvalidArgument("child delta has " + std::to_string(child_delta.size()) +
                                   " values, the map's child has " +
                                   std::to_string(a.child_size()) + " parameters");
  }
  ScatteredDelta out;
  out.delta.assign(a.parent_size(), 0.0f);
  out.coverage.assign(a.parent_size(), 0.0f);
  a.ScatterAdd(child_delta, 1.0f, out.delta, out.coverage);
  return out;
}

Status ScatterAdd(std::span<const float> child_delta, float weight, const AlignmentMap& map,
                  std::span<float> parent_sum, std::span<float> parent_coverage) {
  TANDEM_ASSIGN_OR_RETURN(Alignment a, Alignment::Create(map));
  if (child_delta.size() != a.child_size() || parent_sum.size() != a.parent_size() ||
      parent_coverage.size() != a.parent_size()) {
    return Status::InvalidArgument(
        "ScatterAdd: sizes do not match the map (child delta " +
        std::to_string(child_delta.size()) + " of " + std::to_string(a.child_size()) +
        ", parent sum " + std::to_string(parent_sum.size()) + " and coverage " +
        std::to_string(parent_coverage.size()) + " of " + std::to_string(a.parent_size()) + ")");
  }
  if (!(weight > 0.0f)) {
    return Status::InvalidArgument("ScatterAdd: weight must be > 0, got " +
                                   std::to_string(weight));
  }
  a.ScatterAdd(child_delta, weight, parent_sum, parent_coverage);
  return Status::Ok();
}

void ApplyCoveredMean(std::span<float> parent, std::span<const float> parent_sum,
                      std::span<const float> parent_coverage) {
  TANDEM_CHECK(parent.size() == parent_sum.size() && parent.size() == parent_coverage.size());
  for (size_t i = 0; i < parent.size(); ++i) {
    if (parent_coverage[i] > 0.0f) parent[i] += parent_sum[i] / parent_coverage[i];
  }
}

}  // namespace tandem

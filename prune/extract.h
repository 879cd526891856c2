// Moving weights and deltas through an alignment map (DESIGN.md "Pruning and parameter
// alignment"): Extract cuts a parent's parameters down to a child's, Scatter lifts a child's delta
// back into the parent's coordinates with a per-coordinate coverage count. ScatterAdd once per
// client and ApplyCoveredMean once per round are sub-model averaging (HeteroFL, Diao et al. 2021;
// FedRolex, Alam et al. 2022) in float: every parent coordinate moves by the weighted mean of the
// deltas of the clients whose sub-model covered it, and the others stay as they were. The
// `submodel` algorithm computes the same mean in RunningSum's fixed point instead
// (algorithms/submodel/server.h), so that it does not depend on the order results arrive in and
// equals FedAvg bit for bit at full width; it uses the offsets of an Alignment.
//
// All of these are exact: a map sends each child coordinate to one distinct parent coordinate
// (prune/alignment_map.h ParentOffsets), so values are copied and added, never mixed.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "core/status.h"
#include "models/gpt_weights.h"
#include "prune/alignment_map.h"

namespace tandem {

// A map resolved to flat offsets once, for callers that use the same map many times (a round's
// sub-model for many clients). Immutable after Create: safe to share between threads.
class Alignment {
 public:
  // InvalidArgument when the map does not validate.
  static StatusOr<Alignment> Create(AlignmentMap map);

  const AlignmentMap& map() const { return map_; }
  const ModelConfig& child_config() const { return child_config_; }
  size_t parent_size() const { return parent_size_; }
  size_t child_size() const { return offsets_.size(); }
  // (child_size) parent offset of each child parameter.
  const std::vector<size_t>& parent_offsets() const { return offsets_; }

  // child (child_size) = parent (parent_size) at the mapped coordinates.
  void Extract(std::span<const float> parent, std::span<float> child) const;
  // parent_sum[o(i)] += weight * child_delta[i] and parent_coverage[o(i)] += weight for every
  // child coordinate i; coordinates the map does not cover are not touched. Both parent buffers
  // are (parent_size); weight > 0 (a client's sample count, or 1 to count).
  void ScatterAdd(std::span<const float> child_delta, float weight, std::span<float> parent_sum,
                  std::span<float> parent_coverage) const;

 private:
  Alignment() = default;
  AlignmentMap map_;
  ModelConfig child_config_;
  size_t parent_size_ = 0;
  std::vector<size_t> offsets_;
};

// The child model cut out of `parent`: InvalidArgument when the map is invalid or its parent
// shape is not parent.config(). LoRA adapters are not carried over.
StatusOr<std::unique_ptr<GptWeights>> Extract(const GptWeights& parent, const AlignmentMap& map);

// A child's delta in the parent's coordinates: `delta` holds it where covered and 0 elsewhere,
// `coverage` 1 where covered and 0 elsewhere (both parent-sized).
struct ScatteredDelta {
  std::vector<float> delta;
  std::vector<float> coverage;
};
// InvalidArgument when the map is invalid or child_delta is not the child's size.
StatusOr<ScatteredDelta> Scatter(std::span<const float> child_delta, const AlignmentMap& map);

// The accumulating form, for one map used once (see Alignment::ScatterAdd). InvalidArgument on
// an invalid map, mismatched sizes or weight <= 0; then nothing is written.
Status ScatterAdd(std::span<const float> child_delta, float weight, const AlignmentMap& map,
                  std::span<float> parent_sum, std::span<float> parent_coverage);

// parent[i] += parent_sum[i] / parent_coverage[i] where parent_coverage[i] > 0: the weighted mean
// of the covering clients' deltas. All three are parent-sized (a programming error otherwise).
void ApplyCoveredMean(std::span<float> parent, std::span<const float> parent_sum,
                      std::span<const float> parent_coverage);

}  // namespace tandem

// Alignment maps (DESIGN.md "Pruning and parameter alignment"): which parts of a parent GPT a
// smaller dense child was cut from. The map is structural — which parent blocks, embedding
// channels, heads and MLP neurons the child kept — and from it follows, for every tensor of the
// child, the index set of the parent it came from along each dimension (TensorAlignments). Sub-
// models (HeteroFL, FedRolex, FjORD), emulators that drop blocks (Offsite-Tuning, FedBiOT) and
// pruned SLMs (Minitron) are all such maps; prune/extract.h moves weights and deltas through them.
//
// Every index set is ascending and unique: heads, neurons and channels are interchangeable up to
// a consistent permutation (LayerNorm, attention and the MLP are all equivariant to one), so
// keeping the parent's order loses nothing and makes a map canonical.
//
// The map travels in the child's safetensors metadata under "tandem_alignment" as compact JSON
// (index sets as half-open runs; docs/pruning.md has the format) and is validated when read.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "models/gpt_weights.h"
#include "models/model_config.h"

namespace tandem {

struct AlignmentMap {
  ModelConfig parent;
  std::vector<int> layers;                // (child n_layer) parent block of each child block
  std::vector<int> channels;              // (child d_model) parent d_model channels kept
  std::vector<std::vector<int>> heads;    // [child block] parent heads kept (of layers[l])
  std::vector<std::vector<int>> neurons;  // [child block] parent MLP neurons kept

  // The map that keeps everything: the child is the parent.
  static AlignmentMap Identity(const ModelConfig& parent);
  // A map that keeps the listed parent blocks whole (an emulator's kept layers).
  static AlignmentMap KeepLayers(const ModelConfig& parent, std::vector<int> layers);

  // The parent is valid; layers, channels and every heads[l] / neurons[l] are non-empty,
  // ascending, unique and in range of the parent (of parent block layers[l] for heads and
  // neurons); heads and neurons have one entry per child block. InvalidArgument says which.
  Status Validate() const;
  // The child's shape: the parent's vocab, context and head dimension, channels.size() wide,
  // layers.size() deep, with heads[l].size() heads and neurons[l].size() neurons in block l.
  // Requires Validate().
  ModelConfig ChildConfig() const;
  bool operator==(const AlignmentMap& other) const;
};

// Where one child tensor comes from: child element (i, j) is parent element
// (index[0][i], index[1][j]) of `parent_name` (one list for a 1-D tensor).
struct TensorAlignment {
  std::string child_name;
  std::string parent_name;
  std::vector<std::vector<int64_t>> index;  // per dimension, ascending within each q/k/v part
};

// One entry per child tensor, in the child's layout order. Requires map.Validate().
std::vector<TensorAlignment> TensorAlignments(const AlignmentMap& map);

// (child parameters) the offset in the parent's flat parameter buffer of each child parameter,
// in the child's layout: what Extract gathers from and Scatter adds into. Injective.
// Requires map.Validate().
std::vector<size_t> ParentOffsets(const AlignmentMap& map);

// --- Serialisation -----------------------------------------------------------------------

// The metadata key of a pruned checkpoint that holds its map.
inline constexpr const char* kAlignmentMetadataKey = "tandem_alignment";

// Compact JSON: {"format":"tandem-alignment","version":1,"parent":{...},"layers":[...],
// "channels":[[b,e),...],"heads":[[[b,e),...],...],"neurons":[...]}.
std::string AlignmentMapToJson(const AlignmentMap& map);
// Parses and validates; Corruption naming `what` and the offending field on any error.
StatusOr<AlignmentMap> AlignmentMapFromJson(const std::string& json, const std::string& what);

// Writes `child` as a GPT checkpoint (models/gpt_checkpoint.h) with `map` in its metadata.
// InvalidArgument when the child's shape is not map.ChildConfig().
Status SavePrunedGpt(const std::string& path, const GptWeights& child, const AlignmentMap& map,
                     std::map<std::string, std::string> extra_metadata = {});
// The map stored in a checkpoint written by SavePrunedGpt: NotFound when the file has none,
// Corruption when it is malformed or does not describe the checkpoint's own shape.
StatusOr<AlignmentMap> ReadAlignmentMap(const std::string& path);

}  // namespace tandem

// Choosing what a child keeps: structured pruning to a target shape by importance (Minitron's
// recipe: drop whole blocks by block importance, then keep the top heads, neurons and embedding
// channels), and the width-ratio sub-models of federated training — HeteroFL's static prefix
// (Diao et al. 2021), FedRolex's rolling window (Alam et al. 2022), and importance-ranked windows
// (FjORD-style ordered by score). Each returns an alignment map (prune/alignment_map.h); Extract
// (prune/extract.h) then cuts the weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "models/model_config.h"
#include "prune/alignment_map.h"
#include "prune/importance.h"

namespace tandem {

// What a pruned child keeps; 0 keeps that dimension whole.
struct PruneTarget {
  int n_layer = 0;  // blocks kept (the most important by the block scores)
  int d_model = 0;  // embedding channels kept
  int heads = 0;    // heads per kept block
  int d_mlp = 0;    // MLP neurons per kept block
  // In (0, 1] to scale each kept block's own heads and neurons, and the channels, by it (with
  // ceil, as WindowWidth); it then replaces heads, d_mlp and d_model. 0: off.
  double width_ratio = 0.0;
  // false: every kept block keeps `heads` heads and `d_mlp` neurons (Minitron). true: the
  // n_layer·heads heads and n_layer·d_mlp neurons are chosen across blocks by score, each score
  // divided by its block's mean first so blocks compare, every block keeping at least one of each:
  // blocks then differ in width.
  bool global = false;
};

// SHAPE of `tandem prune --to SHAPE` against `parent`:
//   a preset name ("slm-small")  its d_model, n_layer and MLP width, and as many of the parent's
//                                heads as fill its attention width (at least one);
//   a width ratio ("0.5")        in (0, 1]: heads, neurons and channels scaled by it, all blocks;
//   "inner=R"                    R in (0, 1]: heads and neurons scaled by it (ceil of R times the
//                                narrowest block's), every embedding channel kept;
//   "layers=N"                   N blocks of full width (ShortGPT-style depth pruning).
// InvalidArgument says what is wrong (a ratio out of range, a preset larger than the parent, ...).
StatusOr<PruneTarget> ParsePruneShape(const std::string& shape, const ModelConfig& parent);

// The map of `parent` pruned to `target` by `scores` (ties go to the lower index). InvalidArgument
// when scores do not fit the parent or the target asks for more than the parent has.
StatusOr<AlignmentMap> PlanPrune(const ModelConfig& parent, const ImportanceScores& scores,
                                 const PruneTarget& target);

// The k (in [1, scores.size()]) indices of the highest scores, ascending; ties go to the lower
// index.
std::vector<int> TopIndices(const std::vector<double>& scores, int k);

// --- Width-ratio sub-models ---------------------------------------------------------------

enum class WindowKind {
  kStatic,      // the first k indices every round (HeteroFL)
  kRolling,     // k indices from offset round·stride, wrapping (FedRolex)
  kImportance,  // the k highest-scoring indices every round
};
// "static", "rolling", "importance".
StatusOr<WindowKind> ParseWindowKind(const std::string& name);

struct SubmodelSpec {
  double ratio = 1.0;  // in (0, 1]
  WindowKind kind = WindowKind::kStatic;
  int64_t round = 0;  // >= 0; only rolling windows move with it
  // Rolling step per round; 0 means the window's own width k, so consecutive rounds tile the
  // dimension and every index is covered within ceil(n/k) <= ceil(1/ratio) rounds. FedRolex
  // itself rolls by 1.
  int stride = 0;
  bool shrink_channels = true;  // d_model scales too (HeteroFL); false keeps every channel
  // Required for kImportance (heads, neurons and channels are ranked by it).
  const ImportanceScores* scores = nullptr;
};

// Width of a ratio-r window over n indices: ceil(r·n), clamped to [1, n].
int WindowWidth(double ratio, int n);
// The window of `spec` over n indices (scores used only by kImportance), ascending.
std::vector<int> WindowIndices(const SubmodelSpec& spec, int n,
                               const std::vector<double>* scores = nullptr);

// The map of the ratio sub-model of `parent` for `spec`: every block kept, each block's heads and
// neurons (and the channels, unless !shrink_channels) cut to their windows. The submodel
// algorithm calls it every round. InvalidArgument on a bad ratio, a negative round or stride, or
// kImportance without scores that fit the parent.
StatusOr<AlignmentMap> SubmodelMap(const ModelConfig& parent, const SubmodelSpec& spec);

// --- Emulators ----------------------------------------------------------------------------

// Offsite-Tuning's emulator (Xiao et al. 2023) and FedBiOT's: the bottom `bottom` and top `top`
// blocks (the adapters) whole, and of the n_layer − bottom − top middle blocks round(keep · middle)
// (at least one), each at the centre of its share of the middle (uniform layer drop; keep = 1
// keeps them all). Further pruning of the kept middle blocks is a matter of cutting their heads[]
// and neurons[] in the returned map. InvalidArgument when the adapters are no block at all or leave
// no middle block, or keep is not in (0, 1].
StatusOr<AlignmentMap> EmulatorMap(const ModelConfig& parent, int bottom, int top, double keep);

}  // namespace tandem

// Importance of a GPT's prunable structures — attention heads, MLP neurons, embedding channels
// (d_model) and whole blocks — the scores structured pruning ranks by (prune/plan.h):
//
//   activation  Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and
//               Knowledge Distillation"): over calibration batches, the mean |activation| of each
//               head's attention output, of each neuron after the GELU, and of each channel of
//               the LayerNorm outputs (ln_1 and ln_2 of every block); blocks by ShortGPT's Block
//               Influence (Men et al. 2024): 1 − cos(block input, block output), averaged over
//               tokens.
//   taylor      first-order Taylor (LLM-Pruner, Ma et al. 2023, element-wise form): Σ |w·g| over
//               the structure's parameters, g the gradient of the mean next-token loss over the
//               calibration batches — the first-order estimate of what zeroing each weight costs.
//   magnitude   the L2 norm of the structure's parameters.
//   random      uniform in [0, 1) from a seed: the baseline any method must beat.
//
// A structure's parameters: a head's q, k, v columns of c_attn (weights and biases) and its rows
// of attn.c_proj; a neuron's column of c_fc (and bias) and its row of mlp.c_proj; a channel's
// column of wte and wpe, its rows of c_attn and c_fc, its columns of both c_proj (and their
// biases) and its entries of every LayerNorm; a block, all of its tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "models/gpt_weights.h"

namespace tandem {

enum class ImportanceMethod { kActivation, kTaylor, kMagnitude, kRandom };
// "activation", "taylor", "magnitude", "random"; InvalidArgument lists them.
StatusOr<ImportanceMethod> ParseImportanceMethod(const std::string& name);
const char* ImportanceMethodName(ImportanceMethod method);

// Higher is more important. Shapes follow the scored model.
struct ImportanceScores {
  std::vector<std::vector<double>> heads;    // [layer][head]
  std::vector<std::vector<double>> neurons;  // [layer][neuron]
  std::vector<double> channels;              // (d_model)
  std::vector<double> blocks;                // (n_layer)
  // The shapes match `config`.
  bool Fits(const ModelConfig& config) const;
};

// Calibration text: `count` batches of (batch, context) tokens and their next-token targets.
struct CalibrationBatches {
  int batch = 0;
  int context = 0;
  std::vector<int32_t> tokens;   // (count, batch, context)
  std::vector<int32_t> targets;  // (count, batch, context)
  int count() const {
    return batch * context > 0 ? static_cast<int>(tokens.size() / (batch * context)) : 0;
  }
};

// Scores of `weights` (which must carry no LoRA adapters) by `method`. Activation and taylor run
// forward (and backward) passes over `calibration` in a workspace of their own; magnitude ignores
// it and random uses only `seed`. InvalidArgument for empty or ill-shaped calibration data where
// the method needs it, or tokens outside the vocabulary.
StatusOr<ImportanceScores> ComputeImportance(std::shared_ptr<const GptWeights> weights,
                                             ImportanceMethod method,
                                             const CalibrationBatches& calibration,
                                             uint64_t seed = 0);

// Sums a per-parameter value (laid out like weights.params()) over each structure, as the taylor
// (value |w·g|) and magnitude (value w², then a square root) scores do. Blocks sum all their
// parameters.
ImportanceScores SumPerStructure(const GptWeights& weights, std::span<const double> value);

}  // namespace tandem

// Parts that several algorithms' tasks share, each encoded and decoded in one place: a model's
// weights (its architecture's name and its flat parameters), public windows (offsets and their
// length), the teacher's top-k targets on them with the distillation settings, LoRA adapters,
// and the evaluation budget. The coordinator encodes, the client decodes and checks: the
// coordinator is trusted for the run's design but not for the integrity of what arrives.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/public_windows.h"
#include "distill/kd_loss.h"
#include "distill/topk.h"
#include "models/gpt.h"
#include "models/lora.h"
#include "wire/message.h"

namespace tandem {

// The tensor `name` of a task or result, or nullptr.
const wire::Tensor* FindTensor(const std::vector<wire::Tensor>& tensors, const std::string& name);

// --- A model's weights: parameter "model" (ModelConfig::ToString) and tensor "params". -------
void EncodeWeights(const Gpt& model, wire::Params* params, std::vector<wire::Tensor>* tensors);
// Checks that the task is for `model`'s architecture and loads the weights into it.
Status DecodeWeightsInto(const wire::TaskAssign& task, Gpt* model);
// Only checks the architecture (tasks for a client's own model carry no weights).
Status CheckModelName(const wire::Params& params, const ModelConfig& model);

// --- Public windows: tensor "kd.windows" (u32 offsets) and, when the windows are shorter than
// the model's context (clients of several architectures), parameter "kd.context". -----------
void EncodeWindows(const std::vector<uint32_t>& starts, std::optional<int> context,
                   wire::Params* params, std::vector<wire::Tensor>* tensors);
// The windows into `stream`, at most `max_context` long (the model's context by default).
StatusOr<PublicWindows> DecodeWindows(const wire::TaskAssign& task, const TokenDataset& stream,
                                      int max_context);

// --- Distillation settings and the teacher's top-k targets on the windows. ---------------------
struct KdTaskSettings {
  KdOptions options;   // kd.alpha, kd.temperature
  double weight = 1.0; // kd.weight: the public batch's loss against the own-data one
};
void EncodeKd(const KdTaskSettings& kd, wire::Params* params);
StatusOr<KdTaskSettings> DecodeKd(const wire::Params& params);
void EncodeTopK(const TopKTargets& targets, std::vector<wire::Tensor>* tensors);
// Checks the targets fit the windows (rows = windows · T), the vocabulary and the temperature.
StatusOr<TopKTargets> DecodeTopKFor(const wire::TaskAssign& task, const PublicWindows& windows,
                                    int vocab, float temperature);

// --- LoRA adapters: parameters lora.rank/alpha/targets and tensor "lora". ---------------------
void EncodeLoraConfig(const LoraConfig& lora, wire::Params* params);
StatusOr<LoraConfig> DecodeLoraConfig(const wire::Params& params);
// Enables the task's adapters on `model` (once; a later task must ask for the same ones) and
// loads the adapter weights.
Status DecodeAdaptersInto(const wire::TaskAssign& task, Gpt* model);

// --- Evaluation: parameter "eval_tokens" (held-out targets to score; 0 = all). ----------------
StatusOr<int64_t> DecodeEvalTokens(const wire::Params& params);

}  // namespace tandem

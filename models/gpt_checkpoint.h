// GPT checkpoints as safetensors with the Hugging Face GPT-2 tensor names and layouts, and the
// model config in the metadata (vocab_size, n_positions, n_embd, n_layer, n_head; and, only for
// shapes other than GPT-2's, n_inner, head_dim, layer_n_head and layer_n_inner, the per-block
// lists comma-separated), so outside tools read tandem's models and real GPT-2-family
// checkpoints load into tandem.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "core/status.h"
#include "models/gpt.h"

namespace tandem {

// Writes the base parameters (with adapters merged out: the base alone) atomically.
Status SaveGpt(const std::string& path, const GptWeights& weights,
               const std::map<std::string, std::string>& extra_metadata = {});
Status SaveGpt(const std::string& path, const Gpt& model,
               const std::map<std::string, std::string>& extra_metadata = {});

// Reads a checkpoint written by SaveGpt or by Hugging Face (a "transformer." prefix, F16/BF16
// weights, the attention-mask buffers and a tied lm_head are all accepted). Without tandem's
// metadata the shape is inferred from the tensors and n_head from GPT-2's head size of 64.
// Checkpoints written before the non-uniform keys existed load as GPT-2-shaped models.
// Every expected tensor must be present with its expected shape, and every weight finite (a NaN
// or infinity is an error naming the file and the tensor).
StatusOr<std::unique_ptr<Gpt>> LoadGpt(const std::string& path);

// The adapters alone (names "h.{i}.attn.c_attn.lora_A", ...; rank, alpha, targets and, for
// adapters on some blocks only, lora_layers in the metadata).
Status SaveLora(const std::string& path, const Gpt& model);
// Enables LoRA on `model` from the file's config and loads the adapter weights, which must be
// finite like LoadGpt's; on an error `model` is left as it was.
Status LoadLora(const std::string& path, Gpt* model);

}  // namespace tandem

// LoRA adapters (Hu et al. 2021) on a linear layer: out += (alpha / r) * (inp @ A) @ B, with
// A (C,r) initialised small and random and B (r,OC) zero, so a fresh adapter changes nothing.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace tandem {

class Config;

struct LoraConfig {
  int rank = 8;
  float alpha = 16.0f;
  // Which linear layers of every block carry adapters: any of
  // "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj".
  std::vector<std::string> targets = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};
  // Which blocks carry them, ascending and distinct; empty = every block. Set by code that adapts
  // a range of blocks only (offsite's adapter blocks), not read from a config.
  std::vector<int> layers;

  bool operator==(const LoraConfig&) const = default;
  float scale() const { return alpha / static_cast<float>(rank); }
  // Whether block `layer` carries adapters.
  bool has_layer(int layer) const;
  // Checks rank, alpha, targets, and that layers are ascending, distinct and non-negative (the
  // model checks the upper bound).
  Status Validate() const;
};

// Reads `<prefix>.rank`, `.alpha`, `.targets`.
StatusOr<LoraConfig> LoraConfigFromConfig(const Config& config, const std::string& prefix);

// xa (N,r) = inp (N,C) @ A (C,r), saved for backward; out (N,OC) += scale * xa @ B (r,OC).
void LoraForward(float* out, float* xa, const float* inp, const float* A, const float* B, int N,
                 int C, int r, int OC, float scale);

// Given dout (N,OC): dB (r,OC) += scale * xa^T dout; dxa (N,r) = scale * dout B^T (scratch);
// dA (C,r) += inp^T dxa; dinp (N,C) += dxa A^T. Each of dinp, dA, dB is skipped when null (a
// frozen adapter still passes the gradient through to dinp).
void LoraBackward(float* dinp, float* dA, float* dB, float* dxa, const float* dout,
                  const float* inp, const float* xa, const float* A, const float* B, int N, int C,
                  int r, int OC, float scale);

// w (C,OC) += sign * scale * A @ B: sign +1 merges the adapter into the base weight, -1 undoes it.
void LoraMerge(float* w, const float* A, const float* B, int C, int r, int OC, float scale,
               float sign);

}  // namespace tandem

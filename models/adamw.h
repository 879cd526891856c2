// AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, over one flat parameter
// buffer; a linear warm-up plus cosine learning-rate schedule; global gradient-norm clipping.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "models/param_layout.h"
#include "models/trainable.h"

namespace tandem {

class Config;

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  Status Validate() const;
};

class AdamW {
 public:
  // `layout` says which elements decay (TensorSpec::decay); its total() sizes the state.
  AdamW(const AdamWConfig& config, const ParamLayout& layout);

  // One update of params with grads at learning rate lr. Increments step().
  void Step(std::span<float> params, std::span<const float> grads, float lr);
  // The same, but only inside `ranges` (Trainable::ranges(): ascending, disjoint): parameters
  // outside them, and their moments, are left exactly as they are (no weight decay either).
  void Step(std::span<float> params, std::span<const float> grads, float lr,
            std::span<const ParamRange> ranges);

  int64_t step() const { return step_; }
  // The moments, for checkpoints: (m, v) each of size layout.total().
  std::span<float> m() { return m_; }
  std::span<float> v() { return v_; }
  std::span<const float> m() const { return m_; }
  std::span<const float> v() const { return v_; }
  void set_step(int64_t step) { step_ = step; }

 private:
  struct Segment {
    size_t offset, size;
    bool decay;
  };
  AdamWConfig config_;
  std::vector<Segment> segments_;
  std::vector<float> m_, v_;
  int64_t step_ = 0;
};

// Linear warm-up from 0 to lr over warmup_steps, then cosine decay to min_lr_ratio * lr at
// total_steps (held after).
struct LrSchedule {
  float lr = 3e-4f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  float min_lr_ratio = 0.1f;
  float At(int64_t step) const;
};

// L2 norm of the whole gradient, in double.
double GradientNorm(std::span<const float> grads);
// Scales grads so their global norm is at most max_norm; returns the norm before clipping.
double ClipGradientNorm(std::span<float> grads, double max_norm);

}  // namespace tandem

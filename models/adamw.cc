#include "models/adamw.h"

#include <algorithm>
#include <cmath>

namespace tandem {

Status AdamWConfig::Validate() const {
  if (!(beta1 >= 0.0f && beta1 < 1.0f)) return Status::InvalidArgument("adamw beta1 must be in [0, 1)");
  if (!(beta2 >= 0.0f && beta2 < 1.0f)) return Status::InvalidArgument("adamw beta2 must be in [0, 1)");
  if (!(eps > 0.0f)) return Status::InvalidArgument("adamw eps must be > 0");
  if (!(weight_decay >= 0.0f)) return Status::InvalidArgument("adamw weight_decay must be >= 0");
  return Status::Ok();
}

AdamW::AdamW(const AdamWConfig& config, const ParamLayout& layout) : config_(config) {
  for (const auto& t : layout.tensors()) {
    if (!segments_.empty() && segments_.back().decay == t.decay &&
        segments_.back().offset + segments_.back().size == t.offset) {
      segments_.back().size += t.size;  // merge neighbours with the same decay
    } else {
      segments_.push_back({t.offset, t.size, t.decay});
    }
  }
  m_.assign(layout.total(), 0.0f);
  v_.assign(layout.total(), 0.0f);
}

void AdamW::Step(std::span<float> params, std::span<const float> grads, float lr) {
  const ParamRange all{0, m_.size()};
  Step(params, grads, lr, std::span<const ParamRange>(&all, 1));
}

void AdamW::Step(std::span<float> params, std::span<const float> grads, float lr,
                 std::span<const ParamRange> ranges) {
  TANDEM_CHECK(params.size() == m_.size() && grads.size() == m_.size());
  ++step_;
  const float b1 = config_.beta1, b2 = config_.beta2;
  const float bc1 = 1.0f - std::pow(b1, static_cast<float>(step_));
  const float bc2 = 1.0f - std::pow(b2, static_cast<float>(step_));
  const float step_size = lr / bc1;
  const float inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
  float* p = params.data();
  const float* g = grads.data();
  float* m = m_.data();
  float* v = v_.data();
  for (const auto& seg : segments_) {
    const float decay = seg.decay ? 1.0f - lr * config_.weight_decay : 1.0f;
    for (const ParamRange& r : ranges) {
      // The part of this segment inside the range.
      const long begin = static_cast<long>(std::max(seg.offset, r.begin));
      const long end = static_cast<long>(std::min(seg.offset + seg.size, r.end));
      if (begin >= end) continue;
#pragma omp parallel for simd schedule(static)
      for (long i = begin; i < end; ++i) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] = p[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + config_.eps);
      }
    }
  }
}

float LrSchedule::At(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) {
    return lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
  }
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return static_cast<float>(lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine));
}

double GradientNorm(std::span<const float> grads) {
  double sum = 0.0;
  const float* g = grads.data();
  const long n = static_cast<long>(grads.size());
#pragma omp parallel for simd reduction(+ : sum) schedule(static)
  for (long i = 0; i < n; ++i) sum += static_cast<double>(g[i]) * g[i];
  return std::sqrt(sum);
}

double ClipGradientNorm(std::span<float> grads, double max_norm) {
  const double norm = GradientNorm(grads);
  if (max_norm > 0.0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (float& g : grads) g *= scale;
  }
  return norm;
}

}  // namespace tandem

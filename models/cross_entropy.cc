#include "models/cross_entropy.h"

#include <cmath>
#include <cstddef>

#include "models/tensor_map.h"

namespace tandem {

float CrossEntropyForward(float* probs, float* losses, const float* logits, const int32_t* targets,
                          int N, int V, int* count) {
  double total = 0.0;
  int n_valid = 0;
#pragma omp parallel for schedule(static) reduction(+ : total, n_valid)
  for (int i = 0; i < N; ++i) {
    detail::ConstArrayMap z(logits + static_cast<size_t>(i) * V, V);
    detail::ArrayMap p(probs + static_cast<size_t>(i) * V, V);
    const float mx = z.maxCoeff();
    p = (z - mx).exp();
    const float sum = p.sum();
    p /= sum;
    const int32_t y = targets[i];
    if (y == kIgnoreTarget) {
      losses[i] = 0.0f;
      continue;
    }
    // -log softmax computed from the logits for accuracy: log(sum) - (z_y - max).
    losses[i] = std::log(sum) - (z[y] - mx);
    total += losses[i];
    ++n_valid;
  }
  *count = n_valid;
  return n_valid > 0 ? static_cast<float>(total / n_valid) : 0.0f;
}

void CrossEntropyBackward(float* dlogits, const float* probs, const int32_t* targets, int N, int V,
                          int count, float dloss) {
  const float scale = count > 0 ? dloss / count : 0.0f;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    float* d = dlogits + static_cast<size_t>(i) * V;
    const float* p = probs + static_cast<size_t>(i) * V;
    const int32_t y = targets[i];
    if (y == kIgnoreTarget) {
      for (int v = 0; v < V; ++v) d[v] = 0.0f;
      continue;
    }
    for (int v = 0; v < V; ++v) d[v] = p[v] * scale;
    d[y] -= scale;
  }
}

}  // namespace tandem

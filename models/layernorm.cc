#include "models/layernorm.h"

#include <cmath>
#include <vector>

#include <omp.h>

namespace tandem {

void LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                      const float* bias, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* x = inp + static_cast<size_t>(i) * C;
    float* o = out + static_cast<size_t>(i) * C;
    float m = 0.0f;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    float v = 0.0f;
    for (int c = 0; c < C; ++c) {
      const float d = x[c] - m;
      v += d * d;
    }
    v /= C;
    const float s = 1.0f / std::sqrt(v + kLayerNormEps);
    for (int c = 0; c < C; ++c) o[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[i] = m;
    rstd[i] = s;
  }
}

void LayerNormBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, const float* mean,
                       const float* rstd, int N, int C) {
  const int threads = omp_get_max_threads();
  // Per-thread partial sums for the parameter gradients, reduced at the end. Kept between calls
  // so the training step does not allocate.
  thread_local std::vector<float> partial;
  partial.assign(static_cast<size_t>(threads) * 2 * C, 0.0f);
  float* partial_base = partial.data();  // thread_local: workers must not name it themselves
#pragma omp parallel
  {
    float* dw_local = partial_base + static_cast<size_t>(omp_get_thread_num()) * 2 * C;
    float* db_local = dw_local + C;
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      const float* x = inp + static_cast<size_t>(i) * C;
      const float* dy = dout + static_cast<size_t>(i) * C;
      float* dx = dinp + static_cast<size_t>(i) * C;
      const float m = mean[i];
      const float s = rstd[i];
      // dnorm = dy * weight; dx = s * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
      float dnorm_mean = 0.0f;
      float dnorm_norm_mean = 0.0f;
      for (int c = 0; c < C; ++c) {
        const float norm = (x[c] - m) * s;
        const float dnorm = weight[c] * dy[c];
        dnorm_mean += dnorm;
        dnorm_norm_mean += dnorm * norm;
        dw_local[c] += norm * dy[c];
        db_local[c] += dy[c];
      }
      dnorm_mean /= C;
      dnorm_norm_mean /= C;
      for (int c = 0; c < C; ++c) {
        const float norm = (x[c] - m) * s;
        const float dnorm = weight[c] * dy[c];
        dx[c] += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
      }
    }
  }
  if (dweight == nullptr && dbias == nullptr) return;
  for (int t = 0; t < threads; ++t) {
    const float* dw_local = partial_base + static_cast<size_t>(t) * 2 * C;
    for (int c = 0; c < C; ++c) {
      if (dweight != nullptr) dweight[c] += dw_local[c];
      if (dbias != nullptr) dbias[c] += dw_local[C + c];
    }
  }
}

}  // namespace tandem

#include "models/linear.h"

#include <cstddef>

#include "models/gemm.h"
#include "models/tensor_map.h"

namespace tandem {

void LinearForward(float* out, const float* inp, const float* w, const float* bias, int N, int C,
                   int OC, bool accumulate) {
  float beta = accumulate ? 1.0f : 0.0f;
  if (bias != nullptr && !accumulate) {
    // Start from the bias so the product adds onto it in one pass.
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
      float* o = out + static_cast<size_t>(i) * OC;
      for (int j = 0; j < OC; ++j) o[j] = bias[j];
    }
    beta = 1.0f;
  }
  Gemm(false, false, N, OC, C, 1.0f, inp, C, w, OC, beta, out, OC);
  if (bias != nullptr && accumulate) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; ++i) {
      float* o = out + static_cast<size_t>(i) * OC;
      for (int j = 0; j < OC; ++j) o[j] += bias[j];
    }
  }
}

void LinearBackward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                    const float* w, int N, int C, int OC) {
  if (dinp != nullptr) {
    Gemm(false, true, N, C, OC, 1.0f, dout, OC, w, OC, 0.0f, dinp, C);  // dout @ w^T
  }
  if (dw != nullptr) {
    Gemm(true, false, C, OC, N, 1.0f, inp, C, dout, OC, 1.0f, dw, OC);  // inp^T @ dout
  }
  if (dbias != nullptr) {
    // Rows in order: every element is summed in the same order whatever the buffers' alignment
    // (Eigen's vectorised column sums treat unaligned edges differently, which made gradients
    // depend on where a buffer happened to be allocated).
    for (int i = 0; i < N; ++i) {
      const float* d = dout + static_cast<size_t>(i) * OC;
      for (int j = 0; j < OC; ++j) dbias[j] += d[j];
    }
  }
}

}  // namespace tandem

#include "models/embedding.h"

#include <cstddef>

namespace tandem {

void EmbeddingForward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                      int T, int C) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < B * T; ++i) {
    const int t = i % T;
    const float* e = wte + static_cast<size_t>(tokens[i]) * C;
    const float* p = wpe + static_cast<size_t>(t) * C;
    float* o = out + static_cast<size_t>(i) * C;
    for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
  }
}

void EmbeddingBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                       int T, int C) {
  if (dwpe != nullptr) {
    // Parallel over positions: each thread owns whole rows of dwpe.
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; ++t) {
      float* dp = dwpe + static_cast<size_t>(t) * C;
      for (int b = 0; b < B; ++b) {
        const float* d = dout + (static_cast<size_t>(b) * T + t) * C;
        for (int c = 0; c < C; ++c) dp[c] += d[c];
      }
    }
  }
  if (dwte != nullptr) {
    // Serial: several positions may share a token row.
    for (int i = 0; i < B * T; ++i) {
      float* de = dwte + static_cast<size_t>(tokens[i]) * C;
      const float* d = dout + static_cast<size_t>(i) * C;
      for (int c = 0; c < C; ++c) de[c] += d[c];
    }
  }
}

}  // namespace tandem

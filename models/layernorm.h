// Layer normalization (Ba et al. 2016) over the last dimension, eps 1e-5 as in GPT-2.
#pragma once

namespace tandem {

constexpr float kLayerNormEps = 1e-5f;

// out (N,C) = (inp - mean) * rstd * weight + bias; saves mean (N) and rstd (N) for backward.
void LayerNormForward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                      const float* bias, int N, int C);

// dinp (N,C) += ..., dweight (C) += ..., dbias (C) += ... (each of dweight, dbias null when
// frozen).
void LayerNormBackward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, const float* mean,
                       const float* rstd, int N, int C);

}  // namespace tandem

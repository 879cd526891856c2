#include "models/attention.h"

#include <cmath>
#include <vector>

#include "models/tensor_map.h"

namespace tandem {

using detail::ConstStridedMap;
using detail::MatMap;
using detail::StridedMap;
using Eigen::OuterStride;

void AttentionForward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const int hd = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int C3 = 3 * C;
#pragma omp parallel for schedule(static) collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* base = qkv + static_cast<size_t>(b) * T * C3 + h * hd;
      ConstStridedMap q(base, T, hd, OuterStride<>(C3));          // (T,hd)
      ConstStridedMap k(base + C, T, hd, OuterStride<>(C3));      // (T,hd)
      ConstStridedMap v(base + 2 * C, T, hd, OuterStride<>(C3));  // (T,hd)
      float* a = att + (static_cast<size_t>(b) * NH + h) * T * T;
      MatMap A(a, T, T);
      // Only the causal (lower) triangle is computed; the rest is zeroed below.
      A.triangularView<Eigen::Lower>() = (q * k.transpose()) * scale;
      // Causal softmax row by row over j <= t.
      for (int t = 0; t < T; ++t) {
        float* row = a + static_cast<size_t>(t) * T;
        auto live = Eigen::Map<Eigen::ArrayXf>(row, t + 1);
        const float mx = live.maxCoeff();
        live = (live - mx).exp();
        live /= live.sum();
        for (int j = t + 1; j < T; ++j) row[j] = 0.0f;
      }
      StridedMap o(out + static_cast<size_t>(b) * T * C + h * hd, T, hd, OuterStride<>(C));
      o.noalias() = A.triangularView<Eigen::Lower>() * v;
    }
  }
}

void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                       int T, int C, int NH) {
  const int hd = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int C3 = 3 * C;
#pragma omp parallel
  {
    // dpre (T,T): scratch per thread, kept between calls so the step does not allocate.
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(T) * T);
    MatMap dA(scratch.data(), T, T);
#pragma omp for schedule(static) collapse(2)
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < NH; ++h) {
        const size_t off = static_cast<size_t>(b) * T * C3 + h * hd;
        ConstStridedMap q(qkv + off, T, hd, OuterStride<>(C3));
        ConstStridedMap k(qkv + off + C, T, hd, OuterStride<>(C3));
        ConstStridedMap v(qkv + off + 2 * C, T, hd, OuterStride<>(C3));
        StridedMap dq(dqkv + off, T, hd, OuterStride<>(C3));
        StridedMap dk(dqkv + off + C, T, hd, OuterStride<>(C3));
        StridedMap dv(dqkv + off + 2 * C, T, hd, OuterStride<>(C3));
        ConstStridedMap dO(dout + static_cast<size_t>(b) * T * C + h * hd, T, hd,
                           OuterStride<>(C));
        const float* a = att + (static_cast<size_t>(b) * NH + h) * T * T;
        detail::ConstMatMap A(a, T, T);

        // att is lower triangular, so every product below touches only that triangle.
        dv.noalias() = A.transpose().triangularView<Eigen::Upper>() * dO;  // (T,hd)
        dA.triangularView<Eigen::Lower>() = dO * v.transpose();             // d(att) (T,T)
        // Softmax backward: dpre = att * (datt - sum_j att * datt), on the causal part.
        for (int t = 0; t < T; ++t) {
          float* drow = scratch.data() + static_cast<size_t>(t) * T;
          const float* arow = a + static_cast<size_t>(t) * T;
          float dot = 0.0f;
          for (int j = 0; j <= t; ++j) dot += arow[j] * drow[j];
          for (int j = 0; j <= t; ++j) drow[j] = arow[j] * (drow[j] - dot) * scale;
          for (int j = t + 1; j < T; ++j) drow[j] = 0.0f;
        }
        dq.noalias() = dA.triangularView<Eigen::Lower>() * k;
        dk.noalias() = dA.transpose().triangularView<Eigen::Upper>() * q;
      }
    }
  }
}

}  // namespace tandem

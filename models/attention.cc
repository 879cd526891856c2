#include "models/attention.h"

#include <cmath>
#include <vector>

#include "models/tensor_map.h"

namespace tandem {

using detail::ConstStridedMap;
using detail::MatMap;
using detail::StridedMap;
using Eigen::OuterStride;

void AttentionForward(float* out, float* att, const float* qkv, int B, int T, int NH, int HD,
                      int past) {
  const int hd = HD, C = NH * HD;  // C: the attention width A
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int C3 = 3 * C;
  const int S = past + T;  // keys per sequence
#pragma omp parallel for schedule(static) collapse(2)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* seq = qkv + static_cast<size_t>(b) * S * C3 + h * hd;
      const float* base = seq + static_cast<size_t>(past) * C3;    // this call's rows
      ConstStridedMap q(base, T, hd, OuterStride<>(C3));          // (T,hd)
      ConstStridedMap k(base + C, T, hd, OuterStride<>(C3));      // (T,hd)
      ConstStridedMap v(base + 2 * C, T, hd, OuterStride<>(C3));  // (T,hd)
      float* a = att + (static_cast<size_t>(b) * NH + h) * T * S;
      StridedMap o(out + static_cast<size_t>(b) * T * C + h * hd, T, hd, OuterStride<>(C));
      if (past == 0) {
        MatMap A(a, T, T);
        // Only the causal (lower) triangle is computed; the rest is zeroed below.
        A.triangularView<Eigen::Lower>() = (q * k.transpose()) * scale;
      } else {
        // Every earlier position is visible; among this call's rows, the lower triangle.
        MatMap A(a, T, S);
        ConstStridedMap k_past(seq + C, past, hd, OuterStride<>(C3));  // (past,hd)
        A.leftCols(past).noalias() = (q * k_past.transpose()) * scale;
        A.middleCols(past, T).triangularView<Eigen::Lower>() = (q * k.transpose()) * scale;
      }
      // Causal softmax row by row over j <= past + t.
      for (int t = 0; t < T; ++t) {
        float* row = a + static_cast<size_t>(t) * S;
        auto live = Eigen::Map<Eigen::ArrayXf>(row, past + t + 1);
        const float mx = live.maxCoeff();
        live = (live - mx).exp();
        live /= live.sum();
        for (int j = past + t + 1; j < S; ++j) row[j] = 0.0f;
      }
      if (past == 0) {
        MatMap A(a, T, T);
        o.noalias() = A.triangularView<Eigen::Lower>() * v;
      } else {
        MatMap A(a, T, S);
        ConstStridedMap v_past(seq + 2 * C, past, hd, OuterStride<>(C3));  // (past,hd)
        o.noalias() = A.middleCols(past, T).triangularView<Eigen::Lower>() * v;
        o.noalias() += A.leftCols(past) * v_past;
      }
    }
  }
}

void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                       int T, int NH, int HD) {
  const int hd = HD, C = NH * HD;  // C: the attention width A
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

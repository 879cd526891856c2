#include "models/linear.h"

#include "models/tensor_map.h"

namespace tandem {

using detail::ConstMatMap;
using detail::MatMap;

void LinearForward(float* out, const float* inp, const float* w, const float* bias, int N, int C,
                   int OC, bool accumulate) {
  MatMap o(out, N, OC);
  ConstMatMap x(inp, N, C);
  ConstMatMap W(w, C, OC);
  if (accumulate) {
    o.noalias() += x * W;
  } else {
    o.noalias() = x * W;
  }
  if (bias != nullptr) {
    o.rowwise() += detail::ConstRowVecMap(bias, OC);
  }
}

void LinearBackward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                    const float* w, int N, int C, int OC) {
  ConstMatMap dO(dout, N, OC);
  if (dinp != nullptr) {
    MatMap(dinp, N, C).noalias() = dO * ConstMatMap(w, C, OC).transpose();
  }
  if (dw != nullptr) {
    MatMap(dw, C, OC).noalias() += ConstMatMap(inp, N, C).transpose() * dO;
  }
  if (dbias != nullptr) {
    detail::RowVecMap(dbias, OC) += dO.colwise().sum();
  }
}

}  // namespace tandem

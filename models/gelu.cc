#include "models/gelu.h"

#include <algorithm>
#include <cmath>

#include <omp.h>

#include "models/tensor_map.h"

namespace tandem {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
constexpr size_t kChunk = 4096;  // elements per vectorized slice

// Calls fn(begin, len) for consecutive slices of at most kChunk elements, in parallel.
template <typename Fn>
void ForEachChunk(size_t n, Fn fn) {
  const long chunks = static_cast<long>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static)
  for (long c = 0; c < chunks; ++c) {
    const size_t begin = static_cast<size_t>(c) * kChunk;
    fn(begin, std::min(kChunk, n - begin));
  }
}

}  // namespace

void GeluForward(float* out, const float* inp, size_t n) {
  ForEachChunk(n, [&](size_t begin, size_t len) {
    detail::ConstArrayMap x(inp + begin, len);
    detail::ArrayMap y(out + begin, len);
    y = 0.5f * x * (1.0f + (kSqrt2OverPi * (x + kCubic * x * x * x)).tanh());
  });
}

void GeluBackward(float* dinp, const float* inp, const float* dout, size_t n) {
  ForEachChunk(n, [&](size_t begin, size_t len) {
    detail::ConstArrayMap x(inp + begin, len);
    detail::ConstArrayMap dy(dout + begin, len);
    detail::ArrayMap dx(dinp + begin, len);
    alignas(64) float tbuf[kChunk];  // on the stack: the step does not allocate
    detail::ArrayMap t(tbuf, len);
    t = (kSqrt2OverPi * (x + kCubic * x * x * x)).tanh();
    dx = dy * (0.5f * (1.0f + t) +
               0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x));
  });
}

}  // namespace tandem

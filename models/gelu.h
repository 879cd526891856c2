// GELU with the tanh approximation GPT-2 uses (Hendrycks & Gimpel 2016):
// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#pragma once

#include <cstddef>

namespace tandem {

// out (n) = gelu(inp).
void GeluForward(float* out, const float* inp, size_t n);
// dinp (n) = dout * gelu'(inp), overwritten.
void GeluBackward(float* dinp, const float* inp, const float* dout, size_t n);

}  // namespace tandem

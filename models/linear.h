// Linear (fully connected) layer: out = inp @ w + bias, with w stored [in, out] as in Hugging
// Face GPT-2's Conv1D, so checkpoints load with a memcpy.
#pragma once

namespace tandem {

// out (N,OC) = inp (N,C) @ w (C,OC) + bias (OC). bias may be null.
// With accumulate, adds to out instead of overwriting it (fuses a residual connection).
void LinearForward(float* out, const float* inp, const float* w, const float* bias, int N, int C,
                   int OC, bool accumulate = false);

// dinp (N,C) = dout @ w^T (overwritten; skipped when null)
// dw (C,OC) += inp^T @ dout, dbias (OC) += column sums of dout (skipped when null: frozen).
void LinearBackward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                    const float* w, int N, int C, int OC);

}  // namespace tandem

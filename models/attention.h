// Causal multi-head self-attention (Vaswani et al. 2017; GPT-2 layout): q, k, v are the three
// A-wide slices of the c_attn output, in that order, each split into NH heads of HD (A = NH * HD;
// a pruned block has fewer heads, so A may differ from the model width).
#pragma once

namespace tandem {

// The T queries of each sequence sit at positions [past, past + T) and attend to positions
// [0, past + T); past > 0 is incremental decoding over a key/value cache, past = 0 training.
// qkv (B,past+T,3A): rows [0, past) are earlier positions (only their k and v are read).
// out (B,T,A): heads concatenated, before the output projection.
// att (B,NH,T,past+T): softmax probabilities, saved for backward (zero after each query).
void AttentionForward(float* out, float* att, const float* qkv, int B, int T, int NH, int HD,
                      int past = 0);

// dqkv (B,T,3A) = gradient of qkv (overwritten) given dout (B,T,A), for a forward with past = 0.
void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                       int T, int NH, int HD);

}  // namespace tandem

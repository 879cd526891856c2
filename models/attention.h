// Causal multi-head self-attention (Vaswani et al. 2017; GPT-2 layout): q, k, v are the three
// C-wide slices of the c_attn output, in that order, each split into n_head heads.
#pragma once

namespace tandem {

// out (B,T,C): heads concatenated, before the output projection.
// att (B,NH,T,T): softmax probabilities, saved for backward (upper triangle is zero).
// qkv (B,T,3C).
void AttentionForward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);

// dqkv (B,T,3C) = gradient of qkv (overwritten) given dout (B,T,C).
void AttentionBackward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                       int T, int C, int NH);

}  // namespace tandem

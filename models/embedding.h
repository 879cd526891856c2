// Token plus learned position embedding, the input of a GPT decoder.
#pragma once

#include <cstdint>

namespace tandem {

// out (B,T,C) = wte[tokens[b,t]] + wpe[t]; tokens (B,T) must be in [0, V).
void EmbeddingForward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                      int T, int C);

// dwte (V,C) += scatter of dout by token, dwpe (T,C) += sum over the batch (null when frozen).
void EmbeddingBackward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                       int T, int C);

}  // namespace tandem

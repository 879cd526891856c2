// Softmax cross-entropy over the vocabulary, averaged over the positions whose target is not -1.
#pragma once

#include <cstdint>

namespace tandem {

constexpr int32_t kIgnoreTarget = -1;

// probs (N,V) = softmax(logits); losses (N) = -log probs[target] (0 where ignored).
// Returns the mean loss over non-ignored positions and writes their count to *count.
// Targets must be -1 or in [0, V).
float CrossEntropyForward(float* probs, float* losses, const float* logits, const int32_t* targets,
                          int N, int V, int* count);

// dlogits (N,V) = (probs - onehot(target)) * dloss / count, zero rows for ignored positions.
// dlogits may alias probs.
void CrossEntropyBackward(float* dlogits, const float* probs, const int32_t* targets, int N, int V,
                          int count, float dloss = 1.0f);

}  // namespace tandem

// Sparse top-k teacher targets for knowledge distillation: per row the teacher's k most probable
// tokens at temperature T, their probabilities, and the tail mass left to the other V - k tokens.
// What the coordinator sends down instead of dense (N,V) logits; encoded as flat f32/u32 vectors.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"

namespace tandem {

// Top-k targets of N rows. Plain data: no invariants are enforced on construction; ValidateTopK
// checks them, DecodeTopK always does, and the KD kernels check what they read.
struct TopKTargets {
  int rows = 0;              // N
  int k = 0;                 // 1 <= k <= vocab
  int vocab = 0;             // V
  float temperature = 1.0f;  // T at which `probs` and `tail` were computed, T > 0
  std::vector<int32_t> indices;  // (N,k) token ids in [0, V), distinct within a row, most
                                 // probable first
  std::vector<float> probs;      // (N,k) teacher probabilities softmax(z/T) of those tokens
  std::vector<float> tail;       // (N) 1 - sum of the row's probs: mass of the other V - k tokens

  const int32_t* row_indices(int i) const { return indices.data() + static_cast<size_t>(i) * k; }
  const float* row_probs(int i) const { return probs.data() + static_cast<size_t>(i) * k; }
};

// Slack allowed on sum(probs) + tail = 1 for float rounding of the k + 1 stored numbers.
constexpr double kTopKSumTolerance = 1e-5;

// Checks the sizes, k in [1, V], T finite and > 0, indices in range and distinct within a row,
// probabilities and tails finite and in [0, 1], sum(probs) <= 1 + tol and |sum(probs) + tail - 1|
// <= tol. Returns Corruption naming the first bad field and row.
Status ValidateTopK(const TopKTargets& t);

// teacher_logits (N,V) -> the top k of softmax(z/T) per row, computed in double. Ties are broken
// by the lower token id, so the result is deterministic. The tail is summed over the other tokens
// (not 1 - sum, which would cancel). Requires 1 <= k <= V, T > 0, N >= 0 (TANDEM_CHECK).
TopKTargets TopKFromLogits(const float* teacher_logits, int N, int V, int k, float temperature);

// Rows [row0, row0 + n) of t, e.g. the public-split positions of one training batch.
TopKTargets SliceTopK(const TopKTargets& t, int row0, int n);

// probs (N,V): the top-k probabilities at their tokens and the tail spread uniformly over the
// other V - k tokens (the tail is dropped when k = V: there is nowhere to put it). Each row sums
// to sum(probs) + tail = 1 up to rounding. For tests and for ensembling sparse targets.
void DensifyTopK(float* probs, const TopKTargets& t);

// --- Wire form -------------------------------------------------------------------------------
// Two flat vectors the caller wraps as wire tensors (distill/ does not depend on wire/):
//   words  (u32): header [kTopKWireVersion, N, k, V, bits of T as IEEE-754 binary32], then the
//                 N·k indices — packed two per word (low half first, a final odd half zero) when
//                 V <= 65536, which is always the case for the byte vocabulary, else one per word;
//   values (f32): the N·k probabilities, then the N tails.
// Per row, k = 16 and V = 256: 16·2 + 16·4 + 4 = 100 bytes against 256·4 = 1024 for dense f32
// logits (10.2x less), plus a 20-byte header per message.
constexpr uint32_t kTopKWireVersion = 1;
constexpr size_t kTopKHeaderWords = 5;

struct TopKWire {
  std::vector<uint32_t> words;
  std::vector<float> values;
};

TopKWire EncodeTopK(const TopKTargets& t);
// Strict: any size, range, finiteness, duplicate-index or sum violation is Corruption, so that a
// malformed message from a peer never reaches the loss.
StatusOr<TopKTargets> DecodeTopK(std::span<const uint32_t> words, std::span<const float> values);

// Bytes of the encoded payload (both vectors, header included) for N rows.
size_t TopKWireBytes(int rows, int k, int vocab);

}  // namespace tandem

// Knowledge-distillation loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
// Network") on (N,V) row-major student logits, forward and backward, against a dense teacher
// (N,V logits) or sparse top-k teacher targets (distill/topk.h).
//
//   loss = α·CE(softmax(s), y) + (1 − α)·T²·KL(p_t^T ‖ p_s^T),   p^T = softmax(logits / T)
//
// Both terms are means over the same rows: those whose target y is not kIgnoreTarget (the count
// the CE kernel uses), so α trades the two off per row and a padded position contributes to
// neither. The T² factor keeps the KD gradient's scale independent of T (its gradient in the
// logits is (1 − α)·T·(p_s^T − p_t^T)).
//
// Kernels in the models/ style: raw pointers, shapes in comments, TANDEM_CHECK on arguments (a
// bad shape or hyperparameter is a programming error; targets from a peer are decoded and
// validated with DecodeTopK before they get here). Rows run in parallel with OpenMP; each row is
// computed in double with log-sum-exp, so large logits and small temperatures are safe.
// Stateless and thread-compatible: the backward recomputes the softmaxes from the logits instead
// of keeping buffers (it costs about as much as the forward, which is small next to the model).
#pragma once

#include <cstdint>

#include "distill/topk.h"
#include "models/cross_entropy.h"

namespace tandem {

struct KdOptions {
  float temperature = 1.0f;  // T > 0, the same for teacher and student
  float alpha = 0.5f;        // weight of the task CE in [0, 1]; 1 − α goes to the KD term
};

// Means over `count` rows, in double: callers sum them over many batches, and finite-difference
// tests difference them.
struct KdLoss {
  double loss = 0.0;  // α·ce + (1 − α)·T²·kl
  double ce = 0.0;    // mean cross-entropy at T = 1
  double kl = 0.0;    // mean KL(p_t^T ‖ p_s^T), without the T² factor
  int count = 0;      // rows whose target is not kIgnoreTarget
};

// Aborts unless T is finite and > 0 and α is in [0, 1].
void CheckKdOptions(const KdOptions& opt);

// --- Dense teacher ---------------------------------------------------------------------------
// student_logits, teacher_logits (N,V); targets (N) in [0, V) or kIgnoreTarget. targets may be
// null only when α = 0 (pure distillation): every row then counts. All zero when count is 0.
// row_weights (N), when given, scales each row's KL term (r_i ≥ 0; 0 masks the row's KD, its CE
// stays): loss = α·ce + (1 − α)·T²·Σ_i r_i·kl_i / count — the divisor is still the row count, so
// masking rows lowers the KD term's share rather than renormalising it. Null: every r_i = 1, the
// same bits as without weights (distill/kd_terms.h KdConfidence sets them).
KdLoss KdForward(const float* student_logits, const float* teacher_logits, const int32_t* targets,
                 int N, int V, const KdOptions& opt, const float* row_weights = nullptr);

// dlogits (N,V) = dloss · d(loss)/d(student_logits), written (not accumulated); zero rows where
// the target is ignored. `count` is the divisor of the means — KdLoss::count of the forward, or
// the count over a whole batch when the rows are a shard of it.
// row_weights as for KdForward: row i's KD gradient is scaled by r_i.
void KdBackward(float* dlogits, const float* student_logits, const float* teacher_logits,
                const int32_t* targets, int N, int V, const KdOptions& opt, int count,
                float dloss = 1.0f, const float* row_weights = nullptr);

// --- Sparse top-k teacher ----------------------------------------------------------------------
// The teacher gives, per row, probabilities q_j at T on its top-k set I and the tail mass r.
// The full teacher distribution is needed for a KL, so the tail is spread over the tokens outside
// I in proportion to the STUDENT's own distribution there:
//     p_t(v) = r · p_s(v) / m  for v ∉ I,   m = Σ_{v∉I} p_s(v)  (the student's tail mass)
// under which the tail's share of the KL collapses to r·log(r / m):
//     KL = Σ_{j∈I} q_j·log(q_j / p_s(j)) + r·log(r / m).
// Why this choice: it is exact when k = V (no tail); otherwise it is the smallest KL over every
// completion of the teacher's tail that has mass r (log-sum inequality), so the loss only pushes
// on what the teacher actually sent — its top-k probabilities and the tail's total — never on
// the tail's shape, which it did not send. It needs nothing beyond the k + 1 numbers per row, and
// its gradient is the familiar (p_s^T − p_t^T) with p_t as above, well defined for every input
// (m > 0 because a softmax is positive; log m comes from a log-sum-exp over the tail, not from
// 1 − Σ, which would cancel). Spreading the tail uniformly instead would keep pulling the
// student's tail towards flat, a target the teacher never expressed. Terms with q_j = 0 or r = 0 contribute 0 (0·log 0 = 0); when k = V,
// r is rounding noise and is ignored.
//
// teacher.rows must be N and teacher.vocab V; opt.temperature must equal teacher.temperature
// (the probabilities were computed at it). Indices out of range or repeated within a row abort.
KdLoss KdTopKForward(const float* student_logits, const TopKTargets& teacher,
                     const int32_t* targets, int N, int V, const KdOptions& opt);

void KdTopKBackward(float* dlogits, const float* student_logits, const TopKTargets& teacher,
                    const int32_t* targets, int N, int V, const KdOptions& opt, int count,
                    float dloss = 1.0f);

}  // namespace tandem

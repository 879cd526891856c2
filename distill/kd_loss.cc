#include "distill/kd_loss.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

namespace tandem {
namespace {

// log Σ_v exp(x_v · scale) over a float row, in double.
double LogSumExp(const float* x, int V, double scale) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int v = 0; v < V; ++v) mx = std::max(mx, x[v] * scale);
  double sum = 0.0;
  for (int v = 0; v < V; ++v) sum += std::exp(x[v] * scale - mx);
  return mx + std::log(sum);
}

// p (V) = softmax(x · scale) over the tokens with skip[v] == 0 (0 at the others; skip may be
// null), in double; returns the log-normaliser log Σ exp(x · scale) over those tokens. One exp
// per token. Requires at least one token not skipped.
double SoftmaxRow(double* p, const float* x, int V, double scale, const uint8_t* skip = nullptr) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int v = 0; v < V; ++v) {
    if (skip == nullptr || !skip[v]) mx = std::max(mx, x[v] * scale);
  }
  double sum = 0.0;
  for (int v = 0; v < V; ++v) {
    p[v] = skip != nullptr && skip[v] ? 0.0 : std::exp(x[v] * scale - mx);
    sum += p[v];
  }
  const double inv = 1.0 / sum;
  for (int v = 0; v < V; ++v) p[v] *= inv;
  return mx + std::log(sum);
}

// Whether row i counts, checking its target.
bool RowCounts(const int32_t* targets, int i, int V) {
  if (targets == nullptr) return true;
  const int32_t y = targets[i];
  TANDEM_CHECK(y == kIgnoreTarget || (y >= 0 && y < V));
  return y != kIgnoreTarget;
}

void CheckCommon(const float* student_logits, const int32_t* targets, int N, int V,
                 const KdOptions& opt) {
  CheckKdOptions(opt);
  TANDEM_CHECK(N >= 0 && V >= 1 && (student_logits != nullptr || N == 0));
  // Without targets there is no CE to weigh: only pure distillation may omit them.
  TANDEM_CHECK(targets != nullptr || opt.alpha == 0.0f);
}

void CheckTopK(const TopKTargets& t, int N, int V, const KdOptions& opt) {
  TANDEM_CHECK(t.rows == N && t.vocab == V && t.k >= 1 && t.k <= V);
  TANDEM_CHECK(t.indices.size() == static_cast<size_t>(N) * t.k &&
               t.probs.size() == static_cast<size_t>(N) * t.k &&
               t.tail.size() == static_cast<size_t>(N));
  TANDEM_CHECK(opt.temperature == t.temperature);
}

KdLoss Finish(double ce_sum, double kl_sum, int count, const KdOptions& opt) {
  KdLoss r;
  r.count = count;
  if (count == 0) return r;
  const double T = opt.temperature, a = opt.alpha;
  r.ce = ce_sum / count;
  r.kl = kl_sum / count;
  r.loss = a * r.ce + (1.0 - a) * T * T * r.kl;
  return r;
}

// Writes the CE part α·(softmax(s) − onehot(y))·scale into d (V), or zeros when α = 0.
// scratch (V) is clobbered.
void CeRowBackward(float* d, double* scratch, const float* s, int32_t y, int V, double alpha_scale) {
  if (alpha_scale == 0.0) {
    std::fill(d, d + V, 0.0f);
    return;
  }
  SoftmaxRow(scratch, s, V, 1.0);
  for (int v = 0; v < V; ++v) d[v] = static_cast<float>(alpha_scale * scratch[v]);
  d[y] -= static_cast<float>(alpha_scale);
}

// Marks row i's top-k tokens in `mark` (V, all zero on entry), aborting on a bad index,
// probability or tail mass (O(k) per row; the sum checks stay in ValidateTopK).
void MarkRow(std::vector<uint8_t>& mark, const TopKTargets& t, int i) {
  const int32_t* idx = t.row_indices(i);
  const float* q = t.row_probs(i);
  for (int j = 0; j < t.k; ++j) {
    TANDEM_CHECK(idx[j] >= 0 && idx[j] < t.vocab);
    TANDEM_CHECK(mark[idx[j]] == 0);  // indices within a row must be distinct
    TANDEM_CHECK(q[j] >= 0.0f && q[j] <= 1.0f);  // false for NaN too
    mark[idx[j]] = 1;
  }
  TANDEM_CHECK(t.tail[i] >= 0.0f && t.tail[i] <= 1.0f);
}

void UnmarkRow(std::vector<uint8_t>& mark, const TopKTargets& t, int i) {
  const int32_t* idx = t.row_indices(i);
  for (int j = 0; j < t.k; ++j) mark[idx[j]] = 0;
}

// Whether the tail term is present: tokens outside the top k exist and the teacher put mass there.
bool HasTail(const TopKTargets& t, int i) { return t.k < t.vocab && t.tail[i] > 0.0f; }

}  // namespace

void CheckKdOptions(const KdOptions& opt) {
  TANDEM_CHECK(std::isfinite(opt.temperature) && opt.temperature > 0.0f);
  TANDEM_CHECK(opt.alpha >= 0.0f && opt.alpha <= 1.0f);
}

// --- Dense -----------------------------------------------------------------------------------

KdLoss KdForward(const float* student_logits, const float* teacher_logits, const int32_t* targets,
                 int N, int V, const KdOptions& opt, const float* row_weights) {
  CheckCommon(student_logits, targets, N, V, opt);
  TANDEM_CHECK(teacher_logits != nullptr || N == 0);
  const double inv_t = 1.0 / opt.temperature;
  double ce_sum = 0.0, kl_sum = 0.0;
  int count = 0;
#pragma omp parallel reduction(+ : ce_sum, kl_sum, count)
  {
    std::vector<double> pt(V);  // teacher softmax of the current row
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      if (!RowCounts(targets, i, V)) continue;
      ++count;
      const float* s = student_logits + static_cast<size_t>(i) * V;  // (V)
      const float* t = teacher_logits + static_cast<size_t>(i) * V;  // (V)
      if (targets != nullptr) ce_sum += LogSumExp(s, V, 1.0) - s[targets[i]];
      // KL = Σ p_t (log p_t − log p_s), both logs straight from the logits.
      const double lse_s = LogSumExp(s, V, inv_t);
      const double lse_t = SoftmaxRow(pt.data(), t, V, inv_t);
      double kl = 0.0;
      for (int v = 0; v < V; ++v) {
        if (pt[v] > 0.0) kl += pt[v] * ((t[v] * inv_t - lse_t) - (s[v] * inv_t - lse_s));
      }
      kl_sum += row_weights != nullptr ? row_weights[i] * kl : kl;
    }
  }
  return Finish(ce_sum, kl_sum, count, opt);
}

void KdBackward(float* dlogits, const float* student_logits, const float* teacher_logits,
                const int32_t* targets, int N, int V, const KdOptions& opt, int count,
                float dloss, const float* row_weights) {
  CheckCommon(student_logits, targets, N, V, opt);
  TANDEM_CHECK(teacher_logits != nullptr || N == 0);
  const double scale = count > 0 ? static_cast<double>(dloss) / count : 0.0;
  const double inv_t = 1.0 / opt.temperature;
  const double ce_scale = opt.alpha * scale;
  // d(T²·KL)/ds = T·(p_s − p_t).
  const double kd_scale = (1.0 - opt.alpha) * opt.temperature * scale;
#pragma omp parallel
  {
    std::vector<double> ps(V), pt(V);  // student and teacher softmax at T of the current row
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      float* d = dlogits + static_cast<size_t>(i) * V;  // (V)
      if (!RowCounts(targets, i, V)) {
        std::fill(d, d + V, 0.0f);
        continue;
      }
      const float* s = student_logits + static_cast<size_t>(i) * V;  // (V)
      const float* t = teacher_logits + static_cast<size_t>(i) * V;  // (V)
      CeRowBackward(d, ps.data(), s, targets != nullptr ? targets[i] : 0, V, ce_scale);
      if (kd_scale == 0.0) continue;
      // A row of weight 0 (masked) gets no KD gradient; the CE part above stays.
      const double row_scale = row_weights != nullptr ? kd_scale * row_weights[i] : kd_scale;
      if (row_scale == 0.0) continue;
      SoftmaxRow(ps.data(), s, V, inv_t);
      SoftmaxRow(pt.data(), t, V, inv_t);
      for (int v = 0; v < V; ++v) d[v] += static_cast<float>(row_scale * (ps[v] - pt[v]));
    }
  }
}

// --- Sparse top-k ----------------------------------------------------------------------------

KdLoss KdTopKForward(const float* student_logits, const TopKTargets& teacher,
                     const int32_t* targets, int N, int V, const KdOptions& opt) {
  CheckCommon(student_logits, targets, N, V, opt);
  CheckTopK(teacher, N, V, opt);
  const double inv_t = 1.0 / opt.temperature;
  double ce_sum = 0.0, kl_sum = 0.0;
  int count = 0;
#pragma omp parallel reduction(+ : ce_sum, kl_sum, count)
  {
    std::vector<uint8_t> mark(V, 0);  // top-k membership of the current row
    std::vector<double> scratch(V);
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      if (!RowCounts(targets, i, V)) continue;
      ++count;
      const float* s = student_logits + static_cast<size_t>(i) * V;  // (V)
      if (targets != nullptr) ce_sum += LogSumExp(s, V, 1.0) - s[targets[i]];
      const double lse = LogSumExp(s, V, inv_t);
      const int32_t* idx = teacher.row_indices(i);
      const float* q = teacher.row_probs(i);
      MarkRow(mark, teacher, i);
      double kl = 0.0;
      for (int j = 0; j < teacher.k; ++j) {
        if (q[j] > 0.0f) {
          kl += q[j] * (std::log(static_cast<double>(q[j])) - (s[idx[j]] * inv_t - lse));
        }
      }
      if (HasTail(teacher, i)) {
        // log m from a log-sum-exp over the tail with its own maximum: exact even when the
        // student's tail is far below its top k.
        const double r = teacher.tail[i];
        const double log_m = SoftmaxRow(scratch.data(), s, V, inv_t, mark.data()) - lse;
        kl += r * (std::log(r) - log_m);
      }
      UnmarkRow(mark, teacher, i);
      kl_sum += kl;
    }
  }
  return Finish(ce_sum, kl_sum, count, opt);
}

void KdTopKBackward(float* dlogits, const float* student_logits, const TopKTargets& teacher,
                    const int32_t* targets, int N, int V, const KdOptions& opt, int count,
                    float dloss) {
  CheckCommon(student_logits, targets, N, V, opt);
  CheckTopK(teacher, N, V, opt);
  const double scale = count > 0 ? static_cast<double>(dloss) / count : 0.0;
  const double inv_t = 1.0 / opt.temperature;
  const double ce_scale = opt.alpha * scale;
  const double kd_scale = (1.0 - opt.alpha) * opt.temperature * scale;
#pragma omp parallel
  {
    std::vector<uint8_t> mark(V, 0);
    std::vector<double> ps(V);       // student softmax at T of the current row
    std::vector<double> pt(V, 0.0);  // the completed teacher distribution of the current row
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      float* d = dlogits + static_cast<size_t>(i) * V;  // (V)
      if (!RowCounts(targets, i, V)) {
        std::fill(d, d + V, 0.0f);
        continue;
      }
      const float* s = student_logits + static_cast<size_t>(i) * V;  // (V)
      CeRowBackward(d, ps.data(), s, targets != nullptr ? targets[i] : 0, V, ce_scale);
      if (kd_scale == 0.0) continue;
      SoftmaxRow(ps.data(), s, V, inv_t);
      MarkRow(mark, teacher, i);
      // p_t outside the top k: r·p_s(v)/m, the student's tail renormalised to mass r; zero when
      // there is no tail.
      if (HasTail(teacher, i)) {
        const double r = teacher.tail[i];
        SoftmaxRow(pt.data(), s, V, inv_t, mark.data());
        for (int v = 0; v < V; ++v) pt[v] *= r;
      } else {
        std::fill(pt.begin(), pt.end(), 0.0);
      }
      const int32_t* idx = teacher.row_indices(i);
      const float* q = teacher.row_probs(i);
      for (int j = 0; j < teacher.k; ++j) pt[idx[j]] = q[j];
      for (int v = 0; v < V; ++v) d[v] += static_cast<float>(kd_scale * (ps[v] - pt[v]));
      UnmarkRow(mark, teacher, i);
    }
  }
}

}  // namespace tandem

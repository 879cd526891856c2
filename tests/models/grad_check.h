// Finite-difference gradient checking shared by the model tests: central differences in double
// around float parameters, compared with the analytic gradient by a relative-error measure.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

namespace tandem::testing {

struct GradCheckResult {
  double max_rel_error = 0.0;
  double max_abs_error = 0.0;
  int checked = 0;
};

// For each index in `indices`, perturbs x[i] by ±eps, evaluates `loss` (which must read x), and
// compares (L+ - L-) / 2eps with analytic[i]. rel error = |a - n| / max(|a| + |n|, floor).
inline GradCheckResult CheckGradient(float* x, const std::vector<size_t>& indices,
                                     const float* analytic, const std::function<double()>& loss,
                                     double eps = 1e-2, double floor = 1e-3) {
  GradCheckResult r;
  for (size_t i : indices) {
    const float saved = x[i];
    x[i] = static_cast<float>(saved + eps);
    const double lp = loss();
    x[i] = static_cast<float>(saved - eps);
    const double lm = loss();
    x[i] = saved;
    const double numeric = (lp - lm) / (2 * eps);
    const double abs_err = std::abs(numeric - analytic[i]);
    const double rel = abs_err / std::max(std::abs(numeric) + std::abs(analytic[i]), floor);
    r.max_rel_error = std::max(r.max_rel_error, rel);
    r.max_abs_error = std::max(r.max_abs_error, abs_err);
    ++r.checked;
  }
  return r;
}

// Up to `count` indices spread over [0, n) (all of them when n <= count).
inline std::vector<size_t> SpreadIndices(size_t n, size_t count, size_t salt = 0) {
  std::vector<size_t> idx;
  if (n <= count) {
    for (size_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  for (size_t k = 0; k < count; ++k) idx.push_back((k * n / count + salt * 7919) % n);
  return idx;
}

}  // namespace tandem::testing

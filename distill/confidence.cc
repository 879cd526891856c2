// Confidence-weighted ensembles; see distill/confidence.h.
#include "distill/confidence.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "distill/ensemble.h"

namespace tandem {

void ConfidenceContribution(float* out, const float* logits, int N, int V, float temperature) {
  TANDEM_CHECK(N >= 0 && V >= 1 && std::isfinite(temperature) && temperature > 0.0f);
  EnsembleContribution(out, logits, N, V, temperature, EnsembleMode::kMeanProbabilities);
  float* weights = out + static_cast<size_t>(N) * V;  // (N)
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* z = logits + static_cast<size_t>(i) * V;  // (V)
    // max softmax(z) = 1 / Σ_v exp(z_v − max z)
    const double mx = *std::max_element(z, z + V);
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += std::exp(z[v] - mx);
    const float w = static_cast<float>(1.0 / sum);
    float* p = out + static_cast<size_t>(i) * V;  // (V)
    for (int v = 0; v < V; ++v) p[v] *= w;
    weights[i] = w;
  }
}

void ConfidenceEnsemble(float* probs, const float* sum, int N, int V) {
  TANDEM_CHECK(N >= 0 && V >= 1);
  const float* weights = sum + static_cast<size_t>(N) * V;  // (N)
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const double w = std::max(static_cast<double>(weights[i]), kConfidenceWeightFloor);
    const float* s = sum + static_cast<size_t>(i) * V;  // (V)
    float* p = probs + static_cast<size_t>(i) * V;      // (V)
    for (int v = 0; v < V; ++v) p[v] = static_cast<float>(s[v] / w);
  }
}

Status CheckConfidenceContribution(std::span<const float> values, int N, int V) {
  if (values.size() != ConfidenceContributionLength(N, V)) {
    return Status::InvalidArgument("a confidence upload needs " +
                                   std::to_string(ConfidenceContributionLength(N, V)) +
                                   " values, it has " + std::to_string(values.size()));
  }
  const float* weights = values.data() + static_cast<size_t>(N) * V;
  for (int i = 0; i < N; ++i) {
    const float w = weights[i];
    if (!(w >= 0.0f && w <= 1.0f)) {
      return Status::InvalidArgument("the confidence of row " + std::to_string(i) +
                                     " is outside [0, 1]");
    }
    double sum = 0.0;
    for (int v = 0; v < V; ++v) {
      const float x = values[static_cast<size_t>(i) * V + v];
      if (!(x >= 0.0f && x <= w)) {
        return Status::InvalidArgument("row " + std::to_string(i) +
                                       " has a weighted probability outside [0, w]");
      }
      sum += x;
    }
    if (std::fabs(sum - w) > 1e-3) {
      return Status::InvalidArgument("row " + std::to_string(i) +
                                     " of weighted probabilities does not sum to its weight");
    }
  }
  return Status::Ok();
}

}  // namespace tandem

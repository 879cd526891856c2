#include "route/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace tandem {

Status SamplingOptions::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return Status::InvalidArgument("temperature must be a finite number >= 0");
  }
  if (top_k < 0) return Status::InvalidArgument("top_k must be >= 0 (0: the whole vocabulary)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return Status::InvalidArgument("top_p must be in (0, 1] (1: no nucleus cut)");
  }
  return Status::Ok();
}

void SamplingProbs(const float* logits, int V, const SamplingOptions& options, float* probs) {
  TANDEM_CHECK(V >= 1);
  std::fill(probs, probs + V, 0.0f);
  if (options.temperature <= 0.0f) {
    probs[std::max_element(logits, logits + V) - logits] = 1.0f;
    return;
  }
  // Token ids by decreasing logit, lower id first on ties (stable): the order every cut uses.
  std::vector<int32_t> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const int k = options.top_k > 0 ? std::min(options.top_k, V) : V;
  std::vector<double> p(k);
  const double mx = logits[ids[0]];
  double sum = 0.0;
  for (int i = 0; i < k; ++i) {
    p[i] = std::exp((logits[ids[i]] - mx) / options.temperature);
    sum += p[i];
  }
  // Nucleus: the shortest prefix of the sorted tokens whose mass reaches top_p.
  int kept = k;
  if (options.top_p < 1.0f) {
    double mass = 0.0;
    for (int i = 0; i < k; ++i) {
      mass += p[i] / sum;
      if (mass >= options.top_p) {
        kept = i + 1;
        break;
      }
    }
  }
  double kept_sum = 0.0;
  for (int i = 0; i < kept; ++i) kept_sum += p[i];
  for (int i = 0; i < kept; ++i) {
    // Underflow to 0 would put a kept token out of the support; keep it (vanishingly) possible.
    probs[ids[i]] = std::max(static_cast<float>(p[i] / kept_sum), 1e-38f);
  }
}

int32_t SampleFromProbs(std::span<const float> probs, Rng& rng) {
  TANDEM_CHECK(!probs.empty());
  double sum = 0.0;
  for (float x : probs) sum += x;
  double u = rng.Uniform() * sum;
  int32_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0f) continue;
    last = static_cast<int32_t>(i);
    u -= probs[i];
    if (u < 0.0) return last;
  }
  TANDEM_CHECK(last >= 0);
  return last;  // rounding left u a hair above 0: the last possible token
}

}  // namespace tandem

// The router baseline's features and classifier (see router.h).
#include "route/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "models/gpt_workspace.h"
#include "models/tokenizer.h"
#include "route/handoff.h"

namespace tandem {

RouterFeatureRow DeviceRouterFeatures(std::shared_ptr<const GptWeights> device,
                                      std::string_view prompt, int max_tokens) {
  std::vector<int32_t> tokens = {ByteTokenizer::kEndOfText};
  ByteTokenizer::EncodeAppend(prompt, &tokens);
  const int V = device->config().vocab;
  TANDEM_CHECK(max_tokens >= 1 &&
               static_cast<int>(tokens.size()) + max_tokens <= device->config().context);
  GptWorkspace ws(std::move(device));
  const float* logits = ws.Decode(tokens.data(), static_cast<int>(tokens.size()));
  logits += (tokens.size() - 1) * static_cast<size_t>(V);
  RouterFeatureRow f{};
  double sum_logp = 0.0;
  int n = 0;
  std::vector<double> p(V);
  for (int i = 0; i < max_tokens; ++i) {
    // softmax(logits) with the marker banned, in double
    double mx = -std::numeric_limits<double>::infinity();
    for (int v = 0; v < V; ++v) {
      if (v != kHandOffToken) mx = std::max(mx, static_cast<double>(logits[v]));
    }
    double z = 0.0;
    for (int v = 0; v < V; ++v) {
      p[v] = v == kHandOffToken ? 0.0 : std::exp(logits[v] - mx);
      z += p[v];
    }
    int32_t best = 0;
    for (int v = 0; v < V; ++v) {
      p[v] /= z;
      if (p[v] > p[best]) best = v;
    }
    if (i == 0) {
      f[0] = p[best];
      double h = 0.0;
      for (int v = 0; v < V; ++v) h -= p[v] > 0.0 ? p[v] * std::log(p[v]) : 0.0;
      f[1] = h;
    }
    sum_logp += std::log(p[best]);
    ++n;
    if (best == '\n' || best == ByteTokenizer::kEndOfText || i + 1 == max_tokens) break;
    logits = ws.Decode(&best, 1);
  }
  f[2] = sum_logp / n;
  return f;
}

Status LogisticOptions::Validate() const {
  if (iterations < 1) return Status::InvalidArgument("router: iterations must be >= 1");
  if (!std::isfinite(lr) || lr <= 0.0) return Status::InvalidArgument("router: lr must be > 0");
  if (!std::isfinite(l2) || l2 < 0.0) return Status::InvalidArgument("router: l2 must be >= 0");
  return Status::Ok();
}

namespace {

double Sigmoid(double t) { return 1.0 / (1.0 + std::exp(-t)); }

}  // namespace

StatusOr<LogisticRouter> LogisticRouter::Fit(std::span<const RouterFeatureRow> x,
                                             std::span<const int> y,
                                             const LogisticOptions& options) {
  TANDEM_RETURN_IF_ERROR(options.Validate());
  if (x.empty() || x.size() != y.size()) {
    return Status::InvalidArgument("router: " + std::to_string(x.size()) + " rows and " +
                                   std::to_string(y.size()) + " labels (need the same, >= 1)");
  }
  const size_t n = x.size();
  LogisticRouter r;
  for (int j = 0; j < kRouterFeatures; ++j) {
    double s = 0.0, s2 = 0.0;
    for (const auto& row : x) {
      if (!std::isfinite(row[j])) {
        return Status::InvalidArgument("router: feature " + std::to_string(j) +
                                       " is not finite");
      }
      s += row[j];
    }
    r.mean_[j] = s / n;
    for (const auto& row : x) s2 += (row[j] - r.mean_[j]) * (row[j] - r.mean_[j]);
    const double sd = std::sqrt(s2 / n);
    r.scale_[j] = sd > 1e-12 ? 1.0 / sd : 0.0;
  }
  for (int label : y) {
    if (label != 0 && label != 1) return Status::InvalidArgument("router: labels must be 0 or 1");
  }
  std::vector<RouterFeatureRow> z(n);
  for (size_t i = 0; i < n; ++i) {
    for (int j = 0; j < kRouterFeatures; ++j) z[i][j] = (x[i][j] - r.mean_[j]) * r.scale_[j];
  }
  // Full-batch gradient descent on the mean log-loss plus l2/2·|w|²: convex, so it converges
  // to the one minimum from zero.
  for (int it = 0; it < options.iterations; ++it) {
    std::array<double, kRouterFeatures> dw{};
    double db = 0.0;
    for (size_t i = 0; i < n; ++i) {
      double t = r.b_;
      for (int j = 0; j < kRouterFeatures; ++j) t += r.w_[j] * z[i][j];
      const double e = Sigmoid(t) - y[i];
      for (int j = 0; j < kRouterFeatures; ++j) dw[j] += e * z[i][j];
      db += e;
    }
    for (int j = 0; j < kRouterFeatures; ++j) {
      r.w_[j] -= options.lr * (dw[j] / n + options.l2 * r.w_[j]);
    }
    r.b_ -= options.lr * db / n;
  }
  double loss = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double p = std::clamp(r.Probability(x[i]), 1e-12, 1.0 - 1e-12);
    loss -= y[i] ? std::log(p) : std::log(1.0 - p);
  }
  r.training_loss_ = loss / n;
  return r;
}

double LogisticRouter::Probability(const RouterFeatureRow& x) const {
  double t = b_;
  for (int j = 0; j < kRouterFeatures; ++j) t += w_[j] * (x[j] - mean_[j]) * scale_[j];
  return Sigmoid(t);
}

double TopFractionThreshold(std::vector<double> scores, double fraction) {
  TANDEM_CHECK(!scores.empty() && fraction >= 0.0 && fraction <= 1.0);
  const size_t k = static_cast<size_t>(std::ceil(fraction * scores.size() - 1e-9));
  if (k == 0) return std::numeric_limits<double>::infinity();
  std::sort(scores.begin(), scores.end(), std::greater<double>());
  return scores[k - 1];
}

}  // namespace tandem

#include "route/policy_gradient.h"

#include <algorithm>
#include <cmath>

#include "models/cross_entropy.h"

namespace tandem {

Status PolicyGradientOptions::Validate() const {
  if (!(grpo_epsilon > 0.0) || !std::isfinite(grpo_epsilon)) {
    return Status::InvalidArgument("policy gradient grpo_epsilon must be a finite number > 0");
  }
  return Status::Ok();
}

std::vector<double> GroupAdvantages(std::span<const double> rewards,
                                    const PolicyGradientOptions& options) {
  const size_t G = rewards.size();
  TANDEM_CHECK(G >= 2);
  double mean = 0.0;
  for (double r : rewards) mean += r;
  mean /= static_cast<double>(G);
  std::vector<double> a(G);
  if (options.mode == AdvantageMode::kGapg) {
    for (size_t i = 0; i < G; ++i) a[i] = (rewards[i] - mean) / static_cast<double>(G - 1);
    return a;
  }
  double ss = 0.0;
  for (double r : rewards) ss += (r - mean) * (r - mean);
  const double sd = std::sqrt(ss / static_cast<double>(G - 1));
  for (size_t i = 0; i < G; ++i) {
    a[i] = (rewards[i] - mean) / ((sd + options.grpo_epsilon) * static_cast<double>(G));
  }
  return a;
}

namespace {

// log Σ exp(row) and the row's maximum, in double.
double LogSumExp(const float* row, int V) {
  const float mx = *std::max_element(row, row + V);
  double s = 0.0;
  for (int v = 0; v < V; ++v) s += std::exp(static_cast<double>(row[v]) - mx);
  return mx + std::log(s);
}

}  // namespace

double PolicyGradientForward(const float* logits, const int32_t* targets, const float* coef,
                             int N, int V) {
  double loss = 0.0;
  for (int n = 0; n < N; ++n) {
    if (targets[n] == kIgnoreTarget || coef[n] == 0.0f) continue;
    const float* row = logits + static_cast<size_t>(n) * V;
    loss -= coef[n] * (row[targets[n]] - LogSumExp(row, V));
  }
  return loss;
}

void PolicyGradientBackward(float* dlogits, const float* logits, const int32_t* targets,
                            const float* coef, int N, int V, float scale) {
  for (int n = 0; n < N; ++n) {
    float* d = dlogits + static_cast<size_t>(n) * V;
    if (targets[n] == kIgnoreTarget || coef[n] == 0.0f) {
      std::fill(d, d + V, 0.0f);
      continue;
    }
    const float* row = logits + static_cast<size_t>(n) * V;
    const double lse = LogSumExp(row, V);
    const double c = static_cast<double>(coef[n]) * scale;
    // d(−c·log softmax[y])/d z_v = c·(softmax_v − [v = y]).
    for (int v = 0; v < V; ++v) d[v] = static_cast<float>(c * std::exp(row[v] - lse));
    d[targets[n]] -= static_cast<float>(c);
  }
}

Status ValidateRollout(const Rollout& r, int vocab, int context) {
  const size_t G = r.completions.size();
  if (r.prompt.empty()) return Status::InvalidArgument("rollout: the prompt is empty");
  if (G < 2) return Status::InvalidArgument("rollout: a group needs >= 2 completions");
  if (r.rewards.size() != G) {
    return Status::InvalidArgument("rollout: " + std::to_string(r.rewards.size()) +
                                   " rewards for " + std::to_string(G) + " completions");
  }
  auto in_range = [vocab](const std::vector<int32_t>& t) {
    return std::all_of(t.begin(), t.end(), [vocab](int32_t x) { return x >= 0 && x < vocab; });
  };
  if (!in_range(r.prompt)) return Status::InvalidArgument("rollout: prompt token out of range");
  for (size_t i = 0; i < G; ++i) {
    const auto& c = r.completions[i];
    if (c.empty()) return Status::InvalidArgument("rollout: an empty completion");
    if (!in_range(c)) return Status::InvalidArgument("rollout: completion token out of range");
    if (r.prompt.size() + c.size() > static_cast<size_t>(context) + 1) {
      return Status::InvalidArgument("rollout: prompt and completion exceed the context of " +
                                     std::to_string(context));
    }
    if (!std::isfinite(r.rewards[i])) return Status::InvalidArgument("rollout: reward not finite");
  }
  return Status::Ok();
}

PolicyGradientTerm::PolicyGradientTerm(RolloutSource source, PolicyGradientOptions options,
                                       float weight, std::string name)
    : source_(std::move(source)), options_(options), weight_(weight), name_(std::move(name)) {
  TANDEM_CHECK(options_.Validate().ok());
}

StatusOr<TermLoss> PolicyGradientTerm::Accumulate(Gpt& model, int64_t step, Rng& rng) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<Rollout> rollouts, source_(model, step, rng));
  if (rollouts.empty()) return Status::InvalidArgument("policy gradient: no rollouts this step");
  const int V = model.config().vocab, context = model.config().context;
  int B = 0, T = 1;
  for (const Rollout& r : rollouts) {
    TANDEM_RETURN_IF_ERROR(ValidateRollout(r, V, context));
    B += static_cast<int>(r.completions.size());
    // The last completion token is a target only, never an input.
    for (const auto& c : r.completions) {
      T = std::max(T, static_cast<int>(r.prompt.size() + c.size()) - 1);
    }
  }
  tokens_.assign(static_cast<size_t>(B) * T, 0);
  targets_.assign(static_cast<size_t>(B) * T, kIgnoreTarget);
  coef_.assign(static_cast<size_t>(B) * T, 0.0f);
  double reward_sum = 0.0;
  int b = 0;
  for (const Rollout& r : rollouts) {
    const std::vector<double> adv = GroupAdvantages(r.rewards, options_);
    const int P = static_cast<int>(r.prompt.size());
    for (size_t i = 0; i < r.completions.size(); ++i, ++b) {
      reward_sum += r.rewards[i];
      const auto& c = r.completions[i];
      const int L = P + static_cast<int>(c.size());  // tokens of the row before the cut
      int32_t* tok = tokens_.data() + static_cast<size_t>(b) * T;
      int32_t* tgt = targets_.data() + static_cast<size_t>(b) * T;
      float* cf = coef_.data() + static_cast<size_t>(b) * T;
      for (int t = 0; t + 1 < L; ++t) {
        tok[t] = t < P ? r.prompt[t] : c[t - P];
        // Position t predicts token t+1: a target when that token is the completion's.
        if (t + 1 >= P) {
          tgt[t] = c[t + 1 - P];
          cf[t] = static_cast<float>(adv[i]);
        }
      }
    }
  }
  last_mean_reward_ = reward_sum / B;
  model.Forward(tokens_.data(), nullptr, B, T);
  const float scale = weight_ / static_cast<float>(rollouts.size());
  const size_t N = static_cast<size_t>(B) * T;
  const double loss =
      PolicyGradientForward(model.logits(), targets_.data(), coef_.data(), static_cast<int>(N), V) *
      scale;
  TermLoss out{loss};
  if (!std::isfinite(loss)) return out;
  dlogits_.resize(N * V);
  PolicyGradientBackward(dlogits_.data(), model.logits(), targets_.data(), coef_.data(),
                         static_cast<int>(N), V, scale);
  model.BackwardFromLogits(dlogits_.data());
  return out;
}

}  // namespace tandem

// The router baseline (Hybrid-LLM style, Ding et al. 2024): a small classifier that predicts from
// the prompt whether the device model will answer it wrongly, and hands off the prompts it
// scores highest. The classifier is logistic regression over features of the device's own
// next-token distribution after the prompt, so it costs one device forward pass per prompt and
// never asks the cloud.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "models/gpt_weights.h"

namespace tandem {

// Features of one prompt, from the device's greedy answer with the hand-off marker banned:
//   [0] the first answer token's probability (the device's confidence where the answer starts),
//   [1] the entropy of the first answer token's distribution, in nats,
//   [2] the mean log-probability of the greedy answer's tokens (its '\n' included).
inline constexpr int kRouterFeatures = 3;
using RouterFeatureRow = std::array<double, kRouterFeatures>;

// The features of `prompt` (text, after an end-of-text token as tandem's records are laid out).
// Requires the prompt and max_tokens to fit the device's context.
RouterFeatureRow DeviceRouterFeatures(std::shared_ptr<const GptWeights> device,
                                      std::string_view prompt, int max_tokens);

struct LogisticOptions {
  int iterations = 2000;   // full-batch gradient steps
  double lr = 0.5;         // on standardised features
  double l2 = 1e-3;        // penalty on the weights (not the bias)
  Status Validate() const;
};

// Logistic regression p(y = 1 | x) = σ(w·z + b), z the features standardised by the training
// set's mean and standard deviation (a constant feature gets z = 0).
class LogisticRouter {
 public:
  // Fits on rows `x` with labels `y` (1: the device is wrong). Errors: sizes that differ, no
  // rows, a feature that is not finite, invalid options.
  static StatusOr<LogisticRouter> Fit(std::span<const RouterFeatureRow> x,
                                      std::span<const int> y, const LogisticOptions& options);
  double Probability(const RouterFeatureRow& x) const;
  // The training loss (mean negative log-likelihood, without the penalty) after the fit.
  double training_loss() const { return training_loss_; }
  std::span<const double> weights() const { return w_; }

 private:
  std::array<double, kRouterFeatures> mean_{}, scale_{}, w_{};
  double b_ = 0.0, training_loss_ = 0.0;
};

// The threshold that hands off a `fraction` of `scores`: the smallest score among the top
// ⌈fraction·n⌉ (scores >= it hand off); +∞ when that is none. fraction in [0, 1], scores non-empty.
double TopFractionThreshold(std::vector<double> scores, double fraction);

}  // namespace tandem

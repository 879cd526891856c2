// Policy-gradient loss terms for the local trainer (train/local_trainer.h): group-relative
// advantages over G sampled completions of one prompt, as in the group-adaptive policy gradient
// (GAPG) of Fang, Han, Yuan, Brinton (arXiv 2509.24050) and GRPO (Shao et al. 2024), the
// baseline the paper compares with.
//
// For a group of completions y_1..y_G of a prompt x with rewards r_i:
//   GAPG   A_i = (r_i − r̄) / (G − 1)                (unbiased: the leave-one-out baseline)
//   GRPO   A_i = (r_i − r̄) / ((s + ε) · G)          (s the group's sample standard deviation)
// and the surrogate loss L = −Σ_i A_i · log π(y_i | x), log π summed over the completion's tokens
// only, whose gradient is −Σ_i A_i ∇log π(y_i|x) (for GAPG, −1/(G−1) Σ_i (r_i − r̄) ∇log π). Over
// several prompts in one step the groups' losses are averaged.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "train/local_trainer.h"

namespace tandem {

enum class AdvantageMode { kGapg, kGrpo };

struct PolicyGradientOptions {
  AdvantageMode mode = AdvantageMode::kGapg;
  double grpo_epsilon = 1e-4;  // ε of the GRPO denominator
  Status Validate() const;
};

// The advantages A_i of one group's rewards (G >= 2). A group whose rewards are all equal has
// A = 0 in both modes.
std::vector<double> GroupAdvantages(std::span<const double> rewards,
                                    const PolicyGradientOptions& options);

// The surrogate on logits: logits (N,V), targets (N) (the token each row predicts, or
// kIgnoreTarget), coef (N) the weight of each row's log-probability (a completion's advantage on
// its rows). Returns −Σ_n coef[n]·log softmax(logits[n])[targets[n]] over rows with a target.
double PolicyGradientForward(const float* logits, const int32_t* targets, const float* coef,
                             int N, int V);
// dlogits (N,V) = d(the above)/d(logits), scaled by `scale`: −coef·(onehot − softmax).
void PolicyGradientBackward(float* dlogits, const float* logits, const int32_t* targets,
                            const float* coef, int N, int V, float scale = 1.0f);

// One prompt's sampled completions and their rewards.
struct Rollout {
  std::vector<int32_t> prompt;                   // non-empty
  std::vector<std::vector<int32_t>> completions; // G >= 2, each non-empty
  std::vector<double> rewards;                   // G
};

// Checks shapes and values (tokens in [0, vocab), finite rewards, prompt + completion within
// `context`).
Status ValidateRollout(const Rollout& rollout, int vocab, int context);

// Where a step's groups come from: sampled from the model as it is now (on-policy), or fixed
// (tests, replay). Called once per step with the trainer's rng.
using RolloutSource = std::function<StatusOr<std::vector<Rollout>>(Gpt& model, int64_t step,
                                                                   Rng& rng)>;

// The policy-gradient term. Each step packs every completion of the step's rollouts as one row
// prompt+completion (padded to the longest), runs one forward pass, and back-propagates
// weight/P · Σ_groups L_group (P groups in the step).
class PolicyGradientTerm : public LossTerm {
 public:
  PolicyGradientTerm(RolloutSource source, PolicyGradientOptions options, float weight = 1.0f,
                     std::string name = "pg");
  std::string name() const override { return name_; }
  // Errors: the source's, an invalid rollout, an empty step.
  StatusOr<TermLoss> Accumulate(Gpt& model, int64_t step, Rng& rng) override;
  // The mean reward over the last step's completions.
  double last_mean_reward() const { return last_mean_reward_; }

 private:
  RolloutSource source_;
  PolicyGradientOptions options_;
  float weight_;
  std::string name_;
  double last_mean_reward_ = 0.0;
  std::vector<int32_t> tokens_, targets_;  // (B,T)
  std::vector<float> coef_;                // (B,T)
  std::vector<float> dlogits_;             // (B,T,V)
};

}  // namespace tandem

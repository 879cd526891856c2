// GAPG's rewards and data (Fang, Han, Yuan, Brinton, arXiv 2509.24050): the device model learns
// when to answer and when to hand a prompt to the cloud (route/handoff.h) from rewards
//   a_a  its own answer is correct,
//   a_c  it handed off and the cloud's answer is correct,
//   0    otherwise,
// with a_a > a_c > 0, so answering right beats handing off, which beats answering wrong. The
// adaptive prompt filter trains on prompts whose local outcomes are mixed (D1), plus up to
// ρ·|D1| prompts that no local sample solved but the cloud does, so hand-off is learnt where it
// pays. The cloud is asked about each prompt at most once (CloudOracle caches). The loss itself
// is route/policy_gradient.h's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "data/arithmetic.h"
#include "models/gpt_weights.h"
#include "route/handoff.h"
#include "route/policy_gradient.h"
#include "route/sampling.h"

namespace tandem {

struct GapgRewards {
  double answer_correct = 1.0;   // a_a
  double handoff_correct = 0.5;  // a_c
  Status Validate() const;       // a_a > a_c > 0, finite
};

// Whether the cloud answers prompts right, asking it at most once per prompt text.
class CloudOracle {
 public:
  explicit CloudOracle(CloudAnswer cloud) : cloud_(std::move(cloud)) {}
  // ExactMatch(cloud(example.prompt), example.answer), cached by prompt.
  StatusOr<bool> Correct(const ArithmeticExample& example);
  int64_t queries() const { return queries_; }

 private:
  CloudAnswer cloud_;
  std::unordered_map<std::string, bool> cache_;
  int64_t queries_ = 0;
};

// The reward of one completion of `example` (route/handoff.h's format). A hand-off asks
// `oracle` (cached).
StatusOr<double> GapgReward(const ParsedCompletion& parsed, const ArithmeticExample& example,
                            CloudOracle& oracle, const GapgRewards& rewards);

// A prompt's local outcomes over its samples: how many were correct answers of the device's own.
struct PromptOutcome {
  int local_correct = 0;
  int samples = 0;
};

struct PromptFilterResult {
  std::vector<size_t> mixed;       // D1: 0 < local_correct < samples, in input order
  std::vector<size_t> cloud_only;  // no local sample right, the cloud right; <= ⌊ρ·|D1|⌋
  int64_t cloud_queries = 0;       // new questions to the cloud during this call
  std::vector<size_t> Kept() const;  // mixed then cloud_only
};

// The adaptive filter. Candidates for cloud_only are examined in input order and the cloud is
// asked only until ⌊ρ·|D1|⌋ are found. Errors: ρ < 0 or not finite, sizes that differ, an
// outcome with samples < 1 or local_correct outside [0, samples], the cloud's errors.
StatusOr<PromptFilterResult> AdaptivePromptFilter(std::span<const ArithmeticExample> examples,
                                                  std::span<const PromptOutcome> outcomes,
                                                  double rho, CloudOracle& oracle);

// G completions of `example.prompt` from `weights` (DecodeLine, each ending at '\n' or after
// max_tokens), with their GAPG rewards: one group of the policy-gradient term.
StatusOr<Rollout> SampleGapgRollout(std::shared_ptr<const GptWeights> weights,
                                    const ArithmeticExample& example, int G, int max_tokens,
                                    const SamplingOptions& sampling, const GapgRewards& rewards,
                                    CloudOracle& oracle, Rng& rng);

// The count of a rollout's completions that are correct answers of the device's own.
int LocalCorrect(const Rollout& rollout, const ArithmeticExample& example);

// An on-policy source for PolicyGradientTerm: each step draws `prompts_per_step` examples
// uniformly from `examples` and samples a group of G for each from the model as it is now.
// `examples` and `oracle` must outlive the source.
RolloutSource GapgRolloutSource(std::span<const ArithmeticExample> examples,
                                int prompts_per_step, int G, int max_tokens,
                                SamplingOptions sampling, GapgRewards rewards,
                                CloudOracle* oracle);

}  // namespace tandem

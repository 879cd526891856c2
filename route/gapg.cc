#include "route/gapg.h"

#include <cmath>

#include "models/tokenizer.h"

namespace tandem {

Status GapgRewards::Validate() const {
  if (!std::isfinite(answer_correct) || !std::isfinite(handoff_correct) ||
      !(answer_correct > handoff_correct && handoff_correct > 0.0)) {
    return Status::InvalidArgument("GAPG rewards need answer_correct > handoff_correct > 0");
  }
  return Status::Ok();
}

StatusOr<bool> CloudOracle::Correct(const ArithmeticExample& example) {
  auto it = cache_.find(example.prompt);
  if (it != cache_.end()) return it->second;
  ++queries_;
  TANDEM_ASSIGN_OR_RETURN(std::string answer, cloud_(example.prompt));
  const bool correct = ExactMatch(answer, example.answer);
  cache_.emplace(example.prompt, correct);
  return correct;
}

StatusOr<double> GapgReward(const ParsedCompletion& parsed, const ArithmeticExample& example,
                            CloudOracle& oracle, const GapgRewards& rewards) {
  if (parsed.kind == CompletionKind::kAnswer) {
    return ExactMatch(parsed.answer, example.answer) ? rewards.answer_correct : 0.0;
  }
  TANDEM_ASSIGN_OR_RETURN(bool cloud_right, oracle.Correct(example));
  return cloud_right ? rewards.handoff_correct : 0.0;
}

std::vector<size_t> PromptFilterResult::Kept() const {
  std::vector<size_t> kept = mixed;
  kept.insert(kept.end(), cloud_only.begin(), cloud_only.end());
  return kept;
}

StatusOr<PromptFilterResult> AdaptivePromptFilter(std::span<const ArithmeticExample> examples,
                                                  std::span<const PromptOutcome> outcomes,
                                                  double rho, CloudOracle& oracle) {
  if (!std::isfinite(rho) || rho < 0.0) {
    return Status::InvalidArgument("prompt filter rho must be a finite number >= 0");
  }
  if (examples.size() != outcomes.size()) {
    return Status::InvalidArgument("prompt filter: " + std::to_string(examples.size()) +
                                   " prompts but " + std::to_string(outcomes.size()) +
                                   " outcomes");
  }
  PromptFilterResult out;
  std::vector<size_t> unsolved;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const PromptOutcome& o = outcomes[i];
    if (o.samples < 1 || o.local_correct < 0 || o.local_correct > o.samples) {
      return Status::InvalidArgument("prompt filter: prompt " + std::to_string(i) + " has " +
                                     std::to_string(o.local_correct) + " correct of " +
                                     std::to_string(o.samples) + " samples");
    }
    if (o.local_correct > 0 && o.local_correct < o.samples) out.mixed.push_back(i);
    if (o.local_correct == 0) unsolved.push_back(i);
  }
  const size_t quota = static_cast<size_t>(std::floor(rho * static_cast<double>(out.mixed.size())));
  const int64_t before = oracle.queries();
  for (size_t i : unsolved) {
    if (out.cloud_only.size() >= quota) break;
    TANDEM_ASSIGN_OR_RETURN(bool cloud_right, oracle.Correct(examples[i]));
    if (cloud_right) out.cloud_only.push_back(i);
  }
  out.cloud_queries = oracle.queries() - before;
  return out;
}

StatusOr<Rollout> SampleGapgRollout(std::shared_ptr<const GptWeights> weights,
                                    const ArithmeticExample& example, int G, int max_tokens,
                                    const SamplingOptions& sampling, const GapgRewards& rewards,
                                    CloudOracle& oracle, Rng& rng) {
  TANDEM_RETURN_IF_ERROR(sampling.Validate());
  TANDEM_RETURN_IF_ERROR(rewards.Validate());
  if (G < 2) return Status::InvalidArgument("GAPG group size must be >= 2");
  Rollout r;
  r.prompt = {ByteTokenizer::kEndOfText};
  ByteTokenizer::EncodeAppend(example.prompt, &r.prompt);
  if (max_tokens < 1 ||
      static_cast<int>(r.prompt.size()) + max_tokens > weights->config().context) {
    return Status::InvalidArgument("GAPG: prompt \"" + example.prompt + "\" and " +
                                   std::to_string(max_tokens) +
                                   " new tokens do not fit the model's context");
  }
  for (int i = 0; i < G; ++i) {
    r.completions.push_back(DecodeLine(weights, r.prompt, max_tokens, sampling, rng));
    const ParsedCompletion parsed = ParseCompletion(ByteTokenizer::Decode(r.completions.back()));
    TANDEM_ASSIGN_OR_RETURN(double reward, GapgReward(parsed, example, oracle, rewards));
    r.rewards.push_back(reward);
  }
  return r;
}

int LocalCorrect(const Rollout& rollout, const ArithmeticExample& example) {
  int n = 0;
  for (const auto& c : rollout.completions) {
    const ParsedCompletion parsed = ParseCompletion(ByteTokenizer::Decode(c));
    n += parsed.kind == CompletionKind::kAnswer && ExactMatch(parsed.answer, example.answer);
  }
  return n;
}

RolloutSource GapgRolloutSource(std::span<const ArithmeticExample> examples,
                                int prompts_per_step, int G, int max_tokens,
                                SamplingOptions sampling, GapgRewards rewards,
                                CloudOracle* oracle) {
  TANDEM_CHECK(!examples.empty() && prompts_per_step >= 1 && oracle != nullptr);
  return [=](Gpt& model, int64_t, Rng& rng) -> StatusOr<std::vector<Rollout>> {
    std::vector<Rollout> out;
    for (int p = 0; p < prompts_per_step; ++p) {
      const ArithmeticExample& ex = examples[rng.Below(examples.size())];
      TANDEM_ASSIGN_OR_RETURN(Rollout r, SampleGapgRollout(model.shared_weights(), ex, G,
                                                           max_tokens, sampling, rewards,
                                                           *oracle, rng));
      out.push_back(std::move(r));
    }
    return out;
  };
}

}  // namespace tandem

// A part's score; see algorithms/route_gapg/score.h.
#include "algorithms/route_gapg/score.h"

#include "models/tokenizer.h"
#include "route/handoff.h"
#include "route/route_run.h"
#include "route/router.h"

namespace tandem {
StatusOr<RouteShareScore> ScoreRouteShare(const Gpt& policy, const Gpt& cloud,
                                          const RoutePrompts& prompts, double budget,
                                          const std::string& cap,
                                          const RouteGapgTrainTask& task) {
  if (prompts.train.empty() || prompts.test.empty()) {
    return Status::InvalidArgument("route-gapg scoring needs training and held-out prompts");
  }
  if (cap != "online" && cap != "ranked") {
    return Status::InvalidArgument("route-gapg.eval_cap: unknown cap '" + cap + "'");
  }
  const bool ranked = cap == "ranked";
  const auto weights = policy.shared_weights();
  // The online threshold needs every training prompt's probability; the ranked cap does not.
  double threshold = 0.0;
  if (!ranked) {
    std::vector<double> scores;
    for (const auto& e : prompts.train) {
      scores.push_back(HandOffProbability(weights, e.prompt, task.temperature));
    }
    threshold = TopFractionThreshold(scores, budget);
  }
  std::vector<ArithmeticExample> test = prompts.test;
  Rng rng = ShuffleIntoEvalOrder(&test, task.seed);
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  // Online, a query asks when its marker probability is among the budget's share of the highest
  // on the training prompts and HandOffCap grants in order; ranked, every query asks and the
  // budget's share of the held-out prompts with the highest probabilities is granted.
  std::vector<double> test_scores;
  for (const auto& e : test) {
    test_scores.push_back(HandOffProbability(weights, e.prompt, task.temperature));
  }
  std::vector<bool> granted(test.size(), false);
  if (ranked) {
    TANDEM_ASSIGN_OR_RETURN(granted, RankedHandOffGrants(test_scores,
                                                         std::vector<bool>(test.size(), true),
                                                         budget));
  } else {
    HandOffCap online({budget, -1});
    for (size_t i = 0; i < test.size(); ++i) {
      const bool asked = test_scores[i] >= threshold;
      granted[i] = online.Decide(ParsedCompletion{
                       asked ? CompletionKind::kHandOff : CompletionKind::kAnswer, ""}) ==
                   RouteDecision::kHandOff;
    }
  }
  RouteShareScore out;
  for (size_t i = 0; i < test.size(); ++i) {
    const ArithmeticExample& e = test[i];
    Rng cloud_rng(0);  // greedy: never drawn from
    const std::string cloud_answer =
        ParseCompletion(ByteTokenizer::Decode(DecodeLine(cloud.shared_weights(),
                                                         PromptTokens(e.prompt), task.max_tokens,
                                                         greedy, cloud_rng)))
            .answer;
    const std::string device_answer =
        FallbackAnswer(weights, e.prompt, task.max_tokens, greedy, rng);
    const bool cloud_right = ExactMatch(cloud_answer, e.answer);
    const bool device_right = ExactMatch(device_answer, e.answer);
    ++out.queries;
    out.cloud_correct += cloud_right;
    out.device_correct += device_right;
    if (granted[i]) {
      ++out.handoffs;
      out.correct += cloud_right;
    } else {
      ++out.local_answered;
      out.local_correct += device_right;
      out.correct += device_right;
    }
  }
  return out;
}

}  // namespace tandem

// A part's score; see algorithms/route_gapg/score.h.
#include "algorithms/route_gapg/score.h"

#include "models/tokenizer.h"
#include "route/handoff.h"
#include "route/route_run.h"
#include "route/router.h"

namespace tandem {
StatusOr<RouteShareScore> ScoreRouteShare(const Gpt& policy, const Gpt& cloud,
                                          const RoutePrompts& prompts, double budget,
                                          const RouteGapgTrainTask& task) {
  if (prompts.train.empty() || prompts.test.empty()) {
    return Status::InvalidArgument("route-gapg scoring needs training and held-out prompts");
  }
  const auto weights = policy.shared_weights();
  std::vector<double> scores;
  for (const auto& e : prompts.train) {
    scores.push_back(HandOffProbability(weights, e.prompt, task.temperature));
  }
  const double threshold = TopFractionThreshold(scores, budget);
  std::vector<ArithmeticExample> test = prompts.test;
  Rng rng = ShuffleIntoEvalOrder(&test, task.seed);
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  HandOffCap cap({budget, -1});
  RouteShareScore out;
  for (const auto& e : test) {
    const bool asked = HandOffProbability(weights, e.prompt, task.temperature) >= threshold;
    const RouteDecision decision = cap.Decide(
        ParsedCompletion{asked ? CompletionKind::kHandOff : CompletionKind::kAnswer, ""});
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
    if (decision == RouteDecision::kHandOff) {
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

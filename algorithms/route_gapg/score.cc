// A part's score; see algorithms/route_gapg/score.h.
#include "algorithms/route_gapg/score.h"

#include <algorithm>
#include <cmath>

#include "models/gpt_workspace.h"
#include "models/tokenizer.h"
#include "route/handoff.h"
#include "route/router.h"

namespace tandem {
namespace {

// SplitMix64's finaliser, as route_run.cc's, so the query order is `tandem route eval`'s.
uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<int32_t> PromptTokens(std::string_view prompt) {
  std::vector<int32_t> tokens = {ByteTokenizer::kEndOfText};
  ByteTokenizer::EncodeAppend(prompt, &tokens);
  return tokens;
}

// The probability that `weights` starts its completion with the marker, at `temperature`.
double HandOffProbability(std::shared_ptr<const GptWeights> weights, std::string_view prompt,
                          double temperature) {
  const std::vector<int32_t> tokens = PromptTokens(prompt);
  const int V = weights->config().vocab;
  GptWorkspace ws(std::move(weights));
  const float* logits = ws.Decode(tokens.data(), static_cast<int>(tokens.size()));
  logits += (tokens.size() - 1) * static_cast<size_t>(V);
  const double mx = *std::max_element(logits, logits + V);
  double z = 0.0;
  for (int v = 0; v < V; ++v) z += std::exp((static_cast<double>(logits[v]) - mx) / temperature);
  return std::exp((static_cast<double>(logits[kHandOffToken]) - mx) / temperature) / z;
}

}  // namespace

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
  Rng rng(Mix(task.seed ^ 0x4556414Cull));
  for (size_t i = test.size(); i > 1; --i) std::swap(test[i - 1], test[rng.Below(i)]);
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

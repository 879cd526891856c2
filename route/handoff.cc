#include "route/handoff.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "models/generate.h"
#include "models/gpt_workspace.h"
#include "models/tokenizer.h"

namespace tandem {

ParsedCompletion ParseCompletion(std::string_view completion) {
  const size_t end = completion.find_first_of(std::string_view("\n\0", 2));
  const std::string_view line = completion.substr(0, end);
  if (line.find(kHandOffMarker) != std::string_view::npos) {
    return ParsedCompletion{CompletionKind::kHandOff, ""};
  }
  return ParsedCompletion{CompletionKind::kAnswer, std::string(line)};
}

const char* RouteDecisionName(RouteDecision decision) {
  switch (decision) {
    case RouteDecision::kAnswer: return "answer";
    case RouteDecision::kHandOff: return "hand-off";
    case RouteDecision::kHandOffRefused: return "hand-off-refused";
  }
  return "?";
}

Status HandOffBudget::Validate() const {
  if (!(max_fraction >= 0.0 && max_fraction <= 1.0)) {
    return Status::InvalidArgument("hand-off budget max_fraction must be in [0, 1]");
  }
  return Status::Ok();
}

HandOffCap::HandOffCap(HandOffBudget budget) : budget_(budget) {
  TANDEM_CHECK(budget_.Validate().ok());
}

RouteDecision HandOffCap::Decide(const ParsedCompletion& parsed) {
  ++queries_;
  if (parsed.kind == CompletionKind::kAnswer) return RouteDecision::kAnswer;
  const bool under_count = budget_.max_handoffs < 0 || handoffs_ < budget_.max_handoffs;
  // handoffs_ + 1 <= f·queries_, with a hair of slack so f·n that is an integer in exact
  // arithmetic is not lost to rounding.
  const bool under_fraction =
      static_cast<double>(handoffs_ + 1) <= budget_.max_fraction * queries_ + 1e-9;
  if (under_count && under_fraction) {
    ++handoffs_;
    return RouteDecision::kHandOff;
  }
  ++refused_;
  return RouteDecision::kHandOffRefused;
}

StatusOr<std::vector<bool>> RankedHandOffGrants(std::span<const double> scores,
                                                const std::vector<bool>& asks, double max_fraction) {
  if (scores.size() != asks.size()) {
    return Status::InvalidArgument("ranked hand-off cap: " + std::to_string(scores.size()) +
                                   " scores but " + std::to_string(asks.size()) + " asks");
  }
  const HandOffBudget budget{max_fraction, -1};
  TANDEM_RETURN_IF_ERROR(budget.Validate());
  for (double s : scores) {
    if (!std::isfinite(s)) {
      return Status::InvalidArgument("ranked hand-off cap: a score is not finite");
    }
  }
  const size_t n = scores.size();
  // ⌊f·n⌋, with the same hair of slack as HandOffCap for f·n that is an integer.
  const size_t quota = static_cast<size_t>(std::floor(max_fraction * static_cast<double>(n) + 1e-9));
  std::vector<size_t> order;
  for (size_t i = 0; i < n; ++i) {
    if (asks[i]) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  std::vector<bool> granted(n, false);
  for (size_t k = 0; k < std::min(quota, order.size()); ++k) granted[order[k]] = true;
  return granted;
}

std::vector<int32_t> DecodeLine(std::shared_ptr<const GptWeights> weights,
                                std::span<const int32_t> prompt, int max_tokens,
                                const SamplingOptions& sampling, Rng& rng,
                                std::span<const int32_t> banned) {
  TANDEM_CHECK(!prompt.empty());
  const int V = weights->config().vocab;
  TANDEM_CHECK(static_cast<int>(prompt.size()) + max_tokens <= weights->config().context);
  GptWorkspace ws(std::move(weights));
  const float* logits = ws.Decode(prompt.data(), static_cast<int>(prompt.size()));
  logits += (prompt.size() - 1) * static_cast<size_t>(V);
  std::vector<float> row(V), probs(V);
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens; ++i) {
    std::copy(logits, logits + V, row.begin());
    for (int32_t b : banned) row[b] = -std::numeric_limits<float>::infinity();
    SamplingProbs(row.data(), V, sampling, probs.data());
    const int32_t t = SampleFromProbs(probs, rng);
    out.push_back(t);
    if (t == '\n' || t == ByteTokenizer::kEndOfText || i + 1 == max_tokens) break;
    logits = ws.Decode(&t, 1);
  }
  return out;
}

std::vector<int32_t> PromptTokens(std::string_view prompt) {
  std::vector<int32_t> tokens = {ByteTokenizer::kEndOfText};
  ByteTokenizer::EncodeAppend(prompt, &tokens);
  return tokens;
}

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

std::string FallbackAnswer(std::shared_ptr<const GptWeights> weights, std::string_view prompt,
                           int max_tokens, const SamplingOptions& sampling, Rng& rng) {
  const std::vector<int32_t> tokens = PromptTokens(prompt);
  const int32_t banned[] = {kHandOffToken};
  const std::vector<int32_t> line =
      DecodeLine(std::move(weights), tokens, max_tokens, sampling, rng, banned);
  return ParseCompletion(ByteTokenizer::Decode(line)).answer;
}

StatusOr<RoutedAnswer> AnswerQuery(std::shared_ptr<const GptWeights> device,
                                   std::string_view prompt, int max_tokens,
                                   const SamplingOptions& sampling, Rng& rng, HandOffCap& cap,
                                   const CloudAnswer& cloud) {
  TANDEM_RETURN_IF_ERROR(sampling.Validate());
  const std::vector<int32_t> tokens = PromptTokens(prompt);
  if (max_tokens < 1 ||
      static_cast<int>(tokens.size()) + max_tokens > device->config().context) {
    return Status::InvalidArgument("answer: a prompt of " + std::to_string(tokens.size()) +
                                   " tokens and up to " + std::to_string(max_tokens) +
                                   " new ones do not fit the device's context of " +
                                   std::to_string(device->config().context));
  }
  RoutedAnswer out;
  out.completion = ByteTokenizer::Decode(DecodeLine(device, tokens, max_tokens, sampling, rng));
  const ParsedCompletion parsed = ParseCompletion(out.completion);
  out.decision = cap.Decide(parsed);
  switch (out.decision) {
    case RouteDecision::kAnswer:
      out.answer = parsed.answer;
      break;
    case RouteDecision::kHandOff: {
      TANDEM_ASSIGN_OR_RETURN(out.answer, cloud(prompt));
      break;
    }
    case RouteDecision::kHandOffRefused:
      out.answer = FallbackAnswer(device, prompt, max_tokens, sampling, rng);
      break;
  }
  return out;
}

}  // namespace tandem

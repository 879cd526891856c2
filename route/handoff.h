// The device model's answer-or-hand-off format and the test-time policy on top of it (DESIGN.md
// "Routing and collaborative inference"; Fang, Han, Yuan, Brinton, arXiv 2509.24050).
//
// Format, in the byte-level tokenizer (models/tokenizer.h): a completion of a prompt is read up
// to its first '\n' or end-of-text (NUL), the line. A line that contains the hand-off marker —
// the control byte ENQ (0x05, "enquiry"), which never occurs in tandem's text — hands the prompt
// to the cloud; the text before the marker is ignored. Any other line is the device's answer.
// The canonical hand-off a model learns is the marker alone followed by '\n': "\x05\n".
//
// A test-time cap keeps hand-offs within a budget. A hand-off over the budget goes back to the
// device, whose answer is then its most likely completion that does not hand off: decoding again
// with the marker's logit at −∞ (FallbackAnswer), so the device answers as if it had no marker.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "models/gpt_weights.h"
#include "route/sampling.h"

namespace tandem {

inline constexpr int32_t kHandOffToken = 0x05;
inline constexpr std::string_view kHandOffMarker = "\x05";
// What a model is taught to emit to hand off.
inline constexpr std::string_view kHandOffCompletion = "\x05\n";

enum class CompletionKind { kAnswer, kHandOff };

struct ParsedCompletion {
  CompletionKind kind = CompletionKind::kAnswer;
  std::string answer;  // the line (kAnswer); empty for kHandOff
};

// Reads a completion as described above.
ParsedCompletion ParseCompletion(std::string_view completion);

// What happened to one query under the cap.
enum class RouteDecision {
  kAnswer,           // the device answered
  kHandOff,          // handed to the cloud, within the budget
  kHandOffRefused,   // the device asked for the cloud over the budget and answers itself
};
const char* RouteDecisionName(RouteDecision decision);

// The test-time budget: at most max_fraction of the queries seen so far (this one included),
// and at most max_handoffs in all (< 0: no count limit), go to the cloud.
struct HandOffBudget {
  double max_fraction = 1.0;
  int64_t max_handoffs = -1;
  Status Validate() const;  // max_fraction in [0, 1]
};

// Counts queries and hand-offs against a budget. One thread at a time.
class HandOffCap {
 public:
  explicit HandOffCap(HandOffBudget budget);  // budget must be valid
  // Records one query whose completion is `parsed` and says where it goes.
  RouteDecision Decide(const ParsedCompletion& parsed);
  int64_t queries() const { return queries_; }
  int64_t handoffs() const { return handoffs_; }
  int64_t refused() const { return refused_; }

 private:
  HandOffBudget budget_;
  int64_t queries_ = 0, handoffs_ = 0, refused_ = 0;
};

// The score-ranked cap, for a batch of queries known in advance (an evaluation set): of the
// queries that ask for the cloud (asks[i]), the ⌊max_fraction·n⌋ with the highest scores are
// granted (n = scores.size(), asking or not), ties going to the earlier index. So the granted
// count never exceeds the budget, and it reaches it whenever enough queries ask. Unlike
// HandOffCap, where grants follow arrival order, every method run through it spends its budget
// on the queries it ranks highest. Returns granted[i]. Errors: sizes that differ, max_fraction
// outside [0, 1], a score that is not finite.
StatusOr<std::vector<bool>> RankedHandOffGrants(std::span<const double> scores,
                                                const std::vector<bool>& asks, double max_fraction);

// Decodes a completion of `prompt` (non-empty tokens) from `weights` until '\n', end-of-text or
// max_tokens, with the tokens in `banned` never drawn (their logits at −∞ before sampling).
// Requires prompt.size() + max_tokens <= the model's context.
std::vector<int32_t> DecodeLine(std::shared_ptr<const GptWeights> weights,
                                std::span<const int32_t> prompt, int max_tokens,
                                const SamplingOptions& sampling, Rng& rng,
                                std::span<const int32_t> banned = {});

// A prompt's tokens as tandem's records lay them out: end-of-text, then the prompt's bytes.
std::vector<int32_t> PromptTokens(std::string_view prompt);

// The probability that `weights` starts its completion of `prompt` with the hand-off marker, at
// `temperature` (> 0): the policy's score for a query.
double HandOffProbability(std::shared_ptr<const GptWeights> weights, std::string_view prompt,
                          double temperature);

// The device's answer when its hand-off is refused: DecodeLine with the marker banned.
std::string FallbackAnswer(std::shared_ptr<const GptWeights> weights, std::string_view prompt,
                           int max_tokens, const SamplingOptions& sampling, Rng& rng);

// The cloud's answer to a prompt: a model in this process, or the inference service
// (serve/ask.h).
using CloudAnswer = std::function<StatusOr<std::string>(std::string_view prompt)>;

struct RoutedAnswer {
  RouteDecision decision = RouteDecision::kAnswer;
  std::string answer;
  std::string completion;  // what the device generated first
};

// One query end to end: the device completes `prompt` (text, after an end-of-text token, as
// tandem's records are laid out), the cap decides, and the cloud or the device answers.
StatusOr<RoutedAnswer> AnswerQuery(std::shared_ptr<const GptWeights> device,
                                   std::string_view prompt, int max_tokens,
                                   const SamplingOptions& sampling, Rng& rng, HandOffCap& cap,
                                   const CloudAnswer& cloud);

}  // namespace tandem

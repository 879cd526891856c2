// Held-out evaluation of a language model: mean loss and perplexity over a token stream, and
// exact-match accuracy on prompt/answer tasks (the arithmetic task) by greedy generation.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"
#include "models/gpt.h"

namespace tandem {

struct LossResult {
  double loss = 0.0;        // mean cross-entropy per predicted token, in nats
  double perplexity = 0.0;  // exp(loss)
  int64_t tokens = 0;       // predicted tokens counted
};

// Loss over `records` (concatenated with end-of-text, walked in non-overlapping windows of the
// model's context). max_tokens > 0 stops after about that many targets (a fixed prefix, so the
// figure is comparable across calls). Error if the records hold fewer than 2 tokens.
StatusOr<LossResult> EvaluateLoss(Gpt& model, const std::vector<Record>& records, int batch,
                                  int64_t max_tokens = 0);
// EvaluateLoss's loss, or NaN when there are no records: a run without a held-out split reports
// no held-out loss rather than failing.
StatusOr<double> HeldOutLoss(Gpt& model, const std::vector<Record>& records, int batch,
                             int64_t max_tokens);

struct ExactMatchResult {
  int64_t correct = 0;
  int64_t total = 0;
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / total : 0.0; }
};

// Exact-match accuracy on records whose text is "prompt=answer\n" (the arithmetic task), per
// category, by greedy generation of up to max_new_tokens. At most max_per_category records each.
std::map<std::string, ExactMatchResult> EvaluateExactMatch(const Gpt& model,
                                                           const std::vector<Record>& records,
                                                           int max_per_category,
                                                           int max_new_tokens = 12);

}  // namespace tandem

#include "train/evaluate.h"

#include <cmath>

#include "core/rng.h"
#include "data/arithmetic.h"
#include "data/batcher.h"
#include "models/generate.h"
#include "models/tokenizer.h"

namespace tandem {

StatusOr<double> HeldOutLoss(Gpt& model, const std::vector<Record>& records, int batch,
                             int64_t max_tokens) {
  if (records.empty()) return std::nan("");
  TANDEM_ASSIGN_OR_RETURN(LossResult r, EvaluateLoss(model, records, batch, max_tokens));
  return r.loss;
}

StatusOr<LossResult> EvaluateLoss(Gpt& model, const std::vector<Record>& records, int batch,
                                  int64_t max_tokens) {
  const int T = model.config().context;
  TANDEM_ASSIGN_OR_RETURN(EvalWindows windows,
                          EvalWindows::Create(TokenDataset::FromRecords(records), batch, T));
  std::vector<int32_t> tokens(static_cast<size_t>(batch) * T), targets(tokens.size());
  double total = 0.0;
  int64_t count = 0;
  while (windows.Next(tokens.data(), targets.data()) > 0) {
    const float mean = model.Forward(tokens.data(), targets.data(), batch, T);
    total += static_cast<double>(mean) * model.loss_count();
    count += model.loss_count();
    if (max_tokens > 0 && count >= max_tokens) break;
  }
  if (count == 0) return Status::InvalidArgument("no tokens to evaluate");
  LossResult r;
  r.loss = total / count;
  r.perplexity = std::exp(r.loss);
  r.tokens = count;
  return r;
}

std::map<std::string, ExactMatchResult> EvaluateExactMatch(const Gpt& model,
                                                           const std::vector<Record>& records,
                                                           int max_per_category,
                                                           int max_new_tokens) {
  std::map<std::string, ExactMatchResult> results;
  Generator gen(model);
  Rng rng(0);  // greedy decoding draws nothing
  SamplingConfig greedy;
  greedy.temperature = 0.0f;
  for (const auto& r : records) {
    const size_t eq = r.text.find('=');
    if (eq == std::string::npos) continue;
    ExactMatchResult& res = results[r.category];
    if (res.total >= max_per_category) continue;
    const std::string prompt = r.text.substr(0, eq + 1);
    std::string answer = r.text.substr(eq + 1);
    while (!answer.empty() && (answer.back() == '\n' || answer.back() == ' ')) answer.pop_back();
    // Each example starts after an end-of-text, as records do in training streams.
    std::vector<int32_t> ids = {ByteTokenizer::kEndOfText};
    ByteTokenizer::EncodeAppend(prompt, &ids);
    const std::vector<int32_t> out = gen.Generate(ids, max_new_tokens, greedy, rng, '\n');
    res.correct += ExactMatch(ByteTokenizer::Decode(out), answer) ? 1 : 0;
    ++res.total;
  }
  return results;
}

}  // namespace tandem

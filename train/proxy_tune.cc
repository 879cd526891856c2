#include "train/proxy_tune.h"

#include <algorithm>
#include <cmath>

#include "data/batcher.h"
#include "models/cross_entropy.h"

namespace tandem {

StatusOr<LossResult> EvaluateProxyTuned(Gpt& large, Gpt& tuned, Gpt& base,
                                        const std::vector<Record>& records,
                                        const ProxyTuneOptions& options) {
  const int V = large.config().vocab;
  if (tuned.config().vocab != V || base.config().vocab != V) {
    return Status::InvalidArgument("proxy-tuning needs one vocabulary: the large model has " +
                                   std::to_string(V) + " tokens, the small ones " +
                                   std::to_string(tuned.config().vocab) + " and " +
                                   std::to_string(base.config().vocab));
  }
  if (!std::isfinite(options.alpha)) return Status::InvalidArgument("alpha is not finite");
  if (options.batch < 1) return Status::InvalidArgument("batch must be >= 1");
  const int T = std::min({large.config().context, tuned.config().context, base.config().context});
  const int B = options.batch;
  TANDEM_ASSIGN_OR_RETURN(EvalWindows windows,
                          EvalWindows::Create(TokenDataset::FromRecords(records), B, T));
  const size_t n = static_cast<size_t>(B) * T;
  std::vector<int32_t> tokens(n), targets(n);
  std::vector<float> combined(n * V), probs(n * V), losses(n);
  const auto alpha = static_cast<float>(options.alpha);
  double total = 0.0;
  int64_t count = 0;
  while (windows.Next(tokens.data(), targets.data()) > 0) {
    large.Forward(tokens.data(), nullptr, B, T);
    std::copy(large.logits(), large.logits() + n * V, combined.begin());
    if (alpha != 0.0f) {
      tuned.Forward(tokens.data(), nullptr, B, T);
      const float* s = tuned.logits();
      for (size_t i = 0; i < n * V; ++i) combined[i] += alpha * s[i];
      base.Forward(tokens.data(), nullptr, B, T);
      const float* b = base.logits();
      for (size_t i = 0; i < n * V; ++i) combined[i] -= alpha * b[i];
    }
    int rows = 0;
    const float mean = CrossEntropyForward(probs.data(), losses.data(), combined.data(),
                                           targets.data(), static_cast<int>(n), V, &rows);
    total += static_cast<double>(mean) * rows;
    count += rows;
    if (options.max_tokens > 0 && count >= options.max_tokens) break;
  }
  if (count == 0) return Status::InvalidArgument("no tokens to evaluate");
  LossResult r;
  r.loss = total / count;
  r.perplexity = std::exp(r.loss);
  r.tokens = count;
  return r;
}

}  // namespace tandem

// Proxy-tuning (Liu et al. 2024, "Tuning Language Models by Proxy") as an evaluation: the large
// model is steered, without training it, by the difference a small model's tuning made. At every
// position the next-token distribution is
//
//   softmax( logits_large + α · (logits_small_tuned − logits_small_base) )
//
// The shared byte vocabulary makes the three models' logits line up token for token. This is the
// `proxy-tune` evaluation of DESIGN.md: after federated rounds have tuned the edge SLMs, it asks
// how much of their private-domain knowledge reaches the cloud LLM for free.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"
#include "models/gpt.h"
#include "train/evaluate.h"

namespace tandem {

struct ProxyTuneOptions {
  double alpha = 1.0;      // strength of the steering; 0 gives the large model alone
  int batch = 8;
  int64_t max_tokens = 0;  // > 0: stop after about that many targets, as EvaluateLoss does
};

// Mean cross-entropy of the proxy-tuned distribution over `records`, walked as EvaluateLoss
// walks them, in windows of the smallest of the three contexts. InvalidArgument when the models'
// vocabularies differ, alpha is not finite, or the records hold fewer than 2 tokens.
StatusOr<LossResult> EvaluateProxyTuned(Gpt& large, Gpt& tuned, Gpt& base,
                                        const std::vector<Record>& records,
                                        const ProxyTuneOptions& options = {});

}  // namespace tandem

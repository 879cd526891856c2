// The single-model commands behind `tandem eval` and `tandem generate`; apps/ only parses flags.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace tandem {

class Config;

// Proxy-tuning the evaluated model (train/proxy_tune.h): a tuned small model and its base, both
// safetensors checkpoints; empty = off.
struct ProxyEval {
  std::string tuned, base;
  double alpha = 1.0;
};

// Loss and perplexity on the config's validation and test splits, and exact-match accuracy per
// category for prompt/answer tasks. With `proxy`, also the loss of the model steered by the small
// models' difference. Prints a table and, with json_out, writes it as JSON.
Status RunEval(const Config& config, const std::string& checkpoint, const std::string& lora,
               int64_t max_tokens, int exact_match_per_category, const std::string& json_out,
               const ProxyEval& proxy = {});

struct GenerateOptions {
  std::string checkpoint;
  std::string lora;
  std::string prompt;
  int max_tokens = 200;
  float temperature = 0.8f;
  int top_k = 40;
  uint64_t seed = 1;
};
Status RunGenerate(const GenerateOptions& options);

}  // namespace tandem

// The single-model commands behind `tandem eval` and `tandem generate`; apps/ only parses flags.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace tandem {

class Config;

// Loss and perplexity on the config's validation and test splits, and exact-match accuracy per
// category for prompt/answer tasks. Prints a table and, with json_out, writes it as JSON.
Status RunEval(const Config& config, const std::string& checkpoint, const std::string& lora,
               int64_t max_tokens, int exact_match_per_category, const std::string& json_out);

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

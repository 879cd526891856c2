// The `[data]` section of a config: which corpus or task, and how it is split. Shared by
// `tandem train` and `tandem eval` so both see exactly the same held-out records for a seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"
#include "data/split.h"

namespace tandem {

class Config;

struct DataConfig {
  // "fortunes" (English: Debian's fortunes and fortunes-min packages, exactly their files),
  // "fortunes-XX" (Debian's package of that name), a fortunes-format directory, a .jsonl or text
  // file, or "arithmetic".
  std::string source = "fortunes";
  std::vector<int> arithmetic_levels = {1, 2, 3};
  int64_t arithmetic_examples_per_level = 20000;
  SplitSpec split;
  uint64_t seed = 1;
};

// Reads `data.source`, `data.validation_fraction`, `data.test_fraction`, `data.public_fraction`,
// `data.public_categories`, `data.arithmetic.levels`, `data.arithmetic.examples_per_level`, and
// `data.seed` (how records are shuffled into splits and partitions), which defaults to the
// config's top-level `seed`.
StatusOr<DataConfig> DataConfigFromConfig(const Config& config);

// With `fingerprint`, also records what the data was read from (data/corpus.h); for the generated
// arithmetic task, a hash over its records.
StatusOr<DatasetSplits> LoadSplits(const DataConfig& data,
                                   CorpusFingerprint* fingerprint = nullptr);

}  // namespace tandem

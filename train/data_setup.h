// The `[data]` section of a config: which corpus or task, and how it is split. Shared by
// `tandem train` and `tandem eval` so both see exactly the same held-out records for a seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/split.h"

namespace tandem {

class Config;

struct DataConfig {
  // "fortunes", a fortunes-format directory, a .jsonl or text file, or "arithmetic".
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

StatusOr<DatasetSplits> LoadSplits(const DataConfig& data);

}  // namespace tandem

// The `[data]` section of a config: which corpus or task, and how it is split. Shared by
// `tandem train` and `tandem eval` so both see exactly the same held-out records for a seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"
#include "data/split.h"
#include "data/xling.h"

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
  // The cross-lingual setup (data/xling.h) when xling.languages is not empty: `source` is then
  // the public corpus, `split` cuts its held-out sets, and the languages give the clients'
  // private data (train), the transfer pool (public_) and per-language held-out sets.
  XlingSpec xling;
  bool cross_lingual() const { return !xling.languages.empty(); }
};

// Reads `data.source`, `data.validation_fraction`, `data.test_fraction`, `data.public_fraction`,
// `data.public_categories`, `data.arithmetic.levels`, `data.arithmetic.examples_per_level`, and
// `data.seed` (how records are shuffled into splits and partitions), which defaults to the
// config's top-level `seed`; and the cross-lingual setup's `data.languages`,
// `data.clients_per_language` and `data.transfer_categories`.
StatusOr<DataConfig> DataConfigFromConfig(const Config& config);

// With `fingerprint`, also records what the data was read from (data/corpus.h); for the generated
// arithmetic task, a hash over its records. In the cross-lingual setup: train = every client's
// private records, public_ = the transfer pool, validation and test = the held-out records of
// every language and of the public corpus (categories "<language>/<file>", data/xling.h).
StatusOr<DatasetSplits> LoadSplits(const DataConfig& data,
                                   CorpusFingerprint* fingerprint = nullptr);

// The cross-lingual setup's clients: federation.clients must be
// languages x clients_per_language (the error says how many). Returns each client's indices into
// LoadSplits's train split (data/xling.h PartitionXling).
StatusOr<std::vector<std::vector<size_t>>> PartitionCrossLingual(const DataConfig& data,
                                                                 const std::vector<Record>& train,
                                                                 const PartitionSpec& partition,
                                                                 int64_t clients);

// Checks federation.clients against the cross-lingual setup without loading data.
Status CheckCrossLingualClients(const DataConfig& data, int64_t clients);

}  // namespace tandem

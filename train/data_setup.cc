#include "train/data_setup.h"

#include "core/config.h"
#include "data/arithmetic.h"
#include "data/corpus.h"

namespace tandem {

StatusOr<DataConfig> DataConfigFromConfig(const Config& config) {
  DataConfig d;
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, config.GetInt("seed", 1, 0));
  // Its own key so that runs on several seeds can share one held-out set.
  TANDEM_ASSIGN_OR_RETURN(int64_t data_seed, config.GetInt("data.seed", seed, 0));
  d.seed = static_cast<uint64_t>(data_seed);
  TANDEM_ASSIGN_OR_RETURN(d.source, config.GetString("data.source", d.source));
  TANDEM_ASSIGN_OR_RETURN(d.split.validation_fraction,
                          config.GetDouble("data.validation_fraction", 0.05, 0.0, 0.9));
  TANDEM_ASSIGN_OR_RETURN(d.split.test_fraction,
                          config.GetDouble("data.test_fraction", 0.05, 0.0, 0.9));
  TANDEM_ASSIGN_OR_RETURN(d.split.public_fraction,
                          config.GetDouble("data.public_fraction", 0.0, 0.0, 0.9));
  TANDEM_ASSIGN_OR_RETURN(d.split.public_categories,
                          config.GetStringList("data.public_categories", {}));
  TANDEM_ASSIGN_OR_RETURN(d.arithmetic_examples_per_level,
                          config.GetInt("data.arithmetic.examples_per_level",
                                        d.arithmetic_examples_per_level, 10, 10'000'000));
  TANDEM_ASSIGN_OR_RETURN(std::vector<int64_t> levels,
                          config.GetIntList("data.arithmetic.levels", {1, 2, 3}, 1,
                                            kArithmeticMaxLevel));
  d.arithmetic_levels.assign(levels.begin(), levels.end());
  Status valid = ValidateSplitSpec(d.split);
  if (!valid.ok()) return valid.WithContext(config.source() + ": data");
  return d;
}

StatusOr<DatasetSplits> LoadSplits(const DataConfig& data, CorpusFingerprint* fingerprint) {
  std::vector<Record> records;
  if (data.source == "arithmetic") {
    for (int level : data.arithmetic_levels) {
      TANDEM_ASSIGN_OR_RETURN(
          std::vector<Record> part,
          MakeArithmeticRecords(level, static_cast<size_t>(data.arithmetic_examples_per_level),
                                data.seed * 1000 + static_cast<uint64_t>(level)));
      records.insert(records.end(), part.begin(), part.end());
    }
    if (fingerprint != nullptr) {
      std::string all;
      for (const Record& r : records) all += std::to_string(r.text.size()) + ":" + r.text + r.category + "\n";
      *fingerprint = {data.source, {}, Sha256Hex(all)};
    }
  } else {
    TANDEM_ASSIGN_OR_RETURN(records, LoadCorpus(data.source, fingerprint));
  }
  return SplitRecords(records, data.split, data.seed);
}

}  // namespace tandem

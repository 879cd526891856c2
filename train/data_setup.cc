#include "train/data_setup.h"

#include "core/config.h"
#include "core/logging.h"
#include "core/rng.h"
#include "data/arithmetic.h"
#include "data/corpus.h"
#include "data/shuffle.h"

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
  TANDEM_ASSIGN_OR_RETURN(d.xling.languages, config.GetStringList("data.languages", {}));
  TANDEM_ASSIGN_OR_RETURN(int64_t per, config.GetInt("data.clients_per_language", 2, 1, 10'000));
  TANDEM_ASSIGN_OR_RETURN(int64_t transfer,
                          config.GetInt("data.transfer_categories", 1, 1, 10'000));
  d.xling.clients_per_language = static_cast<int>(per);
  d.xling.transfer_categories = static_cast<int>(transfer);
  if (d.cross_lingual()) {
    if (d.source == "arithmetic") {
      return Status::InvalidArgument(config.source() + ": data.languages needs a text corpus as "
                                     "data.source (\"fortunes\"), not \"arithmetic\"");
    }
    valid = ValidateXlingSpec(d.xling, d.source);
    if (!valid.ok()) return valid.WithContext(config.source());
  }
  return d;
}

namespace {

// The cross-lingual setup (data/xling.h): the public corpus, then every language.
StatusOr<DatasetSplits> LoadCrossLingualSplits(const DataConfig& data,
                                               CorpusFingerprint* fingerprint) {
  std::vector<Record> records;
  CorpusFingerprint all;
  std::string hashes;
  auto add = [&](const CorpusFingerprint& f) {
    all.source += (all.source.empty() ? "" : " + ") + f.source;
    all.files.insert(all.files.end(), f.files.begin(), f.files.end());
    hashes += f.source + ":" + f.sha256 + "\n";
  };
  const std::string public_tag = LanguageTag(data.source);
  CorpusFingerprint f;
  if (IsNamedFortunesSource(data.source)) {
    TANDEM_ASSIGN_OR_RETURN(records, LoadLanguageRecords(data.source, &f));
  } else {
    TANDEM_ASSIGN_OR_RETURN(records, LoadCorpus(data.source, &f));
    for (Record& r : records) r.category = public_tag + "/" + r.category;
  }
  add(f);
  for (const std::string& language : data.xling.languages) {
    StatusOr<std::vector<Record>> part = LoadLanguageRecords(language, &f);
    if (!part.ok()) return part.status().WithContext("data.languages");
    records.insert(records.end(), part->begin(), part->end());
    add(f);
  }
  TANDEM_ASSIGN_OR_RETURN(XlingIndices idx, SplitXlingIndices(records, public_tag, data.xling,
                                                              data.split, data.seed));
  if (fingerprint != nullptr) {
    all.sha256 = Sha256Hex(hashes);
    *fingerprint = std::move(all);
  }
  for (const auto& [language, categories] : idx.transfer_categories) {
    std::string list;
    for (const std::string& c : categories) list += (list.empty() ? "" : ", ") + c;
    GetLogger("data")->info("transfer pool of {}: {}", language, list);
  }
  // Held-out records in a seeded order rather than by language, so that a loss over the first N
  // tokens of a held-out set (eval.tokens) covers every language, not the public corpus alone.
  Rng rng(data.seed ^ 0x686f6c646f7574ull);
  detail::Shuffle(&idx.validation, &rng);
  detail::Shuffle(&idx.test, &rng);
  DatasetSplits out;
  out.train = SelectRecords(records, idx.private_);
  out.public_ = SelectRecords(records, idx.transfer);
  out.validation = SelectRecords(records, idx.validation);
  out.test = SelectRecords(records, idx.test);
  out.public_corpus = SelectRecords(records, idx.public_train);
  return out;
}

}  // namespace

StatusOr<DatasetSplits> LoadSplits(const DataConfig& data, CorpusFingerprint* fingerprint) {
  if (data.cross_lingual()) return LoadCrossLingualSplits(data, fingerprint);
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


Status CheckCrossLingualClients(const DataConfig& data, int64_t clients) {
  if (!data.cross_lingual()) return Status::Ok();
  const int64_t want = static_cast<int64_t>(data.xling.languages.size()) *
                       data.xling.clients_per_language;
  if (clients != want) {
    return Status::InvalidArgument(
        "federation.clients = " + std::to_string(clients) + " but data.languages lists " +
        std::to_string(data.xling.languages.size()) + " languages with clients_per_language = " +
        std::to_string(data.xling.clients_per_language) + ": set federation.clients = " +
        std::to_string(want));
  }
  return Status::Ok();
}

StatusOr<std::vector<std::vector<size_t>>> PartitionCrossLingual(const DataConfig& data,
                                                                 const std::vector<Record>& train,
                                                                 const PartitionSpec& partition,
                                                                 int64_t clients) {
  TANDEM_RETURN_IF_ERROR(CheckCrossLingualClients(data, clients));
  return PartitionXling(train, data.xling, partition, data.seed);
}

}  // namespace tandem

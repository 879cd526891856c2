// Train / validation / test splits of a corpus, plus the **public** split that belongs to no
// client: the data on which the coordinator distils (LLM <-> SLM logits) and on which the LLM may
// train. Deterministic from a seed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"

namespace tandem {

struct SplitSpec {
  // Fractions of the records *not* in public_categories. Each in [0, 1], their sum <= 1; train
  // gets the rest. Counts are rounded to the nearest record, in the order public, validation,
  // test.
  double public_fraction = 0.0;
  double validation_fraction = 0.1;
  double test_fraction = 0.1;
  // Categories that go to the public split whole (none of their records reach train, validation
  // or test), so an LLM can train on public categories while clients hold the private ones. Each
  // must occur in the corpus.
  std::vector<std::string> public_categories;
};

// The split of each record, by index into the input. Each index is in exactly one list; every
// list is in ascending order.
struct SplitIndices {
  std::vector<size_t> train, validation, test, public_;
};

struct DatasetSplits {
  std::vector<Record> train, validation, test, public_;
  // The cross-lingual setup (train/data_setup.h): the public corpus's own public records (English:
  // the public categories the cloud LLM trained on), which are not in public_ (the transfer pool).
  // Empty otherwise: public_ is then the public corpus itself. See PublicCorpus.
  std::vector<Record> public_corpus;
};

// The public corpus's records: splits.public_corpus, or splits.public_ when that is empty.
inline const std::vector<Record>& PublicCorpus(const DatasetSplits& splits) {
  return splits.public_corpus.empty() ? splits.public_ : splits.public_corpus;
}

// Checks the fractions (not the categories, which need the corpus).
Status ValidateSplitSpec(const SplitSpec& spec);

// Records of public_categories to public; the others shuffled with `seed` and cut into
// public / validation / test / train by the fractions. Errors: invalid fractions, a public
// category that is not in the corpus (the message lists the corpus's categories).
StatusOr<SplitIndices> SplitRecordIndices(const std::vector<Record>& records,
                                          const SplitSpec& spec, uint64_t seed);

// SplitRecordIndices, with the records copied out in index order.
StatusOr<DatasetSplits> SplitRecords(const std::vector<Record>& records, const SplitSpec& spec,
                                     uint64_t seed);

}  // namespace tandem

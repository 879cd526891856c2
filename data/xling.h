// The cross-lingual setup (DESIGN.md "Experiments: the cross-lingual setup"): the cloud's public
// corpus is English, each client holds fortunes in one other language from Debian's
// fortunes-XX packages, and the coordinator holds a small unlabeled transfer pool in those
// languages that belongs to no client. Records carry their language as the first part of their
// category ("de/witze", "en/art"), so partitions, held-out sets and per-language losses all
// group by it. Deterministic from a seed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"
#include "data/partition.h"
#include "data/split.h"

namespace tandem {

struct XlingSpec {
  // Named fortunes sources of the clients, one language each ("fortunes-de", "fortunes-es", ...),
  // distinct, none of them the public corpus. Clients [k * clients_per_language,
  // (k + 1) * clients_per_language) hold languages[k].
  std::vector<std::string> languages;
  int clients_per_language = 2;
  // Categories of each language held out from every client as the public transfer pool; chosen
  // by a seeded shuffle of the language's categories (data.seed), so the pool is fixed for a seed.
  int transfer_categories = 1;
};

// The language tag of a source: "fortunes" -> "en", "fortunes-de" -> "de"; a path -> "public".
std::string LanguageTag(const std::string& source);

// A record's language: its category up to the first '/' (the whole category when it has none).
std::string LanguageOf(const Record& record);

// Checks the spec on its own (not the corpus): at least one language, each a named fortunes
// source other than "fortunes" and `public_source`, no duplicates, clients_per_language >= 1,
// transfer_categories >= 1.
Status ValidateXlingSpec(const XlingSpec& spec, const std::string& public_source);

// Loads one language's fortunes for the setup: the package's data files (FortunesSourceFiles:
// no .dat indexes, no .u8 links, no offensive off/ section), each required to be valid UTF-8
// (an error names the file: tandem does not guess encodings), categories "<tag>/<file name>".
// Errors: the package is not installed (the message names `apt-get install fortunes-XX`).
StatusOr<std::vector<Record>> LoadLanguageRecords(const std::string& source,
                                                  CorpusFingerprint* fingerprint = nullptr,
                                                  const FortunesLocation& where = {});

// Where each record of the setup goes, by index into the combined record list (public corpus
// first, then each language in spec order).
struct XlingIndices {
  std::vector<size_t> private_;     // clients' records: every language's non-transfer categories
  std::vector<size_t> transfer;     // the public transfer pool (no client's)
  std::vector<size_t> validation;   // held out, every language and the public corpus
  std::vector<size_t> test;         // held out for the final test, likewise
  std::vector<size_t> public_train; // the public corpus's own training records (public split)
  std::map<std::string, std::vector<std::string>> transfer_categories;  // by language tag
};

// Splits `records` (public corpus tagged `public_tag`, then the languages): the public corpus by
// `split` (its validation and test become the held-out sets that watch forgetting; its public
// split is public_train, its train split is left out); each language by first taking its
// transfer categories whole into the pool, then cutting validation_fraction and test_fraction of
// the rest into held-out sets, the remainder private. Exact duplicate texts (after the first,
// in record order) are dropped, so no text is in two sets. Errors: a language with no records or
// with fewer than transfer_categories + clients_per_language categories.
StatusOr<XlingIndices> SplitXlingIndices(const std::vector<Record>& records,
                                         const std::string& public_tag, const XlingSpec& spec,
                                         const SplitSpec& split, uint64_t seed);

// For each of languages.size() * clients_per_language clients, the indices into `private_records`
// it holds: client k gets language k / clients_per_language, whose records are partitioned by
// `partition` among that language's clients (seed + language position). Every index in exactly
// one list, ascending. Errors: those of PartitionRecords, naming the language.
StatusOr<std::vector<std::vector<size_t>>> PartitionXling(
    const std::vector<Record>& private_records, const XlingSpec& spec,
    const PartitionSpec& partition, uint64_t seed);

// Records grouped by LanguageOf, in tag order.
std::map<std::string, std::vector<Record>> RecordsByLanguage(const std::vector<Record>& records);

}  // namespace tandem

// The cross-lingual setup's loading, split and partition (see xling.h).

#include "data/xling.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <unordered_set>

#include "core/logging.h"
#include "core/rng.h"
#include "data/shuffle.h"

namespace tandem {
namespace {

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

size_t RoundedCount(double fraction, size_t n) {
  return static_cast<size_t>(std::llround(fraction * static_cast<double>(n)));
}

}  // namespace

std::string LanguageTag(const std::string& source) {
  if (source == "fortunes") return "en";
  if (IsNamedFortunesSource(source)) return source.substr(std::string("fortunes-").size());
  return "public";
}

std::string LanguageOf(const Record& record) {
  const size_t slash = record.category.find('/');
  return slash == std::string::npos ? record.category : record.category.substr(0, slash);
}

Status ValidateXlingSpec(const XlingSpec& spec, const std::string& public_source) {
  if (spec.languages.empty()) {
    return Status::InvalidArgument("data.languages is empty; list the clients' fortunes "
                                   "packages, e.g. [\"fortunes-de\", \"fortunes-es\"]");
  }
  std::set<std::string> seen;
  for (const std::string& l : spec.languages) {
    if (!IsNamedFortunesSource(l) || l == "fortunes") {
      return Status::InvalidArgument("data.languages: \"" + l +
                                     "\" is not a Debian fortunes-XX package (\"fortunes\" is "
                                     "English, the public corpus)");
    }
    if (l == public_source) {
      return Status::InvalidArgument("data.languages: \"" + l +
                                     "\" is also data.source, the public corpus");
    }
    if (!seen.insert(l).second) {
      return Status::InvalidArgument("data.languages lists \"" + l + "\" twice");
    }
  }
  if (spec.clients_per_language < 1) {
    return Status::InvalidArgument("data.clients_per_language must be at least 1");
  }
  if (spec.transfer_categories < 1) {
    return Status::InvalidArgument("data.transfer_categories must be at least 1: the transfer "
                                   "pool is what the coordinator distils on");
  }
  return Status::Ok();
}

StatusOr<std::vector<Record>> LoadLanguageRecords(const std::string& source,
                                                  CorpusFingerprint* fingerprint,
                                                  const FortunesLocation& where) {
  if (!IsNamedFortunesSource(source)) {
    return Status::InvalidArgument("'" + source + "' is not a Debian fortunes package");
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<Record> records, LoadCorpus(source, fingerprint, where));
  const std::string tag = LanguageTag(source);
  for (Record& r : records) {
    if (!IsValidUtf8(r.text)) {
      // Every fortunes-XX package in Debian 12 is UTF-8; a file that is not would be read as
      // bytes of another encoding and teach the models the wrong text, so it is refused.
      return Status::InvalidArgument("data: " + source + " file '" + r.category +
                                     "' is not valid UTF-8 (convert it with iconv into a "
                                     "directory of its own and name that directory instead)");
    }
    r.category = tag + "/" + r.category;
  }
  return records;
}

StatusOr<XlingIndices> SplitXlingIndices(const std::vector<Record>& records,
                                         const std::string& public_tag, const XlingSpec& spec,
                                         const SplitSpec& split, uint64_t seed) {
  TANDEM_RETURN_IF_ERROR(ValidateSplitSpec(split));
  // Record indices by language, duplicates dropped: a text in two languages' files (or twice in
  // one package, like fortunes-es's varios.fortunes-pre) would otherwise be private and held out.
  std::map<std::string, std::vector<size_t>> by_language;
  std::unordered_set<std::string> texts;
  for (size_t i = 0; i < records.size(); ++i) {
    if (!texts.insert(records[i].text).second) continue;
    by_language[LanguageOf(records[i])].push_back(i);
  }
  XlingIndices out;

  // The public corpus: split as a run without languages would split it.
  if (auto it = by_language.find(public_tag); it != by_language.end()) {
    std::vector<Record> subset;
    for (size_t i : it->second) subset.push_back(records[i]);
    // Its categories, as the split spec names them, without the tag.
    for (Record& r : subset) r.category = r.category.substr(r.category.find('/') + 1);
    TANDEM_ASSIGN_OR_RETURN(SplitIndices s, SplitRecordIndices(subset, split, seed));
    for (size_t j : s.validation) out.validation.push_back(it->second[j]);
    for (size_t j : s.test) out.test.push_back(it->second[j]);
    for (size_t j : s.public_) out.public_train.push_back(it->second[j]);
  }

  for (size_t k = 0; k < spec.languages.size(); ++k) {
    const std::string& source = spec.languages[k];
    const std::string tag = LanguageTag(source);
    auto it = by_language.find(tag);
    if (it == by_language.end()) {
      return Status::InvalidArgument("data.languages: " + source + " has no records");
    }
    std::map<std::string, std::vector<size_t>> by_category;
    for (size_t i : it->second) by_category[records[i].category].push_back(i);
    const size_t needed =
        static_cast<size_t>(spec.transfer_categories) + static_cast<size_t>(spec.clients_per_language);
    if (by_category.size() < needed) {
      return Status::InvalidArgument(
          "data.languages: " + source + " has " + std::to_string(by_category.size()) +
          " categories; the setup needs transfer_categories + clients_per_language = " +
          std::to_string(needed) + " of them");
    }
    std::vector<std::string> categories;
    for (const auto& [c, idx] : by_category) categories.push_back(c);
    Rng rng(seed * 1'000'003 + 7919 * (k + 1));
    detail::Shuffle(&categories, &rng);
    const std::set<std::string> pool(categories.begin(),
                                     categories.begin() + spec.transfer_categories);
    out.transfer_categories[tag].assign(pool.begin(), pool.end());
    std::vector<size_t> rest;
    for (size_t i : it->second) {
      (pool.count(records[i].category) ? out.transfer : rest).push_back(i);
    }
    detail::Shuffle(&rest, &rng);
    const size_t n_val = std::min(rest.size(), RoundedCount(split.validation_fraction, rest.size()));
    const size_t n_test =
        std::min(rest.size() - n_val, RoundedCount(split.test_fraction, rest.size()));
    out.validation.insert(out.validation.end(), rest.begin(), rest.begin() + n_val);
    out.test.insert(out.test.end(), rest.begin() + n_val, rest.begin() + n_val + n_test);
    out.private_.insert(out.private_.end(), rest.begin() + n_val + n_test, rest.end());
  }
  for (auto* v : {&out.private_, &out.transfer, &out.validation, &out.test, &out.public_train}) {
    std::sort(v->begin(), v->end());
  }
  return out;
}

StatusOr<std::vector<std::vector<size_t>>> PartitionXling(
    const std::vector<Record>& private_records, const XlingSpec& spec,
    const PartitionSpec& partition, uint64_t seed) {
  const int per = spec.clients_per_language;
  std::vector<std::vector<size_t>> clients(spec.languages.size() * static_cast<size_t>(per));
  for (size_t k = 0; k < spec.languages.size(); ++k) {
    const std::string tag = LanguageTag(spec.languages[k]);
    std::vector<size_t> mine;
    std::vector<Record> subset;
    for (size_t i = 0; i < private_records.size(); ++i) {
      if (LanguageOf(private_records[i]) != tag) continue;
      mine.push_back(i);
      subset.push_back(private_records[i]);
    }
    StatusOr<std::vector<std::vector<size_t>>> parts =
        PartitionRecords(subset, partition, per, seed + k);
    if (!parts.ok()) {
      return parts.status().WithContext("data.languages: " + spec.languages[k] + "'s " +
                                        std::to_string(per) + " clients");
    }
    for (int c = 0; c < per; ++c) {
      std::vector<size_t>& dst = clients[k * per + c];
      for (size_t j : (*parts)[c]) dst.push_back(mine[j]);
    }
  }
  return clients;
}

std::map<std::string, std::vector<Record>> RecordsByLanguage(const std::vector<Record>& records) {
  std::map<std::string, std::vector<Record>> out;
  for (const Record& r : records) out[LanguageOf(r)].push_back(r);
  return out;
}

}  // namespace tandem

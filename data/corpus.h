// Corpora: the records tandem trains on, and loaders for the formats it reads — the Debian
// `fortunes` package (files of fortunes separated by lines holding only "%", one category per
// file), plain text (one record per blank-line-separated paragraph) and JSONL.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"

namespace tandem {

// One training example. `category` is what partitioners and public splits group by (a fortune
// file's name, a text file's stem, a JSONL "category" field, "arith-L3").
struct Record {
  std::string text;
  std::string category;

  bool operator==(const Record&) const = default;
};

// Where Debian's `fortunes` package installs its files.
inline constexpr const char* kDefaultFortunesDir = "/usr/share/games/fortunes";

// Every fortune in `dir`, files in name order, fortunes in file order. Reads each regular file
// whose name has no extension handled by strfile (".dat" index, ".u8" link); symlinks and
// subdirectories (such as the offensive `off/`) are skipped. A fortune is the text between lines
// holding only "%"; it is trimmed of surrounding whitespace, NUL bytes are dropped (NUL is the
// end-of-text token) and empty fortunes are dropped. Other bytes are kept as they are (no UTF-8
// validation). category = the file name. Errors: the directory is missing or holds no fortunes.
StatusOr<std::vector<Record>> LoadFortunes(const std::string& dir = kDefaultFortunesDir);

// One record per paragraph of a plain text file: paragraphs are separated by one or more blank
// (whitespace-only) lines and trimmed of surrounding whitespace; NUL bytes are dropped.
// category = the file stem ("poems" for "dir/poems.txt"). Errors: unreadable or no paragraphs.
StatusOr<std::vector<Record>> LoadTextFile(const std::string& path);

// One record per non-blank line of a JSONL file: each line a JSON object with a string "text"
// (kept verbatim except that NUL bytes are dropped) and an optional string "category" (default:
// the file stem). Errors name the file and 1-based line: bad JSON, not an object, "text" missing
// or not a string, "category" not a string; and a file with no records.
StatusOr<std::vector<Record>> LoadJsonl(const std::string& path);

// Loads by what `source` names: "fortunes" (kDefaultFortunesDir) or a directory (fortunes
// format), a "*.jsonl" file (JSONL), any other file (plain text paragraphs).
StatusOr<std::vector<Record>> LoadCorpus(const std::string& source);

// Distinct categories in sorted order, and the number of records in each.
std::vector<std::string> Categories(const std::vector<Record>& records);
std::map<std::string, size_t> CategoryCounts(const std::vector<Record>& records);

// records[indices[0]], records[indices[1]], ... (each index must be < records.size()).
std::vector<Record> SelectRecords(const std::vector<Record>& records,
                                  const std::vector<size_t>& indices);

}  // namespace tandem

// Corpora: the records tandem trains on, and loaders for the formats it reads — the Debian
// `fortunes` package (files of fortunes separated by lines holding only "%", one category per
// file), plain text (one record per blank-line-separated paragraph) and JSONL.
#pragma once

#include <cstddef>
#include <map>
#include <string_view>
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

// Where a named fortunes source is looked up. Tests point both at copies.
struct FortunesLocation {
  std::string fortunes_dir = kDefaultFortunesDir;  // stands for /usr/share/games/fortunes
  std::string dpkg_info_dir = "/var/lib/dpkg/info";  // <package>.list: the files it installed
};

// What a corpus was read from, for the run's record: the files in the order read and a SHA-256
// (lower-case hex) over each file's name (relative to the fortunes directory for named sources),
// size and bytes. For generated data (no files) the hash is over the records.
struct CorpusFingerprint {
  std::string source;
  std::vector<std::string> files;
  std::string sha256;
};

// The data files of a named fortunes source, in the order they are read: "fortunes" is English,
// exactly the files of Debian's `fortunes` and `fortunes-min` packages, whatever else is installed
// beside them (a built-in list of their names when dpkg knows neither); "fortunes-XX" is the files
// of package fortunes-XX (fortunes-de, fortunes-es, ...). Data files are the regular files the
// package put under the fortunes directory, without strfile's .dat indexes and .u8 links and
// without an offensive off/ section (which fortune(6) shows only with -o); they
// are returned as paths under `where.fortunes_dir`. Errors: a package that is not installed (the
// message names `apt-get install`), a listed file that is missing.
StatusOr<std::vector<std::string>> FortunesSourceFiles(const std::string& source,
                                                       const FortunesLocation& where = {});

// Whether `source` names a fortunes package ("fortunes", "fortunes-de", ...) rather than a path.
bool IsNamedFortunesSource(const std::string& source);

// Loads by what `source` names: a named fortunes source (above), a directory (fortunes format,
// every file in it), a "*.jsonl" file (JSONL), any other file (plain text paragraphs). With
// `fingerprint`, also records what was read.
StatusOr<std::vector<Record>> LoadCorpus(const std::string& source,
                                         CorpusFingerprint* fingerprint = nullptr,
                                         const FortunesLocation& where = {});

// SHA-256 of `bytes`, lower-case hex.
std::string Sha256Hex(std::string_view bytes);

// Distinct categories in sorted order, and the number of records in each.
std::vector<std::string> Categories(const std::vector<Record>& records);
std::map<std::string, size_t> CategoryCounts(const std::vector<Record>& records);

// records[indices[0]], records[indices[1]], ... (each index must be < records.size()).
std::vector<Record> SelectRecords(const std::vector<Record>& records,
                                  const std::vector<size_t>& indices);

}  // namespace tandem

// Loaders for fortunes, plain-text and JSONL corpora (see corpus.h for the formats).

#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "core/logging.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && IsSpace(s[b])) ++b;
  while (e > b && IsSpace(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}

std::string DropNul(std::string s) {
  s.erase(std::remove(s.begin(), s.end(), '\0'), s.end());
  return s;
}

StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError("cannot open " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Status::IoError("error reading " + path.string());
  return ss.str();
}

// Calls fn(line) for each line of `content` without its '\n' (a trailing '\r' is kept).
template <typename Fn>
void ForEachLine(std::string_view content, Fn fn) {
  size_t pos = 0;
  while (pos < content.size()) {
    size_t nl = content.find('\n', pos);
    if (nl == std::string_view::npos) nl = content.size();
    fn(content.substr(pos, nl - pos));
    pos = nl + 1;
  }
}

// Splits a fortune file's content into records (see LoadFortunes).
void ParseFortunes(std::string_view content, const std::string& category,
                   std::vector<Record>* out) {
  std::string current;
  auto flush = [&] {
    std::string text = Trim(DropNul(std::move(current)));
    if (!text.empty()) out->push_back(Record{std::move(text), category});
    current.clear();
  };
  ForEachLine(content, [&](std::string_view line) {
    if (Trim(line) == "%") {
      flush();
    } else {
      current.append(line);
      current.push_back('\n');
    }
  });
  flush();
}

// An incremental SHA-256 (OpenSSL EVP).
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Add(std::string_view bytes) { EVP_DigestUpdate(ctx_, bytes.data(), bytes.size()); }
  // A length-prefixed field, so that ("ab", "c") and ("a", "bc") hash differently.
  void AddField(std::string_view bytes) {
    Add(std::to_string(bytes.size()));
    Add(":");
    Add(bytes);
  }
  std::string Hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_, digest, &n);
    static const char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < n; ++i) {
      hex.push_back(kHex[digest[i] >> 4]);
      hex.push_back(kHex[digest[i] & 15]);
    }
    return hex;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// The English files of Debian's fortunes and fortunes-min packages (bookworm), for a system
// whose dpkg database does not list them.
constexpr const char* kEnglishFortunes[] = {
    "art", "ascii-art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs",
    "education", "ethnic", "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd", "law",
    "linux", "linuxcookie", "literature", "love", "magic", "medicine", "men-women",
    "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes", "politics",
    "pratchett", "riddles", "science", "songs-poems", "sports", "startrek", "tao", "translate-me",
    "wisdom", "work", "zippy"};

constexpr char kDebianFortunesDir[] = "/usr/share/games/fortunes/";

// The data files (relative to the fortunes directory) that `package` installed, or NotFound when
// dpkg has no list for it.
StatusOr<std::vector<std::string>> PackageFortunes(const std::string& package,
                                                   const FortunesLocation& where) {
  const std::string list = where.dpkg_info_dir + "/" + package + ".list";
  std::ifstream in(list);
  if (!in) return Status::NotFound(list);
  std::vector<std::string> files;
  std::string line;
  const std::string prefix = kDebianFortunesDir;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    const std::string rel = line.substr(prefix.size());
    const std::string ext = fs::path(rel).extension().string();
    if (rel.empty() || ext == ".dat" || ext == ".u8") continue;
    // The offensive section (fortunes-es's es/off/, ...) is what fortune(6) hides without -o.
    if (rel.rfind("off/", 0) == 0 || rel.find("/off/") != std::string::npos) continue;
    const fs::path path = fs::path(where.fortunes_dir) / rel;
    std::error_code ec;
    // Directories (de/, off/) and strfile's links to other files are not data files.
    if (fs::is_symlink(path, ec) || fs::is_directory(path, ec)) continue;
    files.push_back(rel);
  }
  return files;
}

// Reads `files` (paths; `names` is how each enters the fingerprint) as fortune files.
StatusOr<std::vector<Record>> ReadFortuneFiles(const std::vector<fs::path>& files,
                                               const std::vector<std::string>& names,
                                               Sha256* hash) {
  std::vector<Record> records;
  for (size_t i = 0; i < files.size(); ++i) {
    TANDEM_ASSIGN_OR_RETURN(std::string content, ReadFile(files[i]));
    if (hash != nullptr) {
      hash->AddField(names[i]);
      hash->AddField(content);
    }
    ParseFortunes(content, files[i].filename().string(), &records);
  }
  return records;
}

}  // namespace

std::string Sha256Hex(std::string_view bytes) {
  Sha256 h;
  h.Add(bytes);
  return h.Hex();
}

bool IsNamedFortunesSource(const std::string& source) {
  return source == "fortunes" || (source.rfind("fortunes-", 0) == 0 &&
                                  source.find('/') == std::string::npos);
}

StatusOr<std::vector<std::string>> FortunesSourceFiles(const std::string& source,
                                                       const FortunesLocation& where) {
  if (!IsNamedFortunesSource(source)) {
    return Status::InvalidArgument("'" + source + "' is not a named fortunes source");
  }
  std::vector<std::string> rel;
  if (source == "fortunes") {
    bool listed = false;
    for (const char* package : {"fortunes", "fortunes-min"}) {
      auto files = PackageFortunes(package, where);
      if (!files.ok()) continue;
      listed = true;
      rel.insert(rel.end(), files->begin(), files->end());
    }
    if (!listed) {
      GetLogger("data")->warn("dpkg lists neither fortunes nor fortunes-min in {}; reading the "
                              "built-in list of their English files", where.dpkg_info_dir);
      rel.assign(std::begin(kEnglishFortunes), std::end(kEnglishFortunes));
    }
  } else {
    auto files = PackageFortunes(source, where);
    if (!files.ok()) {
      return Status::NotFound("data.source \"" + source + "\": Debian's " + source +
                              " package is not installed (apt-get install " + source + ")");
    }
    rel = *files;
  }
  std::sort(rel.begin(), rel.end());
  rel.erase(std::unique(rel.begin(), rel.end()), rel.end());
  std::vector<std::string> out;
  for (const std::string& r : rel) {
    const fs::path path = fs::path(where.fortunes_dir) / r;
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      return Status::NotFound("data.source \"" + source + "\": " + path.string() +
                              " is missing; reinstall it (apt-get install --reinstall " +
                              (source == "fortunes" ? std::string("fortunes fortunes-min")
                                                    : source) + ")");
    }
    out.push_back(path.string());
  }
  if (out.empty()) {
    return Status::NotFound("data.source \"" + source + "\": its package lists no fortune files");
  }
  return out;
}

StatusOr<std::vector<Record>> LoadFortunes(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return Status::NotFound("fortunes directory " + dir +
                            " does not exist; install Debian's fortunes package "
                            "(apt-get install fortunes) or set the corpus directory");
  }
  std::vector<fs::path> files;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    if (entry.is_symlink(ec) || !entry.is_regular_file(ec)) continue;  // .u8 links, off/, ...
    const std::string ext = entry.path().extension().string();
    if (ext == ".dat" || ext == ".u8") continue;
    files.push_back(entry.path());
  }
  if (ec) return Status::IoError("cannot list fortunes directory " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());

  TANDEM_ASSIGN_OR_RETURN(std::vector<Record> records, ReadFortuneFiles(files, {}, nullptr));
  if (records.empty()) {
    return Status::NotFound("fortunes directory " + dir +
                            " holds no fortune files (plain files of texts separated by '%' "
                            "lines); install Debian's fortunes package");
  }
  GetLogger("data")->debug("loaded {} fortunes from {} files in {}", records.size(),
                           files.size(), dir);
  return records;
}

StatusOr<std::vector<Record>> LoadTextFile(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(std::string content, ReadFile(path));
  const std::string category = fs::path(path).stem().string();
  std::vector<Record> records;
  std::string current;
  auto flush = [&] {
    std::string text = Trim(DropNul(std::move(current)));
    if (!text.empty()) records.push_back(Record{std::move(text), category});
    current.clear();
  };
  ForEachLine(content, [&](std::string_view line) {
    if (Trim(line).empty()) {
      flush();
    } else {
      current.append(line);
      current.push_back('\n');
    }
  });
  flush();
  if (records.empty()) return Status::InvalidArgument("text file " + path + " holds no text");
  return records;
}

StatusOr<std::vector<Record>> LoadJsonl(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(std::string content, ReadFile(path));
  const std::string default_category = fs::path(path).stem().string();
  std::vector<Record> records;
  Status status;
  size_t line_no = 0;
  ForEachLine(content, [&](std::string_view line) {
    ++line_no;
    if (!status.ok() || Trim(line).empty()) return;
    const std::string where = path + ":" + std::to_string(line_no) + ": ";
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      status = Status::Corruption(where + "not valid JSON (each line must be one JSON object)");
      return;
    }
    if (!j.is_object()) {
      status = Status::Corruption(where + "expected a JSON object, got " + j.type_name());
      return;
    }
    auto text = j.find("text");
    if (text == j.end()) {
      status = Status::Corruption(where + "missing the \"text\" field");
      return;
    }
    if (!text->is_string()) {
      status = Status::Corruption(where + "\"text\" must be a string, got " + text->type_name());
      return;
    }
    Record record{DropNul(text->get<std::string>()), default_category};
    if (auto cat = j.find("category"); cat != j.end()) {
      if (!cat->is_string()) {
        status = Status::Corruption(where + "\"category\" must be a string, got " +
                                    cat->type_name());
        return;
      }
      record.category = cat->get<std::string>();
    }
    records.push_back(std::move(record));
  });
  TANDEM_RETURN_IF_ERROR(status);
  if (records.empty()) return Status::InvalidArgument("JSONL file " + path + " holds no records");
  return records;
}

StatusOr<std::vector<Record>> LoadCorpus(const std::string& source,
                                         CorpusFingerprint* fingerprint,
                                         const FortunesLocation& where) {
  std::error_code ec;
  std::vector<fs::path> files;
  std::vector<std::string> names;  // as the fingerprint names them
  bool fortunes_format = true;
  if (IsNamedFortunesSource(source)) {
    TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> paths, FortunesSourceFiles(source, where));
    for (const std::string& p : paths) {
      files.emplace_back(p);
      names.push_back(fs::path(p).lexically_relative(where.fortunes_dir).string());
    }
  } else if (fs::is_directory(source, ec)) {
    // Every fortune file of a directory given by path: what LoadFortunes reads.
    TANDEM_ASSIGN_OR_RETURN(std::vector<Record> records, LoadFortunes(source));
    if (fingerprint == nullptr) return records;
    for (auto it = fs::directory_iterator(source, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      if (it->is_symlink(ec) || !it->is_regular_file(ec)) continue;
      const std::string ext = it->path().extension().string();
      if (ext != ".dat" && ext != ".u8") files.push_back(it->path());
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) names.push_back(f.filename().string());
  } else if (!fs::exists(source, ec)) {
    return Status::NotFound("corpus " + source +
                            " does not exist (expected \"fortunes\", \"fortunes-XX\" (a Debian "
                            "fortunes package), a fortunes directory, a .jsonl file or a text "
                            "file)");
  } else {
    fortunes_format = false;
    files.emplace_back(source);
    names.push_back(fs::path(source).filename().string());
  }
  Sha256 hash;
  std::vector<Record> records;
  if (fortunes_format) {
    TANDEM_ASSIGN_OR_RETURN(records, ReadFortuneFiles(files, names, &hash));
    if (records.empty()) return Status::NotFound("corpus " + source + " holds no fortunes");
  } else {
    if (fs::path(source).extension() == ".jsonl") {
      TANDEM_ASSIGN_OR_RETURN(records, LoadJsonl(source));
    } else {
      TANDEM_ASSIGN_OR_RETURN(records, LoadTextFile(source));
    }
    if (fingerprint != nullptr) {
      TANDEM_ASSIGN_OR_RETURN(std::string content, ReadFile(source));
      hash.AddField(names[0]);
      hash.AddField(content);
    }
  }
  if (fingerprint != nullptr) {
    fingerprint->source = source;
    fingerprint->files.clear();
    for (const fs::path& f : files) fingerprint->files.push_back(f.string());
    fingerprint->sha256 = hash.Hex();
  }
  return records;
}

std::vector<std::string> Categories(const std::vector<Record>& records) {
  std::set<std::string> set;
  for (const Record& r : records) set.insert(r.category);
  return {set.begin(), set.end()};
}

std::map<std::string, size_t> CategoryCounts(const std::vector<Record>& records) {
  std::map<std::string, size_t> counts;
  for (const Record& r : records) ++counts[r.category];
  return counts;
}

std::vector<Record> SelectRecords(const std::vector<Record>& records,
                                  const std::vector<size_t>& indices) {
  std::vector<Record> out;
  out.reserve(indices.size());
  for (size_t i : indices) {
    TANDEM_CHECK(i < records.size());
    out.push_back(records[i]);
  }
  return out;
}

}  // namespace tandem

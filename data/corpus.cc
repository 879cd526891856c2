// Loaders for fortunes, plain-text and JSONL corpora (see corpus.h for the formats).

#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

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

}  // namespace

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

  std::vector<Record> records;
  for (const fs::path& file : files) {
    TANDEM_ASSIGN_OR_RETURN(std::string content, ReadFile(file));
    ParseFortunes(content, file.filename().string(), &records);
  }
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

StatusOr<std::vector<Record>> LoadCorpus(const std::string& source) {
  if (source == "fortunes") return LoadFortunes(kDefaultFortunesDir);
  std::error_code ec;
  if (fs::is_directory(source, ec)) return LoadFortunes(source);
  if (!fs::exists(source, ec)) {
    return Status::NotFound("corpus " + source +
                            " does not exist (expected \"fortunes\", a fortunes directory, a "
                            ".jsonl file or a text file)");
  }
  if (fs::path(source).extension() == ".jsonl") return LoadJsonl(source);
  return LoadTextFile(source);
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

#include "core/config.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

namespace tandem {
namespace {

std::vector<std::string> SplitKey(std::string_view key) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    parts.emplace_back(key.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return parts;
}

const toml::node* Find(const toml::table& table, std::string_view key) {
  const toml::node* node = &table;
  for (const auto& part : SplitKey(key)) {
    const toml::table* t = node->as_table();
    if (t == nullptr) return nullptr;
    node = t->get(part);
    if (node == nullptr) return nullptr;
  }
  return node;
}

void CollectLeaves(const toml::table& table, const std::string& prefix,
                   std::vector<std::string>* out) {
  for (const auto& [k, v] : table) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const toml::table* sub = v.as_table()) {
      CollectLeaves(*sub, key, out);
    } else {
      out->push_back(key);
    }
  }
}

const char* TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a number";
    case toml::node_type::boolean: return "a boolean";
    default: return "a date or time";
  }
}

std::string Range(int64_t min, int64_t max) {
  if (min == INT64_MIN && max == INT64_MAX) return "";
  if (max == INT64_MAX) return ">= " + std::to_string(min);
  if (min == INT64_MIN) return "<= " + std::to_string(max);
  return "[" + std::to_string(min) + ", " + std::to_string(max) + "]";
}

std::string Number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

std::string Range(double min, double max) {
  const bool low = min > -1e308, high = max < 1e308;
  if (!low && !high) return "";
  if (!high) return ">= " + Number(min);
  if (!low) return "<= " + Number(max);
  return "[" + Number(min) + ", " + Number(max) + "]";
}

std::string Quoted(const std::string& s) { return "\"" + s + "\""; }

template <typename T, typename F>
std::string List(const std::vector<T>& items, F text) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + text(items[i]);
  return out + "]";
}

// Levenshtein distance, for "did you mean" on unknown keys.
size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string_view LastPart(std::string_view key) {
  const size_t dot = key.rfind('.');
  return dot == std::string_view::npos ? key : key.substr(dot + 1);
}

// The known key an unknown one most likely meant: a small edit away (a typo), or the same name
// in another section (`client.rounds` for `federation.rounds`). Empty when nothing is close.
std::string NearestKey(std::string_view unknown,
                       const std::set<std::string, std::less<>>& known) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, unknown.size() / 4) + 1;
  for (const std::string& k : known) {
    const size_t d = EditDistance(unknown, k);
    if (d < best_distance) best = k, best_distance = d;
  }
  if (!best.empty()) return best;
  for (const std::string& k : known) {
    if (LastPart(k) == LastPart(unknown)) return k;
  }
  return "";
}

}  // namespace

Config::Config() : table_(std::make_unique<toml::table>()) {}
Config::~Config() = default;
Config::Config(const Config& other)
    : table_(std::make_unique<toml::table>(*other.table_)),
      source_(other.source_),
      recording_(other.recording_) {
  std::lock_guard<std::mutex> lock(other.bookkeeping_mu_);
  used_ = other.used_;
  defaults_ = other.defaults_;
}
Config& Config::operator=(const Config& other) {
  if (this != &other) {
    table_ = std::make_unique<toml::table>(*other.table_);
    source_ = other.source_;
    recording_ = other.recording_;
    std::scoped_lock lock(bookkeeping_mu_, other.bookkeeping_mu_);
    used_ = other.used_;
    defaults_ = other.defaults_;
  }
  return *this;
}
// Moves take everything but the mutex; nothing may read a config while it is moved from.
Config::Config(Config&& other) noexcept
    : table_(std::move(other.table_)),
      source_(std::move(other.source_)),
      used_(std::move(other.used_)),
      recording_(other.recording_),
      defaults_(std::move(other.defaults_)) {}
Config& Config::operator=(Config&& other) noexcept {
  if (this != &other) {
    table_ = std::move(other.table_);
    source_ = std::move(other.source_);
    used_ = std::move(other.used_);
    recording_ = other.recording_;
    defaults_ = std::move(other.defaults_);
  }
  return *this;
}

StatusOr<Config> Config::LoadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open config file '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

StatusOr<Config> Config::Parse(std::string_view text, std::string source) {
  Config config;
  config.source_ = std::move(source);
  try {
    *config.table_ = toml::parse(text, config.source_);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << config.source_ << ":" << e.source().begin.line << ":" << e.source().begin.column
        << ": " << e.description();
    return Status::InvalidArgument(msg.str());
  }
  return config;
}

Status Config::ApplyOverride(std::string_view assignment) {
  size_t eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return Status::InvalidArgument("override '" + std::string(assignment) +
                                   "': expected key=value");
  }
  std::string key(assignment.substr(0, eq));
  std::string value(assignment.substr(eq + 1));
  key.erase(std::remove_if(key.begin(), key.end(), ::isspace), key.end());
  auto parts = SplitKey(key);
  for (const auto& p : parts) {
    if (p.empty()) return Status::InvalidArgument("override '" + key + "': empty key component");
  }

  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    parsed = toml::table{{"v", value}};  // bare word: a string
  }

  toml::table* t = table_.get();
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    toml::node* child = t->get(parts[i]);
    if (child == nullptr) {
      t->insert(parts[i], toml::table{});
      child = t->get(parts[i]);
    }
    if (!child->is_table()) {
      return Status::InvalidArgument("override '" + key + "': '" + parts[i] +
                                     "' is a value, not a table");
    }
    t = child->as_table();
  }
  t->insert_or_assign(parts.back(), *parsed.get("v"));
  return Status::Ok();
}

bool Config::Has(std::string_view key) const { return Find(*table_, key) != nullptr; }

void Config::NoteUsed(std::string_view key) const {
  std::lock_guard<std::mutex> lock(bookkeeping_mu_);
  used_.emplace(key);
}

std::string Config::Where(std::string_view key) const {
  std::ostringstream out;
  out << source_;
  if (const toml::node* n = Find(*table_, key); n && n->source().begin.line > 0) {
    out << ":" << n->source().begin.line;
  } else if (n) {
    out << " (--set)";
  }
  out << ": " << key;
  return out.str();
}

StatusOr<int64_t> Config::GetInt(std::string_view key, int64_t def, int64_t min,
                                 int64_t max) const {
  NoteUsed(key);
  Record(key, "integer", std::to_string(def), Range(min, max));
  const toml::node* n = Find(*table_, key);
  if (n == nullptr) return Defaulted(key, std::move(def));
  auto v = n->value<int64_t>();
  if (!n->is_integer() || !v) {
    return Status::InvalidArgument(Where(key) + ": expected an integer, got " + TypeName(*n));
  }
  if (*v < min || *v > max) {
    std::ostringstream msg;
    msg << Where(key) << ": expected an integer in [" << min << ", " << max << "], got " << *v;
    return Status::InvalidArgument(msg.str());
  }
  return *v;
}

StatusOr<double> Config::GetDouble(std::string_view key, double def, double min,
                                   double max) const {
  NoteUsed(key);
  Record(key, "number", Number(def), Range(min, max));
  const toml::node* n = Find(*table_, key);
  if (n == nullptr) return Defaulted(key, std::move(def));
  if (!n->is_number()) {
    return Status::InvalidArgument(Where(key) + ": expected a number, got " + TypeName(*n));
  }
  double v = *n->value<double>();
  if (!(v >= min && v <= max)) {
    std::ostringstream msg;
    msg << Where(key) << ": expected a number in [" << min << ", " << max << "], got " << v;
    return Status::InvalidArgument(msg.str());
  }
  return v;
}

StatusOr<bool> Config::GetBool(std::string_view key, bool def) const {
  NoteUsed(key);
  Record(key, "boolean", def ? "true" : "false", "");
  const toml::node* n = Find(*table_, key);
  if (n == nullptr) return Defaulted(key, std::move(def));
  if (!n->is_boolean()) {
    return Status::InvalidArgument(Where(key) + ": expected true or false, got " + TypeName(*n));
  }
  return *n->value<bool>();
}

StatusOr<std::string> Config::GetString(std::string_view key, std::string def) const {
  NoteUsed(key);
  Record(key, "string", Quoted(def), "");
  const toml::node* n = Find(*table_, key);
  if (n == nullptr) return Defaulted(key, std::move(def));
  if (!n->is_string()) {
    return Status::InvalidArgument(Where(key) + ": expected a string, got " + TypeName(*n));
  }
  return *n->value<std::string>();
}

StatusOr<std::string> Config::RequireString(std::string_view key) const {
  if (!Has(key)) {
    NoteUsed(key);
    Record(key, "string", "(required)", "");
    // Describe mode reads on past a required key, to record the keys that follow it.
    if (recording_ != nullptr) return std::string();
    return Status::InvalidArgument(source_ + ": " + std::string(key) +
                                   ": required key is missing");
  }
  return GetString(key, "");
}

StatusOr<std::string> Config::GetChoice(std::string_view key, std::string def,
                                        const std::vector<std::string>& choices) const {
  TANDEM_ASSIGN_OR_RETURN(std::string v, GetString(key, std::move(def)));
  if (recording_ != nullptr) {
    const std::string list = List(choices, Quoted);  // "[...]"
    recording_->back().range = "one of " + list.substr(1, list.size() - 2);
  }
  if (std::find(choices.begin(), choices.end(), v) != choices.end()) return v;
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
  return Status::InvalidArgument(Where(key) + ": expected one of {" + list + "}, got '" + v +
                                 "'");
}

StatusOr<std::vector<std::string>> Config::GetStringList(std::string_view key,
                                                         std::vector<std::string> def) const {
  NoteUsed(key);
  Record(key, "string list", List(def, Quoted), "");
  const toml::node* n = Find(*table_, key);
  if (n == nullptr) return Defaulted(key, std::move(def));
  const toml::array* arr = n->as_array();
  if (arr == nullptr) {
    return Status::InvalidArgument(Where(key) + ": expected an array of strings, got " +
                                   TypeName(*n));
  }
  std::vector<std::string> out;
  for (const auto& item : *arr) {
    if (!item.is_string()) {
      return Status::InvalidArgument(Where(key) + ": expected an array of strings, found " +
                                     TypeName(item));
    }
    out.push_back(*item.value<std::string>());
  }
  return out;
}

StatusOr<std::vector<int64_t>> Config::GetIntList(std::string_view key, std::vector<int64_t> def,
                                                  int64_t min, int64_t max) const {
  NoteUsed(key);
  Record(key, "integer list",
         List(def, [](int64_t v) { return std::to_string(v); }), Range(min, max));
  const toml::node* n = Find(*table_, key);
  if (n == nullptr) return Defaulted(key, std::move(def));
  const toml::array* arr = n->as_array();
  if (arr == nullptr) {
    return Status::InvalidArgument(Where(key) + ": expected an array of integers, got " +
                                   TypeName(*n));
  }
  std::vector<int64_t> out;
  for (const auto& item : *arr) {
    auto v = item.value<int64_t>();
    if (!item.is_integer() || !v) {
      return Status::InvalidArgument(Where(key) + ": expected an array of integers, found " +
                                     TypeName(item));
    }
    if (*v < min || *v > max) {
      return Status::InvalidArgument(Where(key) + ": element " + std::to_string(*v) +
                                     " is outside [" + std::to_string(min) + ", " +
                                     std::to_string(max) + "]");
    }
    out.push_back(*v);
  }
  return out;
}

StatusOr<std::vector<double>> Config::GetDoubleList(std::string_view key, std::vector<double> def,
                                                   double min, double max) const {
  NoteUsed(key);
  Record(key, "number list", List(def, [](double v) { return Number(v); }), Range(min, max));
  const toml::node* n = Find(*table_, key);
  if (n == nullptr) return Defaulted(key, std::move(def));
  const toml::array* arr = n->as_array();
  if (arr == nullptr) {
    return Status::InvalidArgument(Where(key) + ": expected an array of numbers, got " +
                                   TypeName(*n));
  }
  std::vector<double> out;
  for (const auto& item : *arr) {
    if (!item.is_number()) {
      return Status::InvalidArgument(Where(key) + ": expected an array of numbers, found " +
                                     TypeName(item));
    }
    const double v = *item.value<double>();
    if (!(v >= min && v <= max)) {
      std::ostringstream msg;
      msg << Where(key) << ": element " << v << " is outside [" << min << ", " << max << "]";
      return Status::InvalidArgument(msg.str());
    }
    out.push_back(v);
  }
  return out;
}

void Config::MarkUsed(std::string_view prefix) const {
  std::vector<std::string> leaves;
  CollectLeaves(*table_, "", &leaves);
  std::lock_guard<std::mutex> lock(bookkeeping_mu_);
  for (const auto& leaf : leaves) {
    if (prefix.empty() || leaf == prefix || leaf.rfind(std::string(prefix) + ".", 0) == 0) {
      used_.insert(leaf);
    }
  }
}

std::vector<std::string> Config::KeysUnder(std::string_view prefix) const {
  std::vector<std::string> leaves, out;
  CollectLeaves(*table_, "", &leaves);
  for (const auto& leaf : leaves) {
    if (leaf.rfind(std::string(prefix) + ".", 0) == 0) out.push_back(leaf);
  }
  return out;
}

// A section switched off (`enabled = false`, read by its reader) does not act, so its other keys
// are not checked either: `--set privacy.dp.enabled=false` switches a configured section off.
bool Config::InSwitchedOffSection(std::string_view key) const {
  for (size_t dot = key.rfind('.'); dot != std::string_view::npos && dot > 0;
       dot = key.rfind('.', dot - 1)) {
    const std::string enabled = std::string(key.substr(0, dot)) + ".enabled";
    if (used_.count(enabled) == 0) continue;
    const toml::node* n = Find(*table_, enabled);
    if (n != nullptr && n->is_boolean() && !*n->value<bool>()) return true;
  }
  return false;
}

Status Config::CheckAllKeysUsed() const {
  std::vector<std::string> leaves;
  CollectLeaves(*table_, "", &leaves);
  std::lock_guard<std::mutex> lock(bookkeeping_mu_);  // InSwitchedOffSection reads used_ too
  std::string unknown;
  for (const auto& leaf : leaves) {
    if (used_.count(leaf) != 0 || InSwitchedOffSection(leaf)) continue;
    unknown += (unknown.empty() ? "" : ", ") + Where(leaf);
    if (std::string near = NearestKey(leaf, used_); !near.empty()) {
      unknown += " (did you mean " + near + "?)";
    }
  }
  if (unknown.empty()) return Status::Ok();
  return Status::InvalidArgument("unknown key(s): " + unknown +
                                 "; every key is listed in docs/config.md");
}

void Config::Record(std::string_view key, std::string type, std::string def,
                    std::string range) const {
  if (recording_ == nullptr) return;
  recording_->push_back({std::string(key), std::move(type), std::move(def), std::move(range)});
}

namespace {

// `value` as a TOML value literal ("fortunes" quoted, 0.5, [1, 2]), formatted by toml++.
template <typename T>
std::string TomlLiteral(T&& value) {
  toml::table t;
  t.insert("v", std::forward<T>(value));
  std::ostringstream out;
  out << toml::toml_formatter(t);
  std::string text = out.str();
  return text.substr(std::min(text.size(), text.find('=') + 2));
}

}  // namespace

template <typename T>
T Config::Defaulted(std::string_view key, T def) const {
  if constexpr (std::is_same_v<T, std::vector<std::string>> ||
                std::is_same_v<T, std::vector<int64_t>> ||
                std::is_same_v<T, std::vector<double>>) {
    toml::array a;
    for (const auto& v : def) a.push_back(v);
    std::string literal = TomlLiteral(std::move(a));
    std::lock_guard<std::mutex> lock(bookkeeping_mu_);
    defaults_[std::string(key)] = std::move(literal);
  } else {
    std::string literal = TomlLiteral(def);
    std::lock_guard<std::mutex> lock(bookkeeping_mu_);
    defaults_[std::string(key)] = std::move(literal);
  }
  return def;
}

std::string Config::ResolvedToml() const {
  std::string out = ToToml();
  out += "\n\n# Every key the run read, with the value in effect (the default where the config\n"
         "# does not set it).\n[resolved]\n";
  std::lock_guard<std::mutex> lock(bookkeeping_mu_);
  for (const std::string& key : used_) {
    std::string literal;
    if (const toml::node* n = Find(*table_, key)) {
      if (n->is_table()) continue;
      n->visit([&](const auto& v) { literal = TomlLiteral(v); });
    } else if (auto it = defaults_.find(key); it != defaults_.end()) {
      literal = it->second;
    } else {
      continue;  // read as a whole section, or required and missing
    }
    out += TomlLiteral(key) + " = " + literal + "\n";
  }
  return out;
}

std::string Config::ToToml() const {
  std::ostringstream out;
  out << toml::toml_formatter(*table_);
  return out.str();
}

}  // namespace tandem

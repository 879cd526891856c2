// TOML configuration with validation errors that name the file, the line, the key and what was
// expected, plus `--set key=value` overrides. Built on toml++.
//
// Every getter records the key it read; CheckAllKeysUsed() then reports keys nobody read, so a
// typo such as `train.stpes` is an error rather than a silently ignored setting.
// Getters may run on several threads at once (`tandem run` with in-process clients hands every
// client thread the same config): the record of keys read and defaults in effect is behind a
// mutex. Loading, overrides and RecordKeysTo are not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace toml {
inline namespace v3 {
class table;
}
}  // namespace toml

namespace tandem {

// What one getter call asked for, captured in describe mode (`tandem config-reference`, which
// writes docs/config.md from these records, so the reference cannot drift from the code).
struct ConfigKeyRecord {
  std::string key;
  std::string type;   // "integer", "number", "boolean", "string", "string list", "integer list"
  std::string def;    // the default as TOML text; "(required)" for a required key
  std::string range;  // "[min, max]", "one of a, b", or empty when any value of the type goes
};

class Config {
 public:
  Config();
  ~Config();
  Config(const Config& other);
  Config& operator=(const Config& other);
  Config(Config&&) noexcept;
  Config& operator=(Config&&) noexcept;

  static StatusOr<Config> LoadFile(const std::string& path);
  // `source` names the text in error messages (a path, or "<string>").
  static StatusOr<Config> Parse(std::string_view text, std::string source = "<string>");

  // Applies "a.b.c=value". The value is read as a TOML value (42, 1.5, true, "text", [1, 2]);
  // anything that is not valid TOML is taken as a bare string, so `--set model.preset=slm-tiny`
  // works without quotes. Intermediate tables are created as needed.
  Status ApplyOverride(std::string_view assignment);

  bool Has(std::string_view key) const;

  // Typed getters: the default is returned when the key is absent; a present key of the wrong
  // type or outside [min, max] is an InvalidArgument naming file, line and key.
  StatusOr<int64_t> GetInt(std::string_view key, int64_t def, int64_t min = INT64_MIN,
                           int64_t max = INT64_MAX) const;
  StatusOr<double> GetDouble(std::string_view key, double def, double min = -1e308,
                             double max = 1e308) const;
  StatusOr<bool> GetBool(std::string_view key, bool def) const;
  StatusOr<std::string> GetString(std::string_view key, std::string def) const;
  // One of `choices`; the error lists them.
  StatusOr<std::string> GetChoice(std::string_view key, std::string def,
                                  const std::vector<std::string>& choices) const;
  StatusOr<std::vector<std::string>> GetStringList(std::string_view key,
                                                   std::vector<std::string> def) const;
  StatusOr<std::vector<int64_t>> GetIntList(std::string_view key, std::vector<int64_t> def,
                                            int64_t min = INT64_MIN, int64_t max = INT64_MAX) const;
  // Numbers (integers accepted), each in [min, max].
  StatusOr<std::vector<double>> GetDoubleList(std::string_view key, std::vector<double> def,
                                              double min = -1e308, double max = 1e308) const;
  // A required key: absent is an error.
  StatusOr<std::string> RequireString(std::string_view key) const;

  // Marks every key under `prefix` as read (for sections handed whole to another component);
  // an empty prefix marks every key.
  void MarkUsed(std::string_view prefix) const;
  // The keys under `prefix.` (leaves, in file order), read or not.
  std::vector<std::string> KeysUnder(std::string_view prefix) const;
  // InvalidArgument listing every key that was never read.
  Status CheckAllKeysUsed() const;

  // The resolved config (file plus overrides) as TOML text, for runs/<name>/config.toml.
  std::string ToToml() const;
  const std::string& source() const { return source_; }
  // The resolved config with defaults, for runs/<name>/config.resolved.toml: ToToml(), then a
  // [resolved] table of every key read so far (as one quoted dotted key) with the value in
  // effect, the config's own or the default its reader passed.
  std::string ResolvedToml() const;

  // Describe mode: every getter call on this config, and on copies made from now on, appends what
  // it asked for to `*sink` (which must outlive them); nullptr stops. Values are read as usual.
  void RecordKeysTo(std::vector<ConfigKeyRecord>* sink) { recording_ = sink; }

 private:
  void Record(std::string_view key, std::string type, std::string def,
              std::string range) const;
  bool InSwitchedOffSection(std::string_view key) const;  // caller holds bookkeeping_mu_
  void NoteUsed(std::string_view key) const;
  // Remembers `def` as the value in effect for an absent `key`; returns it.
  template <typename T>
  T Defaulted(std::string_view key, T def) const;

  std::string Where(std::string_view key) const;  // "file:line: key"
  std::unique_ptr<toml::table> table_;
  std::string source_;
  mutable std::mutex bookkeeping_mu_;  // guards used_ and defaults_
  mutable std::set<std::string, std::less<>> used_;
  std::vector<ConfigKeyRecord>* recording_ = nullptr;
  mutable std::map<std::string, std::string, std::less<>> defaults_;  // key -> TOML literal
};

}  // namespace tandem

// CURVE key generation, key files, the allow-list and `tandem keygen`; see wire/curve.h.
#include "wire/curve.h"

#include <cctype>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

namespace tandem::wire {
namespace {

std::string Trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t\r");
  if (begin == std::string::npos) return "";
  const size_t end = s.find_last_not_of(" \t\r");
  return s.substr(begin, end - begin + 1);
}

std::string Errno() { return std::strerror(errno); }

// Writes `text` to `path` atomically: a temporary file in the same directory with `mode`, fsync,
// rename over the target, fsync of the directory. The target never holds a partial file.
Status WriteFileAtomic(const std::string& path, const std::string& text, mode_t mode) {
  std::string tmp = path + ".tmp.XXXXXX";
  std::vector<char> name(tmp.begin(), tmp.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());  // created with mode 0600
  if (fd < 0) return Status::IoError("cannot create a temporary file for '" + path + "': " + Errno());
  tmp = name.data();
  auto fail = [&](const std::string& what) {
    const std::string reason = Errno();
    ::close(fd);
    ::unlink(tmp.c_str());
    return Status::IoError("cannot write '" + path + "': " + what + ": " + reason);
  };
  if (::fchmod(fd, mode) != 0) return fail("chmod");
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync");
  if (::close(fd) != 0) {
    const std::string reason = Errno();
    ::unlink(tmp.c_str());
    return Status::IoError("cannot write '" + path + "': close: " + reason);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = Errno();
    ::unlink(tmp.c_str());
    return Status::IoError("cannot rename '" + tmp + "' to '" + path + "': " + reason);
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: makes the rename itself durable
    ::close(dfd);
  }
  return Status::Ok();
}

StatusOr<std::vector<std::string>> ReadLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open '" + path + "': " + Errno());
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  if (in.bad()) return Status::IoError("cannot read '" + path + "'");
  return lines;
}

// The "name = value" lines of a key file.
StatusOr<std::map<std::string, std::string>> ReadKeyFile(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  std::map<std::string, std::string> values;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 1) + ": ";
    const std::string line = Trim(lines[i]);
    if (line.empty() || line[0] == '#') continue;
    // Z85 uses '=' and '#': the entry's name is the leading word, and the '=' must follow it
    // (a key may hold '=' itself, so "public KEY" must not be read as a name up to the key's '=').
    size_t name_end = 0;
    while (name_end < line.size() && std::isalpha(static_cast<unsigned char>(line[name_end]))) {
      ++name_end;
    }
    const size_t eq = line.find_first_not_of(" \t", name_end);
    if (name_end == 0 || eq == std::string::npos || line[eq] != '=') {
      return Status::InvalidArgument(where + "expected 'public = KEY' or 'secret = KEY'");
    }
    const std::string name = line.substr(0, name_end);
    const std::string value = Trim(line.substr(eq + 1));
    if (name != "public" && name != "secret") {
      return Status::InvalidArgument(where + "unknown entry '" + name +
                                     "' (expected 'public' or 'secret')");
    }
    if (!values.emplace(name, value).second) {
      return Status::InvalidArgument(where + "duplicate entry '" + name + "'");
    }
  }
  return values;
}

std::string KeyFileText(const CurveKeyPair& keys) {
  return "# tandem CURVE key pair (Z85). Keep this file secret: it authenticates its owner.\n"
         "public = " + keys.public_key + "\nsecret = " + keys.secret_key + "\n";
}

std::string PublicKeyFileText(const std::string& public_key) {
  return "# tandem CURVE public key (Z85).\npublic = " + public_key + "\n";
}

}  // namespace

StatusOr<CurveKeyPair> GenerateCurveKeyPair() {
  char public_key[kCurveKeyChars + 1];
  char secret_key[kCurveKeyChars + 1];
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    return Status::Unavailable(std::string("cannot generate a CURVE key pair: ") +
                               zmq_strerror(zmq_errno()) +
                               " (libzmq built without CURVE support?)");
  }
  return CurveKeyPair{std::string(public_key, kCurveKeyChars),
                      std::string(secret_key, kCurveKeyChars)};
}

Status ValidateCurveKey(const std::string& key, const std::string& what) {
  if (key.size() != kCurveKeyChars) {
    return Status::InvalidArgument(what + ": a CURVE key is " + std::to_string(kCurveKeyChars) +
                                   " Z85 characters, got " + std::to_string(key.size()));
  }
  uint8_t raw[32];
  if (zmq_z85_decode(raw, key.c_str()) == nullptr) {
    return Status::InvalidArgument(what + ": not a Z85 key (invalid character)");
  }
  return Status::Ok();
}

Status ValidateKeyPair(const CurveKeyPair& keys) {
  TANDEM_RETURN_IF_ERROR(ValidateCurveKey(keys.public_key, "public key"));
  TANDEM_RETURN_IF_ERROR(ValidateCurveKey(keys.secret_key, "secret key"));
  char derived[kCurveKeyChars + 1];
  if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0) {
    return Status::Unavailable(std::string("cannot derive a CURVE public key: ") +
                               zmq_strerror(zmq_errno()));
  }
  if (keys.public_key != std::string(derived, kCurveKeyChars)) {
    return Status::InvalidArgument("the secret key does not belong to the public key");
  }
  return Status::Ok();
}

bool IsValidClientName(const std::string& name) {
  if (name.empty() || name.size() > kMaxClientNameBytes) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status SaveKeyPair(const std::string& path, const CurveKeyPair& keys) {
  Status valid = ValidateKeyPair(keys);
  if (!valid.ok()) return valid.WithContext("not saving '" + path + "'");
  return WriteFileAtomic(path, KeyFileText(keys), 0600);
}

StatusOr<CurveKeyPair> LoadKeyPair(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(auto values, ReadKeyFile(path));
  for (const char* name : {"public", "secret"}) {
    if (values.count(name) == 0) {
      return Status::InvalidArgument(path + ": no '" + name + " = KEY' line");
    }
  }
  CurveKeyPair keys{values["public"], values["secret"]};
  Status valid = ValidateKeyPair(keys);
  if (!valid.ok()) return valid.WithContext(path);
  return keys;
}

Status SavePublicKey(const std::string& path, const std::string& public_key) {
  Status valid = ValidateCurveKey(public_key, "public key");
  if (!valid.ok()) return valid.WithContext("not saving '" + path + "'");
  return WriteFileAtomic(path, PublicKeyFileText(public_key), 0644);
}

StatusOr<std::string> LoadPublicKey(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(auto values, ReadKeyFile(path));
  if (values.count("public") == 0) {
    return Status::InvalidArgument(path + ": no 'public = KEY' line");
  }
  Status valid = ValidateCurveKey(values["public"], "public key");
  if (!valid.ok()) return valid.WithContext(path);
  return values["public"];
}

StatusOr<AllowList> LoadAllowList(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  AllowList list;
  std::map<std::string, size_t> line_of_name;
  std::map<std::string, size_t> line_of_key;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t number = i + 1;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    std::istringstream in(lines[i]);
    std::vector<std::string> tokens;
    for (std::string token; in >> token;) {
      if (token[0] == '#' && tokens.size() != 1) break;  // a comment (a key may hold '#')
      tokens.push_back(token);
    }
    if (tokens.empty()) continue;
    if (tokens.size() != 2) {
      return Status::InvalidArgument(where + "expected 'NAME PUBLIC_KEY', got " +
                                     std::to_string(tokens.size()) + " fields");
    }
    const std::string& name = tokens[0];
    const std::string& key = tokens[1];
    if (!IsValidClientName(name)) {
      return Status::InvalidArgument(where + "invalid name '" + name.substr(0, 80) +
                                     "' (1 to 64 of A-Z a-z 0-9 _ . -)");
    }
    Status valid = ValidateCurveKey(key, "key of '" + name + "'");
    if (!valid.ok()) return Status::InvalidArgument(where + valid.message());
    if (auto it = line_of_name.find(name); it != line_of_name.end()) {
      return Status::InvalidArgument(where + "duplicate name '" + name + "' (first on line " +
                                     std::to_string(it->second) + ")");
    }
    if (auto it = line_of_key.find(key); it != line_of_key.end()) {
      return Status::InvalidArgument(where + "the key of '" + name +
                                     "' is already listed on line " + std::to_string(it->second));
    }
    line_of_name[name] = number;
    line_of_key[key] = number;
    list.name_by_key[key] = name;
  }
  return list;
}

Status SaveAllowList(const std::string& path, const AllowList& list) {
  std::map<std::string, std::string> key_by_name;
  for (const auto& [key, name] : list.name_by_key) {
    if (!IsValidClientName(name)) {
      return Status::InvalidArgument("not saving '" + path + "': invalid name '" + name + "'");
    }
    TANDEM_RETURN_IF_ERROR(
        ValidateCurveKey(key, "key of '" + name + "'").WithContext("not saving '" + path + "'"));
    if (!key_by_name.emplace(name, key).second) {
      return Status::InvalidArgument("not saving '" + path + "': duplicate name '" + name + "'");
    }
  }
  std::string text =
      "# tandem allow-list: one client per line, NAME PUBLIC_KEY (Z85). The NAME is the\n"
      "# client's identity at the coordinator.\n";
  for (const auto& [name, key] : key_by_name) text += name + " " + key + "\n";
  return WriteFileAtomic(path, text, 0644);
}

Status Keygen(const std::string& dir, int clients, bool overwrite) {
  if (clients < 0 || clients > 100000) {
    return Status::InvalidArgument("--clients must be between 0 and 100000, got " +
                                   std::to_string(clients));
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create '" + dir + "': " + ec.message());
  auto in_dir = [&](const std::string& name) { return (fs::path(dir) / name).string(); };
  std::vector<std::string> files = {in_dir("coordinator.key"), in_dir("coordinator.pub"),
                                    in_dir("allow-list.txt")};
  for (int k = 0; k < clients; ++k) files.push_back(in_dir("client-" + std::to_string(k) + ".key"));
  if (!overwrite) {
    for (const std::string& f : files) {
      if (fs::exists(f, ec)) {
        return Status::FailedPrecondition("'" + f +
                                          "' exists; refusing to overwrite keys (use --force)");
      }
    }
  }
  TANDEM_ASSIGN_OR_RETURN(CurveKeyPair coordinator, GenerateCurveKeyPair());
  TANDEM_RETURN_IF_ERROR(SaveKeyPair(in_dir("coordinator.key"), coordinator));
  TANDEM_RETURN_IF_ERROR(SavePublicKey(in_dir("coordinator.pub"), coordinator.public_key));
  AllowList list;
  for (int k = 0; k < clients; ++k) {
    TANDEM_ASSIGN_OR_RETURN(CurveKeyPair client, GenerateCurveKeyPair());
    const std::string name = "client-" + std::to_string(k);
    TANDEM_RETURN_IF_ERROR(SaveKeyPair(in_dir(name + ".key"), client));
    list.name_by_key[client.public_key] = name;
  }
  return SaveAllowList(in_dir("allow-list.txt"), list);
}

}  // namespace tandem::wire

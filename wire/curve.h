// CURVE keys for the transport (libzmq's CurveZMQ: Curve25519 keys written as 40-character Z85
// text), the files they live in, and the coordinator's allow-list of client keys.
// File formats are in docs/protocol.md "Transport"; `tandem keygen` is Keygen().
#pragma once

#include <map>
#include <string>

#include "core/status.h"

namespace tandem::wire {

inline constexpr size_t kCurveKeyChars = 40;      // Z85 text of a 32-byte key
inline constexpr size_t kMaxClientNameBytes = 64;  // allow-list names: [A-Za-z0-9_.-]{1,64}

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters; never logged
};

// A fresh key pair (zmq_curve_keypair). Unavailable when libzmq was built without CURVE.
StatusOr<CurveKeyPair> GenerateCurveKeyPair();

// A 40-character Z85 string that decodes to 32 bytes. `what` names the key in the error.
Status ValidateCurveKey(const std::string& key, const std::string& what);
// Both keys valid and the secret key's public key (zmq_curve_public) is the public key.
Status ValidateKeyPair(const CurveKeyPair& keys);

// Client names (allow-list NAMEs, and the identity a client claims without CURVE):
// 1 to 64 of [A-Za-z0-9_.-].
bool IsValidClientName(const std::string& name);

// Key files are small text files of "name = value" lines; blank lines and lines starting with
// '#' are ignored. A ".key" file holds "public = KEY" and "secret = KEY"; a ".pub" file holds
// only "public = KEY". Writes are atomic (temporary file, fsync, rename); a key pair file gets
// mode 0600, a public key file 0644. Loading validates everything (ValidateKeyPair) and every
// error names the file (and the line, for syntax errors).
Status SaveKeyPair(const std::string& path, const CurveKeyPair& keys);
StatusOr<CurveKeyPair> LoadKeyPair(const std::string& path);
Status SavePublicKey(const std::string& path, const std::string& public_key);
// Reads the "public" line of a ".pub" or a ".key" file (a secret line, if any, is not read).
StatusOr<std::string> LoadPublicKey(const std::string& path);

// The coordinator's allow-list: one client per line, "NAME PUBLIC_KEY", '#' starts a comment
// (at the start of a line, or after the key), blank lines ignored. NAMEs are valid client names;
// names and keys are unique. The NAME is the client's identity (ZAP User-Id).
struct AllowList {
  std::map<std::string, std::string> name_by_key;  // Z85 public key -> NAME
};
// Errors name the file and line ("allow-list.txt:7: duplicate name 'client-3' (first on line 4)").
StatusOr<AllowList> LoadAllowList(const std::string& path);
Status SaveAllowList(const std::string& path, const AllowList& list);  // sorted by name, atomic

// `tandem keygen --out DIR --clients N`: DIR/coordinator.key, DIR/coordinator.pub,
// DIR/client-K.key for K in 0..N-1 and DIR/allow-list.txt naming "client-K". Creates DIR if
// needed. Refuses (FailedPrecondition, nothing written) if any of those files exists, unless
// `overwrite`. 0 <= clients <= 100000.
Status Keygen(const std::string& dir, int clients, bool overwrite);

}  // namespace tandem::wire

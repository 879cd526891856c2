// The byte formats of secure aggregation (Bonawitz et al. 2017): the six messages of a round, the
// share-pair plaintext sealed between clients, and the key-derivation contexts that bind run,
// round and the pair of clients. The state machines are secagg_server.h and secagg_client.h.
//
// Wire format of every message (strict: exact lengths, counts capped, no trailing bytes):
//   u8 version (kSecAggVersion) | u8 type | u64 run_id | u64 round | body
// integers little-endian; a string is u16 length + bytes; a byte string u32 length + bytes; a
// list u32 count + items. The producer fills run_id and round; the consumer checks them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "privacy/crypto.h"
#include "privacy/secagg_params.h"
#include "privacy/shamir.h"

namespace tandem::privacy {

inline constexpr uint8_t kSecAggVersion = 1;
// Caps that keep a parse from allocating without bound (with kSecAggMaxClients,
// kSecAggMaxClientIdBytes and kSecAggMaxLength).
inline constexpr size_t kSecAggMaxCiphertextBytes = 1024;

// ---- Messages. ----

struct AdvertiseKeys {  // client -> server, step 0
  uint64_t run_id = 0;
  uint64_t round = 0;
  Key32 c_public{};  // share encryption
  Key32 s_public{};  // mask agreement
  Bytes Serialize() const;
  static StatusOr<AdvertiseKeys> Parse(std::span<const uint8_t> bytes);
  bool operator==(const AdvertiseKeys&) const = default;
};

struct PeerKeys {
  std::string id;
  Key32 c_public{};
  Key32 s_public{};
  bool operator==(const PeerKeys&) const = default;
};

struct KeyList {  // server -> client, step 1
  uint64_t run_id = 0;
  uint64_t round = 0;
  std::vector<std::string> advertised;  // U1, sorted, unique: fixes graph and Shamir x
  std::vector<PeerKeys> neighbours;     // the recipient's neighbours in U1 and itself, in U1 order
  Bytes Serialize() const;
  static StatusOr<KeyList> Parse(std::span<const uint8_t> bytes);
  bool operator==(const KeyList&) const = default;
};

// A sealed pair of Shamir shares (b_u, s_u^SK). In a ShareKeysMessage `peer` is the recipient;
// in a MaskedInputRequest it is the sender.
struct EncryptedShares {
  std::string peer;
  Bytes ciphertext;  // SealAesGcm output
  bool operator==(const EncryptedShares&) const = default;
};

struct ShareKeysMessage {  // client -> server, step 1
  uint64_t run_id = 0;
  uint64_t round = 0;
  std::vector<EncryptedShares> shares;  // one per neighbour (the sender excluded)
  Bytes Serialize() const;
  static StatusOr<ShareKeysMessage> Parse(std::span<const uint8_t> bytes);
  bool operator==(const ShareKeysMessage&) const = default;
};

struct MaskedInputRequest {  // server -> client, step 2
  uint64_t run_id = 0;
  uint64_t round = 0;
  std::vector<EncryptedShares> shares;  // from each neighbour in U2, sorted by sender
  Bytes Serialize() const;
  static StatusOr<MaskedInputRequest> Parse(std::span<const uint8_t> bytes);
  bool operator==(const MaskedInputRequest&) const = default;
};

struct UnmaskRequest {  // server -> client, step 3
  uint64_t run_id = 0;
  uint64_t round = 0;
  std::vector<std::string> survivors;  // U3 among the recipient's neighbours, itself included
  std::vector<std::string> dropped;    // (U2 \ U3) among its neighbours
  Bytes Serialize() const;
  static StatusOr<UnmaskRequest> Parse(std::span<const uint8_t> bytes);
  bool operator==(const UnmaskRequest&) const = default;
};

struct RevealedShare {
  std::string owner;  // whose secret this is a share of
  ShamirShare share;  // share.x is the revealing client's x
  bool operator==(const RevealedShare& o) const {
    return owner == o.owner && share.x == o.share.x && share.y == o.share.y;
  }
};

struct UnmaskResponse {  // client -> server, step 3
  uint64_t run_id = 0;
  uint64_t round = 0;
  std::vector<RevealedShare> self_mask_shares;  // b_v shares, one per survivor in the request
  std::vector<RevealedShare> key_shares;        // s_v^SK shares, one per dropped in the request
  Bytes Serialize() const;
  static StatusOr<UnmaskResponse> Parse(std::span<const uint8_t> bytes);
  bool operator==(const UnmaskResponse&) const = default;
};

namespace detail {

// Bytes of the secrets that are Shamir-shared: b_u and s_u^SK are both 32 bytes.
inline constexpr size_t kSecretBytes = 32;
inline const size_t kSecretChunks = ShamirChunkCount(kSecretBytes);
// SerializeShare of a share of a 32-byte secret: x, count, count * y.
inline const size_t kShareWireBytes = 4 + 4 + 8 * ShamirChunkCount(kSecretBytes);

// Secrets are wiped with OPENSSL_cleanse, which the compiler cannot optimise away.
void Cleanse(void* p, size_t n);
void WipeKey(Key32& k);
void WipeShare(ShamirShare& s);

// ---- Key derivation and binding. ----

// HKDF(X25519(private, peer_public)) with info binding run, round, the purpose and the unordered
// pair (so both ends derive the same key).
StatusOr<Key32> PairKey(std::string_view label, const SecAggParams& p, const Key32& private_key,
                        const Key32& peer_public, const std::string& a, const std::string& b);

inline constexpr std::string_view kShareKeyLabel = "tandem secagg v1 share key";
inline constexpr std::string_view kMaskSeedLabel = "tandem secagg v1 mask seed";

// AAD of a sealed share pair: binds run, round, sender and recipient (in that order).
Bytes ShareAad(const SecAggParams& p, const std::string& sender, const std::string& recipient);

// The plaintext sealed for one peer: its share of b_u and its share of s_u^SK.
Bytes SerializeSharePair(const ShamirShare& b, const ShamirShare& s);
Status ParseSharePair(std::span<const uint8_t> bytes, ShamirShare* b, ShamirShare* s);

// A revealed or received share of a 32-byte secret held by the client at x.
Status CheckShare(const ShamirShare& share, uint32_t x, const std::string& what);

}  // namespace detail
}  // namespace tandem::privacy

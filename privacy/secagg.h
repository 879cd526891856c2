// Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
// Machine Learning", the honest-but-curious server variant: no signatures, the transport
// authenticates each client to the server) and its SecAgg+ sparse-graph variant (Bell et al.
// 2020), as two state machines that own no sockets: SecAggServer and SecAggClient consume and
// produce the messages below, and the runtime carries them as opaque byte strings.
//
// One round, each step a collect-with-deadline task on the coordinator side:
//   0 AdvertiseKeys   client -> server: two fresh X25519 public keys (c: share encryption,
//                     s: mask agreement).
//   1 ShareKeys       server -> client: KeyList (U1 and the keys of the client's neighbours);
//                     client -> server: ShareKeysMessage, its Shamir shares of b_u and s_u^SK
//                     sealed for each neighbour with AES-256-GCM.
//   2 MaskedInput     server -> client: MaskedInputRequest (the ciphertexts addressed to it from
//                     U2); client -> server: y = x + PRG(b_u) + sum_{v<u} PRG(s_uv)
//                     - sum_{v>u} PRG(s_uv) mod 2^k over its neighbours v in U2, a plain
//                     std::vector<uint64_t> of params.length words.
//   3 Unmask          server -> client: UnmaskRequest (survivors U3 and dropped U2\U3 among its
//                     neighbours); client -> server: UnmaskResponse, b shares of survivors and
//                     s^SK shares of the dropped.
//   4 Finish          the server removes the masks and returns sum_{u in U3} x_u mod 2^k.
// Fewer than `threshold` at any step aborts the round and nothing is unmasked. Keys are fresh
// every round: a SecAggClient and a SecAggServer live for one round.
//
// Wire format of every message (strict: exact lengths, counts capped, no trailing bytes):
//   u8 version (kSecAggVersion) | u8 type | u64 run_id | u64 round | body
// integers little-endian; a string is u16 length + bytes; a byte string u32 length + bytes; a
// list u32 count + items. The producer fills run_id and round; the consumer checks them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "privacy/crypto.h"
#include "privacy/secagg_graph.h"
#include "privacy/shamir.h"

namespace tandem::privacy {

inline constexpr uint8_t kSecAggVersion = 1;
// Caps that keep a parse from allocating without bound.
inline constexpr size_t kSecAggMaxClients = 65536;
inline constexpr size_t kSecAggMaxClientIdBytes = 128;
inline constexpr size_t kSecAggMaxLength = size_t{1} << 28;  // words in the masked vector
inline constexpr size_t kSecAggMaxCiphertextBytes = 1024;

struct SecAggParams {
  uint64_t run_id = 0;
  uint64_t round = 0;
  int threshold = 2;       // t: shares needed to reconstruct, and the least survivors per step
  int modulus_bits = 64;   // inputs and masks live in Z / 2^modulus_bits, 8..64
  size_t length = 0;       // words in each input vector
  int neighbours = 0;      // 0: complete graph (SecAgg); k > 0: SecAgg+, k neighbours each
  uint64_t graph_seed = 0; // SecAgg+ graph permutation (mixed with run_id and round)
};

// InvalidArgument unless: 2 <= threshold <= cohort (a single share must not reveal a secret);
// 8 <= modulus_bits <= 64; 1 <= length <= kSecAggMaxLength; 2 <= cohort <= kSecAggMaxClients,
// and cohort <= kSecAggMaxCompleteGraph for a complete graph; neighbours >= 0 and, with SecAgg+,
// threshold <= neighbours + 1 (t applies per neighbourhood, the client included).
Status ValidateSecAggParams(const SecAggParams& params, size_t cohort);

// A client id: 1..kSecAggMaxClientIdBytes bytes.
Status ValidateSecAggClientId(const std::string& id);

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

// ---- The state machines. ----

enum class SecAggStep {
  kAdvertise,    // server: collecting AdvertiseKeys; client: before Advertise()
  kShareKeys,    // server: collecting ShareKeysMessage; client: advertised, awaiting KeyList
  kMaskedInput,  // server: collecting masked inputs; client: shares sent, awaiting the request
  kUnmask,       // server: collecting UnmaskResponse; client: masked, awaiting UnmaskRequest
  kDone,         // server: Finish succeeded; client: answered an UnmaskRequest
  kAborted,      // server only: too few at some step, or Finish failed; nothing was unmasked
};
const char* SecAggStepName(SecAggStep step);

// The coordinator side of one round. Memory O(length + cohort * degree): masked inputs are folded
// into one running sum as they arrive (never kept one by one).
// Every On*() validates the message and either accepts it or returns an error leaving the state
// exactly as it was: unknown or duplicate sender, wrong step (replayed or reordered messages),
// wrong run or round, wrong length, values >= 2^modulus_bits, shares addressed to a non-neighbour.
// A Close*() that finds fewer than `threshold` moves to kAborted; so does a failing Finish().
// Not thread-safe: the round engine calls it from one thread.
class SecAggServer {
 public:
  // `cohort`: the clients asked to take part (any order; duplicates are an error).
  static StatusOr<SecAggServer> Create(const SecAggParams& params,
                                       std::vector<std::string> cohort);

  Status OnAdvertise(const std::string& id, const AdvertiseKeys& message);
  // Fixes U1 (fails and aborts if |U1| < threshold) and the graph.
  Status CloseAdvertise();
  // For each client in advertised().
  StatusOr<KeyList> KeyListFor(const std::string& id) const;

  Status OnShareKeys(const std::string& id, const ShareKeysMessage& message);
  // Fixes U2 (fails and aborts if |U2| < threshold).
  Status CloseShareKeys();
  // For each client in share_senders().
  StatusOr<MaskedInputRequest> MaskedInputRequestFor(const std::string& id) const;

  // y: params.length words, each < 2^modulus_bits. Added into the running sum at once.
  Status OnMaskedInput(const std::string& id, std::span<const uint64_t> y);
  // Fixes U3. Fails and aborts if |U3| < threshold, or (SecAgg+) some survivor or dropped
  // client has fewer than threshold surviving neighbours to answer for it.
  Status CloseMaskedInput();
  // For each client in survivors().
  StatusOr<UnmaskRequest> UnmaskRequestFor(const std::string& id) const;

  Status OnUnmask(const std::string& id, const UnmaskResponse& message);
  // Checks, before reconstructing anything, that every survivor's b and every dropped client's
  // s^SK has >= threshold shares from the clients that answered; if not, aborts with nothing
  // unmasked. Then reconstructs (checking each s^SK against its advertised public key), removes
  // the masks and returns sum_{u in U3} x_u mod 2^modulus_bits (length words). Once.
  StatusOr<std::vector<uint64_t>> Finish();

  SecAggStep step() const { return step_; }
  const SecAggParams& params() const { return params_; }
  // Each sorted; filled as the steps close (empty before).
  const std::vector<std::string>& advertised() const { return u1_ids_; }     // U1
  const std::vector<std::string>& share_senders() const { return u2_ids_; }  // U2
  const std::vector<std::string>& survivors() const { return u3_ids_; }      // U3
  const std::vector<std::string>& dropped() const { return dropped_ids_; }   // U2 \ U3

  SecAggServer(SecAggServer&&) noexcept;
  SecAggServer& operator=(SecAggServer&&) noexcept;
  ~SecAggServer();

 private:
  struct Client;
  SecAggServer() = default;
  // Index into clients_ of an id in the cohort, or nullopt.
  std::optional<uint32_t> Find(const std::string& id) const;
  Status CheckMessage(const char* what, SecAggStep want, uint64_t run_id, uint64_t round) const;
  Status Abort(Status why);

  SecAggParams params_;
  SecAggStep step_ = SecAggStep::kAdvertise;
  std::vector<Client> clients_;  // the cohort, sorted by id
  // Indices into clients_ of U1 in order; a client's U1 position p gives Shamir x = p + 1 and
  // its node in graph_.
  std::vector<uint32_t> u1_;
  std::unique_ptr<SecAggGraph> graph_;
  std::vector<uint64_t> sum_;  // running sum of masked inputs, length words
  size_t unmask_answers_ = 0;
  std::vector<std::string> u1_ids_, u2_ids_, u3_ids_, dropped_ids_;
};

// The client side of one round. Private keys and secrets are wiped on destruction.
// A refused message (wrong step, wrong run or round, a key list or request that is not
// consistent with what this client knows) returns an error and leaves the state unchanged.
// Not thread-safe.
class SecAggClient {
 public:
  // Checks the parameters that do not depend on the cohort size, and the id.
  static StatusOr<SecAggClient> Create(const SecAggParams& params, std::string self_id);

  // Step 0: draws two fresh key pairs. Once.
  StatusOr<AdvertiseKeys> Advertise();
  // Step 1: checks the key list (U1 sorted and at least threshold long, this client in it with
  // its own keys unchanged, the neighbour list exactly the one the graph gives), draws b_u and
  // seals for each neighbour its shares of b_u and s_u^SK. Once.
  StatusOr<ShareKeysMessage> ShareKeys(const KeyList& keys);
  // Step 2: checks each ciphertext comes from a distinct neighbour and opens under the key shared
  // with it (so it is addressed to this client for this round), that at least threshold of its
  // neighbourhood (itself included) are in U2, then masks x in place. x: params.length words,
  // each < 2^modulus_bits. Once (masking twice against different U2 would leak x). A refusal
  // leaves x untouched; only an internal (OpenSSL) failure while masking leaves it partly masked.
  Status MaskInput(const MaskedInputRequest& request, std::span<uint64_t> x);
  // Step 3: checks survivors and dropped split exactly its neighbours in U2 (itself a survivor),
  // at least threshold survivors, and that it never revealed the other kind of share for any
  // peer named; answers with b shares for survivors and s^SK shares for the dropped. Answers one
  // request; the same request again gets the same answer, a different one is refused.
  StatusOr<UnmaskResponse> Unmask(const UnmaskRequest& request);

  SecAggStep step() const { return step_; }
  const std::string& id() const { return self_id_; }

  SecAggClient(SecAggClient&&) noexcept;
  SecAggClient& operator=(SecAggClient&&) noexcept;
  ~SecAggClient();

 private:
  struct Peer;
  SecAggClient() = default;
  Status CheckMessage(const char* what, SecAggStep want, uint64_t run_id, uint64_t round) const;
  // Index into peers_ of a neighbour id (not self), or nullopt.
  std::optional<uint32_t> FindPeer(const std::string& id) const;
  void Wipe();

  SecAggParams params_;
  std::string self_id_;
  SecAggStep step_ = SecAggStep::kAdvertise;
  X25519KeyPair c_keys_{};
  X25519KeyPair s_keys_{};
  Key32 self_mask_seed_{};  // b_u
  uint32_t self_x_ = 0;     // Shamir x: 1 + position in U1
  ShamirShare own_b_share_, own_s_share_;
  std::vector<Peer> peers_;  // neighbours (self excluded), sorted by id
  std::optional<UnmaskRequest> answered_;
  std::optional<UnmaskResponse> answer_;
};

}  // namespace tandem::privacy

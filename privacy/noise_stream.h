// Noise streams bound to what they protect. Every DP noise draw comes from a SecureRng whose
// AES-256-CTR key is HKDF-SHA256 (RFC 5869) of a long-lived secret key and the context of the
// draw: the run, the round, and the contribution task (a client) or the sum (the coordinator).
// A round replayed after a coordinator restart therefore draws exactly the noise it drew the
// first time, and reveals nothing the first execution did not (docs/privacy.md, "Restarts").
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "privacy/crypto.h"
#include "privacy/secure_rng.h"

namespace tandem::privacy {

// The identity of a run's noise: 128 bits drawn when the run starts afresh and kept in the
// coordinator's checkpoint, so it survives --resume (the transport's run id does not: it is new
// every time a coordinator starts). Public: clients receive it with every contribution task.
struct NoiseRunId {
  std::array<uint8_t, 16> bytes{};

  static StatusOr<NoiseRunId> Random();
  std::string ToHex() const;  // 32 lowercase hex digits
  static StatusOr<NoiseRunId> FromHex(std::string_view hex);
  bool operator==(const NoiseRunId&) const = default;
};

// 64 lowercase hex digits, and back (InvalidArgument unless exactly 64 hex digits).
std::string KeyToHex(const SecureRng::Key& key);
StatusOr<SecureRng::Key> KeyFromHex(std::string_view hex);

// A key of its own for one purpose of `master`: HKDF-SHA256(master, info = `purpose`).
StatusOr<SecureRng::Key> DeriveKey(const SecureRng::Key& master, std::string_view purpose);

// The stream of a client's distributed noise for its contribution to `task` (the task kind and
// the contribution's tensor name) in `round` of `run`. Independent across (run, round, task);
// identical for the same ones.
StatusOr<SecureRng> ClientNoiseStream(const SecureRng::Key& client_key, const NoiseRunId& run,
                                      uint64_t round, std::string_view task);

// The stream of the coordinator's central noise for `round` of `run`, bound also to
// `release_digest` (SumDigest of what the noise is added to): a replayed round that sums the same
// contributions gets the same noise, one that sums anything else gets independent noise, never the
// same noise on a different sum (their difference would be noise-free).
StatusOr<SecureRng> CentralNoiseStream(const SecureRng::Key& key, const NoiseRunId& run,
                                       uint64_t round, const Key32& release_digest);

// SHA-256 over the contributors' names (sorted, so arrival order does not matter) and the bits of
// the pre-noise sum.
StatusOr<Key32> SumDigest(std::vector<std::string> contributors, std::span<const double> sum);

// Reproducible experiments: TANDEM_NOISE_KEY, 64 hex digits, fixes every noise key of a run (the
// coordinator's, its noise run id, and each client's by its index), so that two runs of one
// config draw the same noise. Whoever knows it can strip the noise: never set it for a run whose
// privacy matters. nullopt when unset; InvalidArgument when malformed.
inline constexpr const char* kExperimentNoiseKeyVariable = "TANDEM_NOISE_KEY";
StatusOr<std::optional<SecureRng::Key>> ExperimentNoiseKey();

}  // namespace tandem::privacy

// The parameters of one secure-aggregation round (Bonawitz et al. 2017; SecAgg+ of Bell et al.
// 2020) and their checks, and the steps the two state machines go through. Shared by the codec
// (secagg_codec.h), the server (secagg_server.h) and the client (secagg_client.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/status.h"
#include "privacy/secagg_graph.h"

namespace tandem::privacy {

// Caps that keep a parse from allocating without bound.
inline constexpr size_t kSecAggMaxClients = 65536;
inline constexpr size_t kSecAggMaxClientIdBytes = 128;
inline constexpr size_t kSecAggMaxLength = size_t{1} << 28;  // words in the masked vector

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

enum class SecAggStep {
  kAdvertise,    // server: collecting AdvertiseKeys; client: before Advertise()
  kShareKeys,    // server: collecting ShareKeysMessage; client: advertised, awaiting KeyList
  kMaskedInput,  // server: collecting masked inputs; client: shares sent, awaiting the request
  kUnmask,       // server: collecting UnmaskResponse; client: masked, awaiting UnmaskRequest
  kDone,         // server: Finish succeeded; client: answered an UnmaskRequest
  kAborted,      // server only: too few at some step, or Finish failed; nothing was unmasked
};
const char* SecAggStepName(SecAggStep step);

namespace detail {

// The seed of the permutation the SecAgg+ graph is laid over: graph_seed mixed with run and round
// (splitmix64 finaliser), so a fixed graph_seed still gives a new graph every round.
uint64_t GraphSeed(const SecAggParams& p);

uint64_t ModulusMask(int bits);

// `v` has params.length words, each below 2^modulus_bits; InvalidArgument naming `what` if not.
Status CheckVector(std::span<const uint64_t> v, const SecAggParams& p, const char* what);

// The checks of ValidateSecAggParams that do not depend on the cohort size.
Status CheckParamsAlone(const SecAggParams& p);

}  // namespace detail
}  // namespace tandem::privacy

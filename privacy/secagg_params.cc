// Secure-aggregation parameters (see privacy/secagg_params.h): their validation, the step names,
// and the SecAgg+ graph seed (Bell et al. 2020) that both state machines derive from them.
#include "privacy/secagg_params.h"

namespace tandem::privacy {
namespace detail {

uint64_t GraphSeed(const SecAggParams& p) {
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(p.graph_seed) ^ p.run_id) ^ p.round);
}

uint64_t ModulusMask(int bits) {
  return bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1;
}

Status CheckVector(std::span<const uint64_t> v, const SecAggParams& p, const char* what) {
  if (v.size() != p.length) {
    return Status::InvalidArgument(std::string("secagg ") + what + ": " +
                                   std::to_string(v.size()) + " words, expected " +
                                   std::to_string(p.length));
  }
  if (p.modulus_bits < 64) {
    const uint64_t high = ~ModulusMask(p.modulus_bits);
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] & high) {
        return Status::InvalidArgument(std::string("secagg ") + what + ": word " +
                                       std::to_string(i) + " is not below 2^" +
                                       std::to_string(p.modulus_bits));
      }
    }
  }
  return Status::Ok();
}

Status CheckParamsAlone(const SecAggParams& p) {
  if (p.threshold < 2) {
    return Status::InvalidArgument("secagg threshold " + std::to_string(p.threshold) +
                                   " must be at least 2 (one share alone would reveal a secret)");
  }
  if (p.modulus_bits < 8 || p.modulus_bits > 64) {
    return Status::InvalidArgument("secagg modulus_bits " + std::to_string(p.modulus_bits) +
                                   " must be in 8..64");
  }
  if (p.length < 1 || p.length > kSecAggMaxLength) {
    return Status::InvalidArgument("secagg length " + std::to_string(p.length) +
                                   " must be in 1.." + std::to_string(kSecAggMaxLength));
  }
  if (p.neighbours < 0) {
    return Status::InvalidArgument("secagg neighbours " + std::to_string(p.neighbours) +
                                   " must be >= 0 (0: complete graph)");
  }
  if (p.neighbours > 0 && p.threshold > p.neighbours + 1) {
    return Status::InvalidArgument(
        "secagg threshold " + std::to_string(p.threshold) + " exceeds neighbours + 1 = " +
        std::to_string(p.neighbours + 1) + " (SecAgg+ applies t within each neighbourhood)");
  }
  return Status::Ok();
}

}  // namespace detail

using detail::CheckParamsAlone;

// ---- Parameters. ----

Status ValidateSecAggParams(const SecAggParams& params, size_t cohort) {
  TANDEM_RETURN_IF_ERROR(CheckParamsAlone(params));
  if (cohort < 2 || cohort > kSecAggMaxClients) {
    return Status::InvalidArgument("secagg cohort of " + std::to_string(cohort) +
                                   " clients: must be in 2.." + std::to_string(kSecAggMaxClients));
  }
  if (static_cast<size_t>(params.threshold) > cohort) {
    return Status::InvalidArgument("secagg threshold " + std::to_string(params.threshold) +
                                   " exceeds the cohort of " + std::to_string(cohort));
  }
  const bool complete =
      params.neighbours == 0 || static_cast<size_t>(params.neighbours) >= cohort - 1;
  if (complete && cohort > kSecAggMaxCompleteGraph) {
    return Status::InvalidArgument("secagg complete graph over " + std::to_string(cohort) +
                                   " clients: at most " +
                                   std::to_string(kSecAggMaxCompleteGraph) +
                                   "; set neighbours > 0 (SecAgg+) for larger cohorts");
  }
  return Status::Ok();
}

Status ValidateSecAggClientId(const std::string& id) {
  if (id.empty() || id.size() > kSecAggMaxClientIdBytes) {
    return Status::InvalidArgument("secagg client id of " + std::to_string(id.size()) +
                                   " bytes: must be 1.." +
                                   std::to_string(kSecAggMaxClientIdBytes));
  }
  return Status::Ok();
}

const char* SecAggStepName(SecAggStep step) {
  switch (step) {
    case SecAggStep::kAdvertise: return "advertise";
    case SecAggStep::kShareKeys: return "share-keys";
    case SecAggStep::kMaskedInput: return "masked-input";
    case SecAggStep::kUnmask: return "unmask";
    case SecAggStep::kDone: return "done";
    case SecAggStep::kAborted: return "aborted";
  }
  return "?";
}

}  // namespace tandem::privacy

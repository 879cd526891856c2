// The communication graph of secure aggregation: the complete graph of Bonawitz et al. 2017, or
// for SecAgg+ (Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic
// Overhead") a Harary graph H(k, n) laid over a pseudorandom permutation of the clients. Server and
// clients both compute it from the same public inputs, so a client can check the neighbour list
// the server sends it.
//
// Thread-safety: SecAggGraph is immutable after construction; const methods may be called from
// any thread at once.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace tandem::privacy {

// Largest number of nodes a complete graph may have (its neighbour lists and the share traffic
// both grow as n^2; larger cohorts use SecAgg+).
inline constexpr uint32_t kSecAggMaxCompleteGraph = 1024;

class SecAggGraph {
 public:
  // Nodes are 0..n-1: positions in the sorted list of clients that advertised keys (U1).
  // neighbours == 0, or neighbours >= n - 1: the complete graph. Otherwise H(k, n): node at slot s
  // of the permutation is joined to slots s±1 .. s±floor(k/2) (mod n) and, for odd k, to
  // s+floor(n/2) and s-floor(n/2): every node has degree k (k+1 for odd k and odd n).
  // The permutation is a Fisher-Yates shuffle driven by core/rng.h seeded from `seed` (public:
  // the graph is not a secret, only a commitment both sides compute alike).
  // Requires n >= 1, neighbours >= 0, and n <= kSecAggMaxCompleteGraph when the graph is complete
  // (checked, aborts; ValidateSecAggParams keeps callers within these).
  SecAggGraph(uint32_t n, int neighbours, uint64_t seed);

  uint32_t size() const { return n_; }
  bool complete() const { return complete_; }
  // The neighbours of `node` in increasing order, `node` itself excluded. Requires node < size().
  std::span<const uint32_t> Neighbours(uint32_t node) const;
  // Whether a and b are joined (a != b). Requires both < size().
  bool Adjacent(uint32_t a, uint32_t b) const;

 private:
  uint32_t n_ = 0;
  bool complete_ = true;
  std::vector<uint32_t> offsets_;  // (n+1): node i's neighbours are ids_[offsets_[i], offsets_[i+1])
  std::vector<uint32_t> ids_;
};

}  // namespace tandem::privacy

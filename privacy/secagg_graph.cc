// The secure-aggregation communication graph: complete, or a Harary graph over a permutation
// (SecAgg+, Bell et al. 2020). See secagg_graph.h.
#include "privacy/secagg_graph.h"

#include <algorithm>
#include <numeric>

#include "core/rng.h"
#include "core/status.h"

namespace tandem::privacy {

SecAggGraph::SecAggGraph(uint32_t n, int neighbours, uint64_t seed) : n_(n) {
  TANDEM_CHECK(n >= 1);
  TANDEM_CHECK(neighbours >= 0);
  complete_ = neighbours == 0 || static_cast<uint64_t>(neighbours) >= n - 1;
  offsets_.assign(n + 1, 0);
  if (complete_) {
    TANDEM_CHECK(n <= kSecAggMaxCompleteGraph);
    ids_.reserve(static_cast<size_t>(n) * (n - 1));
    for (uint32_t i = 0; i < n; ++i) {
      for (uint32_t j = 0; j < n; ++j) {
        if (j != i) ids_.push_back(j);
      }
      offsets_[i + 1] = static_cast<uint32_t>(ids_.size());
    }
    return;
  }

  // slot_node[s] is the node placed at slot s of the ring.
  std::vector<uint32_t> slot_node(n);
  std::iota(slot_node.begin(), slot_node.end(), 0u);
  Rng rng(seed);
  for (uint32_t i = n - 1; i > 0; --i) {
    uint32_t j = static_cast<uint32_t>(rng.Below(uint64_t{i} + 1));
    std::swap(slot_node[i], slot_node[j]);
  }
  std::vector<uint32_t> node_slot(n);
  for (uint32_t s = 0; s < n; ++s) node_slot[slot_node[s]] = s;

  // neighbours < n - 1 here, so the ring offsets 1..half and the diameter n/2 are all distinct
  // and non-zero mod n; sort + unique only merges +n/2 and -n/2 when n is even.
  const uint32_t half = static_cast<uint32_t>(neighbours) / 2;
  const bool odd = neighbours % 2 == 1;
  std::vector<uint32_t> adjacent;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t s = node_slot[i];
    adjacent.clear();
    for (uint32_t d = 1; d <= half; ++d) {
      adjacent.push_back(slot_node[(s + d) % n]);
      adjacent.push_back(slot_node[(s + n - d) % n]);
    }
    if (odd) {
      adjacent.push_back(slot_node[(s + n / 2) % n]);
      adjacent.push_back(slot_node[(s + n - n / 2) % n]);
    }
    std::sort(adjacent.begin(), adjacent.end());
    adjacent.erase(std::unique(adjacent.begin(), adjacent.end()), adjacent.end());
    ids_.insert(ids_.end(), adjacent.begin(), adjacent.end());
    offsets_[i + 1] = static_cast<uint32_t>(ids_.size());
  }
}

std::span<const uint32_t> SecAggGraph::Neighbours(uint32_t node) const {
  TANDEM_CHECK(node < n_);
  return std::span<const uint32_t>(ids_).subspan(offsets_[node],
                                                 offsets_[node + 1] - offsets_[node]);
}

bool SecAggGraph::Adjacent(uint32_t a, uint32_t b) const {
  TANDEM_CHECK(a < n_ && b < n_);
  if (a == b) return false;
  if (complete_) return true;
  auto list = Neighbours(a);
  return std::binary_search(list.begin(), list.end(), b);
}

}  // namespace tandem::privacy

// Partitioners: how a corpus's records are dealt to K clients, from identical distributions
// (iid) to one category per client (by-category) and the label-skew of Hsu, Qi & Brown 2019
// ("Measuring the effects of non-identical data distribution", Dirichlet over categories).
// Deterministic from a seed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"

namespace tandem {

class Config;

enum class PartitionKind {
  // Records shuffled and dealt round-robin: client sizes differ by at most one.
  kIid,
  // Each category goes whole to one client. Categories are shuffled with the seed, stably sorted
  // by size (largest first), and each is given to the client holding the fewest records so far
  // (lowest client id on ties): greedy balance by size. Needs at least K categories.
  kByCategory,
  // For each category (in name order), proportions p ~ Dirichlet(alpha, ..., alpha) over the K
  // clients; that category's records, shuffled, are cut at the rounded cumulative sums of p.
  // Large alpha approaches iid; small alpha gives each category to few clients. A client can
  // end up with no records when alpha is small or categories are few.
  kDirichlet,
};

struct PartitionSpec {
  PartitionKind kind = PartitionKind::kIid;
  double alpha = 0.0;  // kDirichlet only; > 0

  // "iid", "by-category", "dirichlet(0.5)": what ParsePartitionSpec reads.
  std::string ToString() const;
};

// Parses "iid", "by-category" or "dirichlet(ALPHA)" with ALPHA a positive finite number
// (whitespace around the parts is allowed). Errors say what was expected.
StatusOr<PartitionSpec> ParsePartitionSpec(std::string_view text);

// `federation.partition` (default "by-category") parsed by ParsePartitionSpec, the error naming
// the file and the key. The coordinator calls it too, so a bad spec stops a run at start instead
// of in every client's log.
StatusOr<PartitionSpec> PartitionSpecFromConfig(const Config& config);

// The record indices of each of `num_clients` clients: every index in [0, records.size()) is in
// exactly one client's list, each list ascending. Errors: num_clients < 1, alpha <= 0 or not
// finite, by-category with fewer categories than clients, iid with fewer records than clients.
StatusOr<std::vector<std::vector<size_t>>> PartitionRecords(const std::vector<Record>& records,
                                                            const PartitionSpec& spec,
                                                            int num_clients, uint64_t seed);

}  // namespace tandem

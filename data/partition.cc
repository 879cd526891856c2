// iid, by-category and Dirichlet partitioners (see partition.h).

#include "data/partition.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <sstream>

#include "core/config.h"
#include "core/rng.h"
#include "data/shuffle.h"

namespace tandem {
namespace {

std::string_view TrimWs(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Record indices grouped by category, categories in name order.
std::vector<std::vector<size_t>> GroupByCategory(const std::vector<Record>& records) {
  std::map<std::string, std::vector<size_t>> groups;
  for (size_t i = 0; i < records.size(); ++i) groups[records[i].category].push_back(i);
  std::vector<std::vector<size_t>> out;
  out.reserve(groups.size());
  for (auto& [name, idx] : groups) out.push_back(std::move(idx));
  return out;
}

std::vector<std::vector<size_t>> Iid(size_t n, int k, Rng* rng) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  detail::Shuffle(&order, rng);
  std::vector<std::vector<size_t>> clients(k);
  for (size_t i = 0; i < n; ++i) clients[i % k].push_back(order[i]);
  return clients;
}

std::vector<std::vector<size_t>> ByCategory(std::vector<std::vector<size_t>> groups, int k,
                                            Rng* rng) {
  detail::Shuffle(&groups, rng);
  std::stable_sort(groups.begin(), groups.end(),
                   [](const auto& a, const auto& b) { return a.size() > b.size(); });
  std::vector<std::vector<size_t>> clients(k);
  for (const std::vector<size_t>& g : groups) {
    auto smallest = std::min_element(clients.begin(), clients.end(), [](const auto& a, const auto& b) {
      return a.size() < b.size();
    });
    smallest->insert(smallest->end(), g.begin(), g.end());
  }
  return clients;
}

std::vector<std::vector<size_t>> Dirichlet(std::vector<std::vector<size_t>> groups, int k,
                                           double alpha, Rng* rng) {
  std::vector<std::vector<size_t>> clients(k);
  std::vector<double> p(k);
  for (std::vector<size_t>& g : groups) {
    double sum = 0.0;
    for (int c = 0; c < k; ++c) sum += (p[c] = rng->Gamma(alpha));
    if (!(sum > 0.0)) {
      // Every Gamma draw underflowed (possible for tiny alpha): the limit is one client.
      std::fill(p.begin(), p.end(), 0.0);
      p[rng->Below(k)] = sum = 1.0;
    }
    detail::Shuffle(&g, rng);
    const double n = static_cast<double>(g.size());
    double cum = 0.0;
    size_t begin = 0;
    for (int c = 0; c < k; ++c) {
      cum += p[c] / sum;
      size_t end = (c == k - 1) ? g.size()
                                : std::min(g.size(), static_cast<size_t>(std::llround(cum * n)));
      end = std::max(end, begin);
      clients[c].insert(clients[c].end(), g.begin() + begin, g.begin() + end);
      begin = end;
    }
  }
  return clients;
}

}  // namespace

std::string PartitionSpec::ToString() const {
  switch (kind) {
    case PartitionKind::kIid: return "iid";
    case PartitionKind::kByCategory: return "by-category";
    case PartitionKind::kDirichlet: {
      std::ostringstream ss;
      ss << "dirichlet(" << alpha << ")";
      return ss.str();
    }
  }
  return "?";
}

StatusOr<PartitionSpec> ParsePartitionSpec(std::string_view text) {
  const std::string_view s = TrimWs(text);
  const std::string expected =
      " (expected \"iid\", \"by-category\" or \"dirichlet(ALPHA)\" with ALPHA > 0, e.g. "
      "\"dirichlet(0.5)\")";
  if (s == "iid") return PartitionSpec{PartitionKind::kIid, 0.0};
  if (s == "by-category") return PartitionSpec{PartitionKind::kByCategory, 0.0};
  constexpr std::string_view kPrefix = "dirichlet";
  if (s.substr(0, kPrefix.size()) == kPrefix) {
    std::string_view rest = TrimWs(s.substr(kPrefix.size()));
    if (rest.size() < 2 || rest.front() != '(' || rest.back() != ')') {
      return Status::InvalidArgument("partition \"" + std::string(text) +
                                     "\": dirichlet needs its alpha in parentheses" + expected);
    }
    const std::string_view num = TrimWs(rest.substr(1, rest.size() - 2));
    double alpha = 0.0;
    auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), alpha);
    if (num.empty() || ec != std::errc() || ptr != num.data() + num.size()) {
      return Status::InvalidArgument("partition \"" + std::string(text) + "\": alpha \"" +
                                     std::string(num) + "\" is not a number" + expected);
    }
    if (!(alpha > 0.0) || !std::isfinite(alpha)) {
      return Status::InvalidArgument("partition \"" + std::string(text) +
                                     "\": alpha must be a positive finite number" + expected);
    }
    return PartitionSpec{PartitionKind::kDirichlet, alpha};
  }
  return Status::InvalidArgument("unknown partition \"" + std::string(text) + "\"" + expected);
}

StatusOr<PartitionSpec> PartitionSpecFromConfig(const Config& config) {
  TANDEM_ASSIGN_OR_RETURN(std::string text,
                          config.GetString("federation.partition", "by-category"));
  StatusOr<PartitionSpec> spec = ParsePartitionSpec(text);
  if (!spec.ok()) {
    return Status::InvalidArgument(config.source() + ": federation.partition: " +
                                   spec.status().message());
  }
  return spec;
}

StatusOr<std::vector<std::vector<size_t>>> PartitionRecords(const std::vector<Record>& records,
                                                            const PartitionSpec& spec,
                                                            int num_clients, uint64_t seed) {
  if (num_clients < 1) {
    return Status::InvalidArgument("cannot partition across " + std::to_string(num_clients) +
                                   " clients; need at least 1");
  }
  Rng rng(seed);
  std::vector<std::vector<size_t>> clients;
  switch (spec.kind) {
    case PartitionKind::kIid:
      if (records.size() < static_cast<size_t>(num_clients)) {
        return Status::InvalidArgument("iid partition of " + std::to_string(records.size()) +
                                       " records across " + std::to_string(num_clients) +
                                       " clients would leave clients empty");
      }
      clients = Iid(records.size(), num_clients, &rng);
      break;
    case PartitionKind::kByCategory: {
      std::vector<std::vector<size_t>> groups = GroupByCategory(records);
      if (groups.size() < static_cast<size_t>(num_clients)) {
        return Status::InvalidArgument(
            "by-category partition needs at least as many categories as clients: the corpus has " +
            std::to_string(groups.size()) + " categories for " + std::to_string(num_clients) +
            " clients; use fewer clients or dirichlet(ALPHA)");
      }
      clients = ByCategory(std::move(groups), num_clients, &rng);
      break;
    }
    case PartitionKind::kDirichlet:
      if (!(spec.alpha > 0.0) || !std::isfinite(spec.alpha)) {
        return Status::InvalidArgument("dirichlet partition alpha = " +
                                       std::to_string(spec.alpha) +
                                       " must be a positive finite number");
      }
      clients = Dirichlet(GroupByCategory(records), num_clients, spec.alpha, &rng);
      break;
  }
  for (std::vector<size_t>& c : clients) std::sort(c.begin(), c.end());
  return clients;
}

}  // namespace tandem

// The SecAgg+ communication graph (privacy/secagg_graph.h, Bell et al. 2020): the complete graph,
// and the Harary graph over a seeded permutation, regular and symmetric.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "privacy/secagg.h"
#include "privacy/secagg_graph.h"

namespace tandem::privacy {
namespace {

// ---- Graph. ----

TEST(SecAggGraphTest, CompleteGraph) {
  SecAggGraph g(6, 0, 1);
  EXPECT_TRUE(g.complete());
  for (uint32_t i = 0; i < 6; ++i) {
    auto n = g.Neighbours(i);
    EXPECT_EQ(n.size(), 5u);
    EXPECT_EQ(std::count(n.begin(), n.end(), i), 0);
    EXPECT_TRUE(std::is_sorted(n.begin(), n.end()));
  }
  // k >= n - 1 is the complete graph too.
  EXPECT_TRUE(SecAggGraph(6, 5, 1).complete());
  EXPECT_TRUE(SecAggGraph(6, 9, 1).complete());
}

TEST(SecAggGraphTest, HararyGraphIsRegularSymmetricAndSeeded) {
  for (uint32_t n : {9u, 10u, 50u, 101u}) {
    for (int k : {2, 3, 4, 7, 8}) {
      if (static_cast<uint32_t>(k) >= n - 1) continue;  // complete
      SecAggGraph g(n, k, 42);
      ASSERT_FALSE(g.complete());
      for (uint32_t i = 0; i < n; ++i) {
        auto nb = g.Neighbours(i);
        const size_t want = (k % 2 == 1 && n % 2 == 1) ? k + 1 : k;
        EXPECT_EQ(nb.size(), want) << "n=" << n << " k=" << k << " node " << i;
        EXPECT_TRUE(std::is_sorted(nb.begin(), nb.end()));
        EXPECT_EQ(std::adjacent_find(nb.begin(), nb.end()), nb.end());
        for (uint32_t j : nb) {
          EXPECT_NE(j, i);
          EXPECT_TRUE(g.Adjacent(j, i)) << "asymmetric edge " << i << "-" << j;
        }
      }
    }
  }
  // Same inputs, same graph; another seed, another graph.
  SecAggGraph a(50, 8, 7), b(50, 8, 7), c(50, 8, 8);
  bool same = true, differs = false;
  for (uint32_t i = 0; i < 50; ++i) {
    auto na = a.Neighbours(i), nb = b.Neighbours(i), nc = c.Neighbours(i);
    same = same && std::equal(na.begin(), na.end(), nb.begin(), nb.end());
    differs = differs || !std::equal(na.begin(), na.end(), nc.begin(), nc.end());
  }
  EXPECT_TRUE(same);
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace tandem::privacy

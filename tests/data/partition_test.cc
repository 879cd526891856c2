// Tests for the iid, by-category and Dirichlet partitioners and the partition-spec parser.

#include "data/partition.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/config.h"

namespace tandem {
namespace {

using Clients = std::vector<std::vector<size_t>>;

constexpr int kCategories = 20;
constexpr int kPerCategory = 200;

std::vector<Record> Synthetic() {
  std::vector<Record> records;
  for (int i = 0; i < kPerCategory; ++i) {  // interleaved, so order does not give categories away
    for (int c = 0; c < kCategories; ++c) {
      records.push_back({"r" + std::to_string(i), "cat" + std::to_string(c)});
    }
  }
  return records;
}

void ExpectExactCover(size_t n, const Clients& clients) {
  std::vector<int> seen(n, 0);
  for (const auto& c : clients) {
    EXPECT_TRUE(std::is_sorted(c.begin(), c.end()));
    for (size_t i : c) {
      ASSERT_LT(i, n);
      ++seen[i];
    }
  }
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(seen[i], 1) << "record " << i;
}

// Total-variation distance between a client's category distribution and the global one.
double TvDistance(const std::vector<Record>& records, const std::vector<size_t>& client) {
  std::map<std::string, double> global, local;
  for (const Record& r : records) global[r.category] += 1.0 / records.size();
  for (size_t i : client) local[records[i].category] += 1.0 / client.size();
  double tv = 0.0;
  for (const auto& [cat, p] : global) tv += std::abs(p - (local.count(cat) ? local[cat] : 0.0));
  return 0.5 * tv;
}

Clients Partition(const std::string& spec_text, int k, uint64_t seed) {
  auto spec = ParsePartitionSpec(spec_text);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  auto clients = PartitionRecords(Synthetic(), *spec, k, seed);
  EXPECT_TRUE(clients.ok()) << clients.status().ToString();
  EXPECT_EQ(clients->size(), static_cast<size_t>(k));
  return *clients;
}

TEST(PartitionSpecTest, ParsesAndRoundTrips) {
  for (const char* text : {"iid", "by-category", "dirichlet(0.5)", "dirichlet(1000)"}) {
    auto spec = ParsePartitionSpec(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status().ToString();
    EXPECT_EQ(spec->ToString(), text);
  }
  auto spaced = ParsePartitionSpec(" dirichlet ( 0.05 ) ");
  ASSERT_TRUE(spaced.ok());
  EXPECT_EQ(spaced->kind, PartitionKind::kDirichlet);
  EXPECT_DOUBLE_EQ(spaced->alpha, 0.05);
}

TEST(PartitionSpecTest, RejectsMalformedSpecsWithUsefulMessages) {
  for (const char* text : {"", "IID", "random", "dirichlet", "dirichlet()", "dirichlet(abc)",
                           "dirichlet(0)", "dirichlet(-1)", "dirichlet(inf)", "dirichlet(0.5",
                           "dirichlet(0.5)x", "dirichlet(1e999)"}) {
    auto spec = ParsePartitionSpec(text);
    ASSERT_FALSE(spec.ok()) << "accepted \"" << text << "\"";
    EXPECT_NE(spec.status().message().find("dirichlet(ALPHA)"), std::string::npos)
        << spec.status().message();
  }
}

// The reader the client and the coordinator share: the error names the file and the key.
TEST(PartitionSpecTest, FromConfigNamesFileAndKey) {
  auto config = Config::Parse("[federation]\npartition = \"bycategory\"\n", "p.toml");
  ASSERT_TRUE(config.ok());
  auto spec = PartitionSpecFromConfig(*config);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("p.toml: federation.partition: unknown partition "
                                         "\"bycategory\""),
            std::string::npos)
      << spec.status().message();
  auto fallback = PartitionSpecFromConfig(*Config::Parse("", "empty.toml"));
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(fallback->kind, PartitionKind::kByCategory);
}

TEST(PartitionTest, EveryKindIsDisjointCompleteAndReproducible) {
  for (const char* spec : {"iid", "by-category", "dirichlet(0.5)"}) {
    SCOPED_TRACE(spec);
    const Clients a = Partition(spec, 7, 11);
    ExpectExactCover(kCategories * kPerCategory, a);
    EXPECT_EQ(a, Partition(spec, 7, 11));
    EXPECT_NE(a, Partition(spec, 7, 12));
  }
}

TEST(PartitionTest, IidSizesDifferByAtMostOne) {
  const Clients c = Partition("iid", 7, 1);
  size_t lo = SIZE_MAX, hi = 0;
  for (const auto& v : c) lo = std::min(lo, v.size()), hi = std::max(hi, v.size());
  EXPECT_LE(hi - lo, 1u);
}

TEST(PartitionTest, ByCategoryPutsEachCategoryInOneClientAndBalances) {
  const auto records = Synthetic();
  const Clients c = Partition("by-category", 5, 3);
  std::map<std::string, std::set<size_t>> owners;
  for (size_t k = 0; k < c.size(); ++k) {
    for (size_t i : c[k]) owners[records[i].category].insert(k);
  }
  EXPECT_EQ(owners.size(), static_cast<size_t>(kCategories));
  for (const auto& [cat, o] : owners) EXPECT_EQ(o.size(), 1u) << cat;
  // 20 equal categories over 5 clients: 4 each.
  for (const auto& v : c) EXPECT_EQ(v.size(), 4u * kPerCategory);
}

TEST(PartitionTest, ByCategoryNeedsEnoughCategories) {
  auto c = PartitionRecords(Synthetic(), {PartitionKind::kByCategory}, kCategories + 1, 1);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("categories"), std::string::npos);
}

TEST(PartitionTest, LargeAlphaLooksIid) {
  const auto records = Synthetic();
  const Clients c = Partition("dirichlet(1000)", 10, 5);
  double max_tv = 0.0;
  for (const auto& v : c) {
    ASSERT_FALSE(v.empty());
    max_tv = std::max(max_tv, TvDistance(records, v));
  }
  EXPECT_LT(max_tv, 0.1);
}

TEST(PartitionTest, SmallAlphaConcentratesCategories) {
  const auto records = Synthetic();
  const Clients c = Partition("dirichlet(0.05)", 10, 5);
  double sum_tv = 0.0;
  int nonempty = 0, dominated = 0;
  for (const auto& v : c) {
    if (v.empty()) continue;
    ++nonempty;
    sum_tv += TvDistance(records, v);
    std::map<std::string, size_t> counts;
    for (size_t i : v) ++counts[records[i].category];
    std::vector<size_t> sizes;
    for (const auto& [cat, n] : counts) sizes.push_back(n);
    std::sort(sizes.rbegin(), sizes.rend());
    size_t top3 = 0;
    for (size_t j = 0; j < sizes.size() && j < 3; ++j) top3 += sizes[j];
    dominated += top3 >= 0.8 * v.size();
  }
  ASSERT_GT(nonempty, 0);
  EXPECT_GT(sum_tv / nonempty, 0.5);
  EXPECT_GT(dominated, nonempty / 2);
}

TEST(PartitionTest, InvalidArgumentsAreErrors) {
  // Each refused for its own reason, named in the message.
  auto expect_refused = [](const StatusOr<std::vector<std::vector<size_t>>>& got,
                           const std::string& why) {
    ASSERT_FALSE(got.ok()) << why;
    EXPECT_EQ(got.status().code(), StatusCode::kInvalidArgument) << why;
    EXPECT_NE(got.status().message().find(why), std::string::npos) << got.status().ToString();
  };
  expect_refused(PartitionRecords(Synthetic(), {PartitionKind::kIid}, 0, 1), "need at least 1");
  expect_refused(PartitionRecords(Synthetic(), {PartitionKind::kDirichlet, 0.0}, 3, 1),
                 "must be a positive finite number");
  expect_refused(PartitionRecords({{"a", "x"}}, {PartitionKind::kIid}, 2, 1),
                 "would leave clients empty");
}

}  // namespace
}  // namespace tandem

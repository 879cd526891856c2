// Tests for train / validation / test / public splits.

#include "data/split.h"

#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tandem {
namespace {

std::vector<Record> Synthetic(int categories, int per_category) {
  std::vector<Record> records;
  for (int c = 0; c < categories; ++c) {
    for (int i = 0; i < per_category; ++i) {
      records.push_back({"r" + std::to_string(c) + "_" + std::to_string(i),
                         "cat" + std::to_string(c)});
    }
  }
  return records;
}

SplitSpec Spec(double public_fraction, double validation_fraction, double test_fraction,
               std::vector<std::string> public_categories = {}) {
  SplitSpec spec;
  spec.public_fraction = public_fraction;
  spec.validation_fraction = validation_fraction;
  spec.test_fraction = test_fraction;
  spec.public_categories = std::move(public_categories);
  return spec;
}

// Every index of `n` in exactly one of the lists.
void ExpectExactCover(size_t n, const SplitIndices& s) {
  std::vector<int> seen(n, 0);
  for (const auto* v : {&s.train, &s.validation, &s.test, &s.public_}) {
    for (size_t i : *v) {
      ASSERT_LT(i, n);
      ++seen[i];
    }
  }
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(seen[i], 1) << "record " << i;
}

TEST(SplitTest, DisjointCompleteAndSizedByFractions) {
  const auto records = Synthetic(10, 100);
  const SplitSpec spec = Spec(0.2, 0.1, 0.15);
  auto s = SplitRecordIndices(records, spec, 1);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ExpectExactCover(records.size(), *s);
  EXPECT_EQ(s->public_.size(), 200u);
  EXPECT_EQ(s->validation.size(), 100u);
  EXPECT_EQ(s->test.size(), 150u);
  EXPECT_EQ(s->train.size(), 550u);
}

TEST(SplitTest, ReproducibleFromSeedAndSeedMatters) {
  const auto records = Synthetic(5, 100);
  SplitSpec spec;
  auto a = SplitRecordIndices(records, spec, 42);
  auto b = SplitRecordIndices(records, spec, 42);
  auto c = SplitRecordIndices(records, spec, 43);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->train, b->train);
  EXPECT_EQ(a->validation, b->validation);
  EXPECT_EQ(a->test, b->test);
  EXPECT_NE(a->validation, c->validation);
}

TEST(SplitTest, PublicCategoriesGoWholeToPublic) {
  const auto records = Synthetic(6, 50);
  const SplitSpec spec = Spec(0.1, 0.1, 0.1, {"cat1", "cat4"});
  auto s = SplitRecordIndices(records, spec, 3);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ExpectExactCover(records.size(), *s);
  const std::set<std::string> pub = {"cat1", "cat4"};
  for (const auto* v : {&s->train, &s->validation, &s->test}) {
    for (size_t i : *v) EXPECT_EQ(pub.count(records[i].category), 0u) << records[i].category;
  }
  size_t public_cat_records = 0;
  for (size_t i : s->public_) public_cat_records += pub.count(records[i].category);
  EXPECT_EQ(public_cat_records, 100u);
  // Plus 10% of the 200 private-category records.
  EXPECT_EQ(s->public_.size(), 120u);

  auto splits = SplitRecords(records, spec, 3);
  ASSERT_TRUE(splits.ok());
  EXPECT_EQ(splits->public_.size(), 120u);
  EXPECT_EQ(splits->train, SelectRecords(records, s->train));
}

TEST(SplitTest, InvalidSpecsAreErrors) {
  const auto records = Synthetic(3, 10);
  EXPECT_FALSE(SplitRecords(records, Spec(0.0, -0.1, 0.1), 1).ok());
  EXPECT_FALSE(SplitRecords(records, Spec(0.0, 0.1, 1.5), 1).ok());
  EXPECT_FALSE(SplitRecords(records, Spec(0.5, 0.3, 0.3), 1).ok());
  EXPECT_TRUE(SplitRecords(records, Spec(0.5, 0.3, 0.2), 1).ok());
  auto unknown = SplitRecords(records, Spec(0.0, 0.1, 0.1, {"nope"}), 1);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("nope"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("cat0"), std::string::npos);
}

}  // namespace
}  // namespace tandem

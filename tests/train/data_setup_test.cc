// The data section of a config: the split's seed follows the run's seed unless data.seed pins it,
// so runs on several seeds can be scored on one held-out set.
#include "train/data_setup.h"

#include <gtest/gtest.h>

#include "core/config.h"

namespace tandem {
namespace {

DataConfig Read(const std::string& text) {
  auto config = Config::Parse(text);
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  auto data = DataConfigFromConfig(*config);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  return data.ok() ? *data : DataConfig{};
}

TEST(DataSetupTest, TheSplitSeedFollowsTheRunUnlessPinned) {
  EXPECT_EQ(Read("seed = 3\n").seed, 3u);
  EXPECT_EQ(Read("seed = 3\n[data]\nseed = 1\n").seed, 1u);
  auto negative = Config::Parse("[data]\nseed = -1\n");
  ASSERT_TRUE(negative.ok());
  EXPECT_FALSE(DataConfigFromConfig(*negative).ok());
}

TEST(DataSetupTest, PinnedSeedsGiveTheSameHeldOutRecords) {
  const std::string pinned = "[data]\nsource = \"fortunes\"\nseed = 1\n";
  auto a = LoadSplits(Read("seed = 2\n" + pinned));
  auto b = LoadSplits(Read("seed = 5\n" + pinned));
  auto c = LoadSplits(Read("seed = 5\n[data]\nsource = \"fortunes\"\n"));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_FALSE(a->validation.empty());
  ASSERT_EQ(a->validation.size(), b->validation.size());
  for (size_t i = 0; i < a->validation.size(); ++i) {
    EXPECT_EQ(a->validation[i].text, b->validation[i].text);
  }
  bool differs = false;
  for (size_t i = 0; i < a->validation.size() && i < c->validation.size(); ++i) {
    differs |= a->validation[i].text != c->validation[i].text;
  }
  EXPECT_TRUE(differs) << "another run seed, unpinned, should shuffle the split differently";
}

}  // namespace
}  // namespace tandem

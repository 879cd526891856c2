// The data section of a config: the split's seed follows the run's seed unless data.seed pins it,
// so runs on several seeds can be scored on one held-out set.
#include "train/data_setup.h"

#include <fstream>
#include <set>

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


StatusOr<DataConfig> TryRead(const std::string& text) {
  auto config = Config::Parse(text, "x.toml");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return DataConfigFromConfig(*config);
}

TEST(DataSetupTest, CrossLingualKeysAreValidated) {
  const DataConfig d = Read("[data]\nlanguages = [\"fortunes-de\", \"fortunes-es\"]\n"
                            "clients_per_language = 3\ntransfer_categories = 2\n");
  EXPECT_TRUE(d.cross_lingual());
  EXPECT_EQ(d.xling.clients_per_language, 3);
  EXPECT_EQ(d.xling.transfer_categories, 2);
  EXPECT_TRUE(CheckCrossLingualClients(d, 6).ok());
  const Status wrong = CheckCrossLingualClients(d, 4);
  EXPECT_NE(wrong.message().find("federation.clients = 6"), std::string::npos) << wrong.message();
  EXPECT_FALSE(Read("").cross_lingual());
  EXPECT_TRUE(CheckCrossLingualClients(Read(""), 4).ok());

  auto english = TryRead("[data]\nlanguages = [\"fortunes\"]\n");
  EXPECT_FALSE(english.ok());
  auto twice = TryRead("[data]\nlanguages = [\"fortunes-de\", \"fortunes-de\"]\n");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("x.toml"), std::string::npos);
  EXPECT_FALSE(TryRead("[data]\nsource = \"arithmetic\"\nlanguages = [\"fortunes-de\"]\n").ok());
  EXPECT_FALSE(TryRead("[data]\nlanguages = [\"fortunes-de\"]\nclients_per_language = 0\n").ok());
}

// The installed packages (scripts/install-deps.sh): the xling configs' setup loads, its held-out
// sets mix the languages from their first record on, and the client private data, the transfer
// pool and the held-out sets share no text.
TEST(DataSetupTest, CrossLingualSplitsOfTheInstalledPackages) {
  for (const char* p : {"fortunes", "fortunes-de", "fortunes-it"}) {
    if (!std::ifstream(std::string("/var/lib/dpkg/info/") + p + ".list")) {
      GTEST_SKIP() << p << " not installed (scripts/install-deps.sh)";
    }
  }
  const DataConfig d = Read("[data]\nlanguages = [\"fortunes-de\", \"fortunes-it\"]\n"
                            "transfer_categories = 2\nseed = 1\n");
  auto a = LoadSplits(d);
  auto b = LoadSplits(d);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->train, b->train);
  EXPECT_EQ(a->public_, b->public_);
  EXPECT_EQ(a->validation, b->validation);
  std::set<std::string> train, pool, held_out;
  for (const Record& r : a->train) train.insert(r.text);
  for (const Record& r : a->public_) pool.insert(r.text);
  for (const auto* v : {&a->validation, &a->test}) {
    for (const Record& r : *v) held_out.insert(r.text);
  }
  for (const std::string& t : pool) EXPECT_FALSE(train.count(t) || held_out.count(t));
  for (const std::string& t : held_out) EXPECT_FALSE(train.count(t));
  std::set<std::string> pool_languages, first_languages;
  for (const Record& r : a->public_) pool_languages.insert(LanguageOf(r));
  EXPECT_EQ(pool_languages, (std::set<std::string>{"de", "it"}));
  for (size_t i = 0; i < 100 && i < a->validation.size(); ++i) {
    first_languages.insert(LanguageOf(a->validation[i]));
  }
  EXPECT_EQ(first_languages, (std::set<std::string>{"de", "en", "it"}));
}

}  // namespace
}  // namespace tandem

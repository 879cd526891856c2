// Config: typed reads, errors that name file, line and key, --set overrides, unknown keys.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "core/config.h"

namespace tandem {
namespace {

TEST(ConfigTest, ReadsTypedValuesAndDefaults) {
  auto c = Config::Parse("[train]\nsteps = 10\nlr = 0.5\nname = \"x\"\nfast = true\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(*c->GetInt("train.steps", 1), 10);
  EXPECT_DOUBLE_EQ(*c->GetDouble("train.lr", 0.0), 0.5);
  EXPECT_DOUBLE_EQ(*c->GetDouble("train.steps", 0.0), 10.0);  // integers read as numbers
  EXPECT_EQ(*c->GetString("train.name", ""), "x");
  EXPECT_TRUE(*c->GetBool("train.fast", false));
  EXPECT_EQ(*c->GetInt("train.missing", 7), 7);
}

TEST(ConfigTest, SyntaxErrorNamesFileAndLine) {
  auto c = Config::Parse("[train]\nsteps = = 3\n", "bad.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("bad.toml:2"), std::string::npos) << c.status().message();
}

TEST(ConfigTest, WrongTypeNamesFileLineKeyAndExpectation) {
  auto c = Config::Parse("[train]\n\nsteps = \"many\"\n", "run.toml");
  ASSERT_TRUE(c.ok());
  auto v = c->GetInt("train.steps", 1);
  ASSERT_FALSE(v.ok());
  const std::string& m = v.status().message();
  EXPECT_NE(m.find("run.toml:3"), std::string::npos) << m;
  EXPECT_NE(m.find("train.steps"), std::string::npos) << m;
  EXPECT_NE(m.find("expected an integer"), std::string::npos) << m;
  EXPECT_NE(m.find("a string"), std::string::npos) << m;
}

TEST(ConfigTest, OutOfRangeIsAnError) {
  auto c = Config::Parse("steps = -3\nlr = 2.0\n", "r.toml");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->GetInt("steps", 1, 1).ok());
  EXPECT_NE(c->GetInt("steps", 1, 1).status().message().find("got -3"), std::string::npos);
  EXPECT_FALSE(c->GetDouble("lr", 0.1, 0.0, 1.0).ok());
}

TEST(ConfigTest, ChoiceListsTheOptions) {
  auto c = Config::Parse("kind = \"dirichlet\"\n", "c.toml");
  auto v = c->GetChoice("kind", "iid", {"iid", "by-category"});
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("iid, by-category"), std::string::npos);
}

TEST(ConfigTest, OverridesSetNewAndExistingKeys) {
  auto c = Config::Parse("[train]\nsteps = 10\n", "o.toml");
  ASSERT_TRUE(c->ApplyOverride("train.steps=20").ok());
  ASSERT_TRUE(c->ApplyOverride("model.preset=slm-tiny").ok());  // bare word becomes a string
  ASSERT_TRUE(c->ApplyOverride("privacy.dp.noise_multiplier=1.1").ok());
  EXPECT_EQ(*c->GetInt("train.steps", 0), 20);
  EXPECT_EQ(*c->GetString("model.preset", ""), "slm-tiny");
  EXPECT_DOUBLE_EQ(*c->GetDouble("privacy.dp.noise_multiplier", 0), 1.1);
  EXPECT_FALSE(c->ApplyOverride("novalue").ok());
  EXPECT_FALSE(c->ApplyOverride("train.steps.deeper=1").ok());  // steps is a value, not a table
  EXPECT_FALSE(c->ApplyOverride("a..b=1").ok());
}

TEST(ConfigTest, UnknownKeysAreReported) {
  auto c = Config::Parse("[train]\nsteps = 10\nstpes = 3\n", "u.toml");
  ASSERT_TRUE(c.ok());
  (void)c->GetInt("train.steps", 1);
  Status s = c->CheckAllKeysUsed();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("train.stpes"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("train.steps,"), std::string::npos);
}

// "Keys listed nowhere": a misspelt key names the key it most likely meant.
TEST(ConfigTest, MisspeltKeySuggestsTheNearestKnownKey) {
  auto c = Config::Parse("[train]\nsteps = 10\n", "u.toml");
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->ApplyOverride("train.stpes=3").ok());
  (void)c->GetInt("train.steps", 1);
  (void)c->GetDouble("train.lr", 1e-3);
  Status s = c->CheckAllKeysUsed();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("train.stpes"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("did you mean train.steps?"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("docs/config.md"), std::string::npos) << s.message();
}

TEST(ConfigTest, KeyInTheWrongSectionSuggestsItsSection) {
  auto c = Config::Parse("[federation]\nclients = 4\n[client]\nrounds = 5\nlr = 0.1\n", "w.toml");
  ASSERT_TRUE(c.ok());
  (void)c->GetInt("federation.clients", 4);
  (void)c->GetInt("federation.rounds", 1);
  (void)c->GetDouble("client.lr", 1e-3);
  Status s = c->CheckAllKeysUsed();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("w.toml:4: client.rounds (did you mean federation.rounds?)"),
            std::string::npos)
      << s.message();
}

TEST(ConfigTest, FarFromEveryKnownKeyHasNoSuggestion) {
  auto c = Config::Parse("zebra = 1\nsteps = 2\n", "z.toml");
  (void)c->GetInt("steps", 1);
  Status s = c->CheckAllKeysUsed();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message().find("did you mean"), std::string::npos) << s.message();
}

// "Switching privacy off with --set privacy.dp.enabled=false fails with a false spelling error":
// a section switched off ignores its other keys, whatever section it is.
TEST(ConfigTest, SectionSwitchedOffIgnoresItsOtherKeys) {
  auto c = Config::Parse(
      "[privacy.dp]\nenabled = true\nnoise_multiplier = 1.1\nclip_norm = 0.5\n"
      "[some.feature]\nenabled = false\nknob = \"anything\"\n",
      "off.toml");
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->ApplyOverride("privacy.dp.enabled=false").ok());
  EXPECT_FALSE(*c->GetBool("privacy.dp.enabled", false));
  EXPECT_FALSE(*c->GetBool("some.feature.enabled", true));
  EXPECT_TRUE(c->CheckAllKeysUsed().ok()) << c->CheckAllKeysUsed().message();
}

TEST(ConfigTest, SectionSwitchedOnStillReportsUnknownKeys) {
  auto c = Config::Parse("[privacy.dp]\nenabled = true\nnoise_multiplyer = 1.1\n", "on.toml");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(*c->GetBool("privacy.dp.enabled", false));
  (void)c->GetDouble("privacy.dp.noise_multiplier", 1.0);
  Status s = c->CheckAllKeysUsed();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("did you mean privacy.dp.noise_multiplier?"), std::string::npos)
      << s.message();
}

TEST(ConfigTest, AnEnabledKeyNobodyReadSwitchesNothingOff) {
  // `enabled = false` only counts when the section's reader asked for it.
  auto c = Config::Parse("[x]\nenabled = false\nknob = 1\n", "n.toml");
  Status s = c->CheckAllKeysUsed();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("x.knob"), std::string::npos) << s.message();
}

// Describe mode: what docs/config.md is generated from.
TEST(ConfigTest, RecordingCapturesWhatEachGetterAskedFor) {
  auto c = Config::Parse("[a]\nn = 3\n", "rec.toml");
  std::vector<ConfigKeyRecord> records;
  c->RecordKeysTo(&records);
  Config copy = *c;  // copies record into the same sink
  (void)c->GetInt("a.n", 1, 0, 10);
  (void)copy.GetDouble("a.x", 0.5, 0.0);
  (void)c->GetChoice("a.kind", "iid", {"iid", "by-category"});
  (void)c->GetBool("a.on", true);
  ASSERT_TRUE(c->RequireString("a.path").ok());  // describe mode reads on past a missing key
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(records[0].key, "a.n");
  EXPECT_EQ(records[0].type, "integer");
  EXPECT_EQ(records[0].def, "1");
  EXPECT_EQ(records[0].range, "[0, 10]");
  EXPECT_EQ(records[1].type, "number");
  EXPECT_EQ(records[1].range, ">= 0");
  EXPECT_EQ(records[2].def, "\"iid\"");
  EXPECT_EQ(records[2].range, "one of \"iid\", \"by-category\"");
  EXPECT_EQ(records[3].def, "true");
  EXPECT_EQ(records[4].def, "(required)");
  c->RecordKeysTo(nullptr);
  (void)c->GetInt("a.n", 1);
  EXPECT_EQ(records.size(), 5u);
  EXPECT_FALSE(c->RequireString("a.path").ok());
}

TEST(ConfigTest, MissingFileIsNotFound) {
  auto c = Config::LoadFile("/nonexistent/dir/x.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
}

TEST(ConfigTest, ToTomlRoundTrips) {
  auto c = Config::Parse("[a]\nb = 1\nc = \"x\"\n", "r.toml");
  ASSERT_TRUE(c->ApplyOverride("a.d=2.5").ok());
  auto again = Config::Parse(c->ToToml(), "again");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again->GetInt("a.b", 0), 1);
  EXPECT_DOUBLE_EQ(*again->GetDouble("a.d", 0), 2.5);
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// `tandem run` with in-process clients hands every client thread the same config, and each reads
// its keys (and defaults) while the coordinator reads too. The record of keys read used to be an
// unguarded std::set and std::map, so concurrent getters raced (found by ThreadSanitizer in
// fedsgd_test; this test is in the thread tree too).
TEST(ConfigTest, ConcurrentGettersRecordEveryKeyRead) {
  auto c = Config::Parse("[train]\nsteps = 10\n", "t.toml");
  ASSERT_TRUE(c.ok());
  const Config& config = *c;
  constexpr int kThreads = 4;
  constexpr int kKeys = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&config, t] {
      for (int k = 0; k < kKeys; ++k) {
        EXPECT_EQ(*config.GetInt("train.steps", 1, 1, 100), 10);
        const std::string key = "absent.t" + std::to_string(t) + "_" + std::to_string(k);
        EXPECT_EQ(*config.GetInt(key, k, 0, kKeys), k);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_TRUE(config.CheckAllKeysUsed().ok());
  const std::string resolved = config.ResolvedToml();
  for (int t = 0; t < kThreads; ++t) {
    for (int k = 0; k < kKeys; k += 37) {
      const std::string line =
          "'absent.t" + std::to_string(t) + "_" + std::to_string(k) + "' = " + std::to_string(k);
      EXPECT_NE(resolved.find(line), std::string::npos) << line;
    }
  }
}

}  // namespace
}  // namespace tandem

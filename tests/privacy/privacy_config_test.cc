// The [privacy.dp] / [privacy.secagg] builder: defaults, every rejection the issue names (ε ≤ 0,
// δ ∉ (0,1), a clip norm ≤ 0, a threshold the dropout rate breaks, a ring too small), and keys of
// a section that is off being left for CheckAllKeysUsed to report.
#include "privacy/privacy_config.h"

#include <gtest/gtest.h>

#include "core/config.h"

namespace tandem::privacy {
namespace {

const FederationShape kShape{.clients = 100, .cohort = 10, .min_results = 8, .rounds = 20};

StatusOr<PrivacyConfig> Build(const std::string& toml, FederationShape shape = kShape) {
  StatusOr<Config> config = Config::Parse(toml, "t.toml");
  if (!config.ok()) return config.status();
  StatusOr<PrivacyConfig> out = PrivacyConfigFromConfig(*config, shape);
  if (!out.ok()) return out.status();
  TANDEM_RETURN_IF_ERROR(config->CheckAllKeysUsed());
  return out;
}

void ExpectRejected(const std::string& toml, const std::string& needle,
                    FederationShape shape = kShape) {
  StatusOr<PrivacyConfig> c = Build(toml, shape);
  ASSERT_FALSE(c.ok()) << toml;
  EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
}

TEST(PrivacyConfigTest, OffByDefault) {
  StatusOr<PrivacyConfig> c = Build("");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->any());
}

TEST(PrivacyConfigTest, ReadsBothSectionsWithDefaults) {
  StatusOr<PrivacyConfig> c = Build(
      "[privacy.dp]\nenabled = true\nnoise_multiplier = 1.1\nclip_norm = 0.5\n"
      "noise = \"distributed\"\n[privacy.secagg]\nenabled = true\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->dp.enabled);
  EXPECT_DOUBLE_EQ(c->dp.noise_multiplier, 1.1);
  EXPECT_DOUBLE_EQ(c->dp.clip_norm, 0.5);
  EXPECT_EQ(c->dp.noise, "distributed");
  EXPECT_TRUE(c->secagg.enabled);
  EXPECT_EQ(c->secagg.threshold, DefaultThreshold(10));
  EXPECT_EQ(DefaultThreshold(10), 7);
  EXPECT_EQ(DefaultThreshold(2), 2);
}

TEST(PrivacyConfigTest, RejectsBadDpValues) {
  const std::string dp = "[privacy.dp]\nenabled = true\n";
  ExpectRejected(dp + "target_epsilon = -1\n", "target_epsilon");
  ExpectRejected(dp + "epsilon_budget = -0.5\n", "epsilon_budget");
  ExpectRejected(dp + "delta = 0\n", "delta");
  ExpectRejected(dp + "delta = 1\n", "delta");
  ExpectRejected(dp + "delta = 0.02\n", "1/clients");  // not below 1/N = 0.01
  ExpectRejected(dp + "clip_norm = 0\n", "clip_norm");
  ExpectRejected(dp + "clip_norm = -1\n", "clip_norm");
  ExpectRejected(dp + "noise_multiplier = 0\n", "noise_multiplier");
  ExpectRejected(dp + "noise_multiplier = 1\ntarget_epsilon = 2\n", "not both");
  ExpectRejected(dp + "noise = \"local\"\n", "privacy.dp.noise");
  ExpectRejected(dp + "sampling = \"stratified\"\n", "privacy.dp.sampling");
  ExpectRejected(dp + "target_epsilon = 5\nepsilon_budget = 2\n", "above");
  ExpectRejected(dp + "adaptive_clipping = true\ntarget_quantile = 1.0\n", "target_quantile");
  // σ_b must exceed z/2 or the bit count eats the whole budget.
  ExpectRejected(dp + "adaptive_clipping = true\nnoise_multiplier = 2\nbit_noise_multiplier = 1\n",
                 "bit_noise_multiplier");
  StatusOr<PrivacyConfig> ok = Build(
      dp + "adaptive_clipping = true\nnoise_multiplier = 2\nbit_noise_multiplier = 1.01\n");
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

TEST(PrivacyConfigTest, RejectsThresholdsTheDropoutRateBreaks) {
  const std::string s = "[privacy.secagg]\nenabled = true\n";
  ExpectRejected(s + "threshold = 1\n", "one share alone");
  ExpectRejected(s + "threshold = 11\n", "threshold");
  ExpectRejected(s + "threshold = 5\n", "exceed half");  // 5 of 10 is not a majority
  // 10 clients, 30 % dropout: 7 survive, so t = 8 cannot work and t = 7 can (with min_results 7).
  ExpectRejected(s + "threshold = 8\ndropout_rate = 0.3\n", "cannot tolerate");
  FederationShape shape = kShape;
  shape.min_results = 7;
  EXPECT_TRUE(Build(s + "threshold = 7\ndropout_rate = 0.3\n", shape).ok());
  // A task may close with min_results answers: they must hold t shares.
  shape.min_results = 5;
  ExpectRejected(s + "threshold = 7\ndropout_rate = 0.3\n", "min_results", shape);
  ExpectRejected(s + "dropout_rate = 1\n", "dropout_rate");
  // SecAgg+: t is per neighbourhood of k + 1.
  ExpectRejected(s + "neighbours = 4\nthreshold = 6\n", "threshold");
  ExpectRejected(s + "neighbours = 10\n", "neighbours");
  StatusOr<PrivacyConfig> plus = Build(s + "neighbours = 4\n");
  ASSERT_TRUE(plus.ok()) << plus.status().ToString();
  EXPECT_EQ(plus->secagg.threshold, DefaultThreshold(5));
}

TEST(PrivacyConfigTest, RejectsARingTheSumCouldWrap) {
  const std::string s = "[privacy.secagg]\nenabled = true\n";
  // 10 · 2^16 · 2^32 = 10·2^48 < 2^63: fits. 2^32 ring: 10 · 2^16 · 2^16 ≥ 2^31 wraps.
  EXPECT_TRUE(Build(s).ok());
  ExpectRejected(s + "modulus_bits = 32\nfraction_bits = 16\n", "could wrap");
  // 10 · 4 · 2^24 = 2^29.3 < 2^31: fits in 32 bits.
  EXPECT_TRUE(Build(s + "modulus_bits = 32\nfraction_bits = 24\nclip_range = 4\n").ok());
  // Boundary: n · c · 2^f must be strictly below 2^(k−1). With a cohort of 16, 16 · 2^3 · 2^3 =
  // 2^10 equals 2^(11−1), so k = 11 fails and k = 12 fits.
  FederationShape shape = kShape;
  shape.cohort = 16;
  shape.min_results = 16;
  ExpectRejected(s + "modulus_bits = 11\nfraction_bits = 3\nclip_range = 8\n", "could wrap", shape);
  EXPECT_TRUE(Build(s + "modulus_bits = 12\nfraction_bits = 3\nclip_range = 8\n", shape).ok());
  // Under Poisson sampling a cohort can be the whole population: 100 · 8 · 2^3 = 6400 needs 2^14.
  const std::string poisson =
      "[privacy.dp]\nenabled = true\nsampling = \"poisson\"\ndelta = 1e-3\n" + s;
  ExpectRejected(poisson + "modulus_bits = 13\nfraction_bits = 3\nclip_range = 8\n", "could wrap",
                 shape);
  shape.clients = 16;
  EXPECT_TRUE(Build(poisson + "modulus_bits = 12\nfraction_bits = 3\nclip_range = 8\n", shape).ok());
  ExpectRejected(s + "modulus_bits = 4\n", "modulus_bits");
  ExpectRejected(s + "fraction_bits = 64\n", "fraction_bits");
  ExpectRejected(s + "clip_range = 0\n", "clip_range");
}

// "Switching privacy off with --set privacy.dp.enabled=false fails with a false spelling error for
// the section's other keys": they are ignored, in both sections, however wrong they are.
TEST(PrivacyConfigTest, SectionSwitchedOffWithEnabledFalseIgnoresItsOtherKeys) {
  StatusOr<Config> config = Config::Parse(
      "[privacy.dp]\nenabled = true\nnoise_multiplier = 1.1\nclip_norm = -5\n"
      "adaptive_clipping = true\n[privacy.secagg]\nenabled = true\nthreshold = \"many\"\n"
      "neighbours = 3\n",
      "on.toml");
  ASSERT_TRUE(config.ok());
  ASSERT_TRUE(config->ApplyOverride("privacy.dp.enabled=false").ok());
  ASSERT_TRUE(config->ApplyOverride("privacy.secagg.enabled=false").ok());
  StatusOr<PrivacyConfig> c = PrivacyConfigFromConfig(*config, kShape);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->any());
  Status unknown = config->CheckAllKeysUsed();
  EXPECT_TRUE(unknown.ok()) << unknown.ToString();
}

TEST(PrivacyConfigTest, KeysOfASectionNeverSwitchedOnAreReported) {
  StatusOr<PrivacyConfig> c = Build("[privacy.dp]\nnoise_multiplier = 1.0\n");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("privacy.dp.noise_multiplier"), std::string::npos)
      << c.status().message();
}

}  // namespace
}  // namespace tandem::privacy

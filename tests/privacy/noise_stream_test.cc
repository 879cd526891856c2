// Noise streams derived from (key, run, round, task or sum): the same context gives the same
// stream, any other gives another; hex forms round-trip; the sum digest ignores arrival order.
#include "privacy/noise_stream.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace tandem::privacy {
namespace {

std::vector<uint64_t> Words(StatusOr<SecureRng> rng, int n = 8) {
  EXPECT_TRUE(rng.ok()) << rng.status().ToString();
  std::vector<uint64_t> out;
  for (int i = 0; i < n; ++i) out.push_back(rng->NextU64());
  return out;
}

TEST(NoiseStreamTest, ClientStreamsDependOnEveryPartOfTheirContext) {
  const SecureRng::Key key{1}, other_key{2};
  NoiseRunId run, other_run;
  other_run.bytes[15] = 1;
  const auto base = Words(ClientNoiseStream(key, run, 3, "fedavg.train/delta"));
  EXPECT_EQ(base, Words(ClientNoiseStream(key, run, 3, "fedavg.train/delta")));
  EXPECT_NE(base, Words(ClientNoiseStream(other_key, run, 3, "fedavg.train/delta")));
  EXPECT_NE(base, Words(ClientNoiseStream(key, other_run, 3, "fedavg.train/delta")));
  EXPECT_NE(base, Words(ClientNoiseStream(key, run, 4, "fedavg.train/delta")));
  EXPECT_NE(base, Words(ClientNoiseStream(key, run, 3, "fedavg.train/logits")));
}

TEST(NoiseStreamTest, CentralStreamsDependOnTheRoundAndTheSum) {
  const SecureRng::Key key{5};
  const NoiseRunId run;
  const std::vector<double> sum{1.0, 2.0, 3.0};
  auto digest = SumDigest({"client-1", "client-0"}, sum);
  auto reordered = SumDigest({"client-0", "client-1"}, sum);
  auto other_sum = SumDigest({"client-0", "client-1"}, std::vector<double>{1.0, 2.0, 3.5});
  auto other_set = SumDigest({"client-0", "client-2"}, sum);
  ASSERT_TRUE(digest.ok() && reordered.ok() && other_sum.ok() && other_set.ok());
  EXPECT_EQ(*digest, *reordered);
  EXPECT_NE(*digest, *other_sum);
  EXPECT_NE(*digest, *other_set);
  const auto base = Words(CentralNoiseStream(key, run, 2, *digest));
  EXPECT_EQ(base, Words(CentralNoiseStream(key, run, 2, *reordered)));
  EXPECT_NE(base, Words(CentralNoiseStream(key, run, 3, *digest)));
  EXPECT_NE(base, Words(CentralNoiseStream(key, run, 2, *other_sum)));
  // A client stream and a central stream never coincide, whatever the context.
  EXPECT_NE(base, Words(ClientNoiseStream(key, run, 2, "")));
}

TEST(NoiseStreamTest, HexFormsRoundTripAndRejectGarbage) {
  auto run = NoiseRunId::Random();
  ASSERT_TRUE(run.ok());
  auto back = NoiseRunId::FromHex(run->ToHex());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*run, *back);
  EXPECT_EQ(run->ToHex().size(), 32u);
  SecureRng::Key key{0xab, 0x01};
  auto key_back = KeyFromHex(KeyToHex(key));
  ASSERT_TRUE(key_back.ok());
  EXPECT_EQ(key, *key_back);
  EXPECT_FALSE(NoiseRunId::FromHex("00").ok());
  EXPECT_FALSE(KeyFromHex(std::string(64, 'g')).ok());
}

TEST(NoiseStreamTest, TheExperimentKeyComesFromTheEnvironmentOrNot) {
  ::unsetenv(kExperimentNoiseKeyVariable);
  auto none = ExperimentNoiseKey();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ::setenv(kExperimentNoiseKeyVariable, std::string(64, '7').c_str(), 1);
  auto some = ExperimentNoiseKey();
  ASSERT_TRUE(some.ok());
  ASSERT_TRUE(some->has_value());
  EXPECT_EQ((**some)[0], 0x77);
  ::setenv(kExperimentNoiseKeyVariable, "short", 1);
  EXPECT_FALSE(ExperimentNoiseKey().ok());
  ::unsetenv(kExperimentNoiseKeyVariable);
  // Derived keys differ by purpose.
  EXPECT_NE(*DeriveKey(SecureRng::Key{1}, "client 0"), *DeriveKey(SecureRng::Key{1}, "client 1"));
}

}  // namespace
}  // namespace tandem::privacy

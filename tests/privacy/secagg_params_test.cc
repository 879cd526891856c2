// Secure-aggregation parameters (privacy/secagg_params.h): what ValidateSecAggParams accepts and
// refuses.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/rng.h"
#include "privacy/secagg.h"
#include "privacy/secagg_graph.h"
#include "tests/privacy/secagg_test_util.h"

namespace tandem::privacy {
namespace {

using namespace testing;

// ---- Parameters. ----

TEST(SecAggParamsTest, Validation) {
  // Refused for the reason named (a check that fails for another reason would hide this one).
  auto refused_for = [](const Status& s, const std::string& why) {
    return !s.ok() && s.code() == StatusCode::kInvalidArgument &&
           s.message().find(why) != std::string::npos;
  };
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(1), 5), "must be at least 2"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(6), 5), "exceeds the cohort of 5"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(2), 1), "cohort of 1 clients"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(3, 7), 5), "modulus_bits 7"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(3, 64, 0), 5), "secagg length 0"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(6, 64, 10, 4), 50), "neighbours + 1 = 5"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(3, 64, 10, -1), 50), "neighbours -1"));
  EXPECT_TRUE(refused_for(ValidateSecAggParams(Params(3), kSecAggMaxCompleteGraph + 1),
                          "complete graph"));
  EXPECT_TRUE(ValidateSecAggParams(Params(3), 5).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(1), 5).ok());     // one share reveals the secret
  EXPECT_FALSE(ValidateSecAggParams(Params(6), 5).ok());     // t > n
  EXPECT_FALSE(ValidateSecAggParams(Params(2), 1).ok());     // no cohort
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 7), 5).ok());  // modulus too small
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 65), 5).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 64, 0), 5).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 64, kSecAggMaxLength + 1), 5).ok());
  EXPECT_TRUE(ValidateSecAggParams(Params(5, 64, 10, 4), 50).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(6, 64, 10, 4), 50).ok());  // t > k + 1
  EXPECT_FALSE(ValidateSecAggParams(Params(3, 64, 10, -1), 50).ok());
  EXPECT_FALSE(ValidateSecAggParams(Params(3), kSecAggMaxCompleteGraph + 1).ok());
  EXPECT_TRUE(ValidateSecAggParams(Params(3, 64, 10, 8), kSecAggMaxCompleteGraph + 1).ok());
  EXPECT_FALSE(SecAggServer::Create(Params(2), {"a", "b", "a"}).ok());  // duplicate id
  EXPECT_FALSE(SecAggServer::Create(Params(2), {"a", ""}).ok());
  EXPECT_FALSE(SecAggClient::Create(Params(2), std::string(kSecAggMaxClientIdBytes + 1, 'x')).ok());
}

}  // namespace
}  // namespace tandem::privacy

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

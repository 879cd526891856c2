// The client's privacy pipeline across a coordinator restart: a round replayed with the same task
// gets exactly the same noised contribution (so the replay reveals nothing new), another round or
// another run gets other noise, and a replay that would put the same noise on a different update
// is refused.
#include "client/private_handler.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace tandem {
namespace {

constexpr const char* kKind = "vec.train";

// Returns `values` as the contribution "delta".
class FixedClient : public TaskHandler {
 public:
  std::vector<std::string> Capabilities() const override { return {kKind}; }
  Status Run(uint64_t, const wire::TaskAssign&, wire::TaskResult* result) override {
    result->tensors = {wire::Tensor::Float32("delta", {values.size()}, values)};
    result->weight = 3.0;
    return Status::Ok();
  }
  std::vector<float> values = std::vector<float>(256, 0.01f);
};

const char* kRunA = "000102030405060708090a0b0c0d0e0f";
const char* kRunB = "f00102030405060708090a0b0c0d0e0f";

wire::TaskAssign Task(const std::string& run) {
  wire::TaskAssign task;
  task.kind = kKind;
  task.params["privacy.contribution"] = std::string("delta");
  task.params["privacy.length"] = int64_t{256};
  task.params["privacy.dp"] = int64_t{1};
  task.params["privacy.secagg"] = int64_t{0};
  task.params["privacy.run"] = run;
  task.params["privacy.clip_norm"] = 1.0;
  task.params["privacy.adaptive"] = int64_t{0};
  task.params["privacy.noise_stddev"] = 0.5;
  return task;
}

StatusOr<std::vector<float>> Protected(PrivateTaskHandler* handler, uint64_t round,
                                       const wire::TaskAssign& task) {
  wire::TaskResult result;
  TANDEM_RETURN_IF_ERROR(handler->Run(round, task, &result));
  return result.tensors.at(0).ToFloat32();
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(PrivateHandlerTest, AReplayedRoundGetsTheSameNoiseAndAnotherRoundOther) {
  FixedClient inner;
  PrivateTaskHandler handler(&inner);  // a key of its own, from the operating system
  auto r1 = Protected(&handler, 1, Task(kRunA));
  auto r2 = Protected(&handler, 2, Task(kRunA));
  // The coordinator restarts from round 1's checkpoint and asks for round 2 again.
  auto r2_again = Protected(&handler, 2, Task(kRunA));
  ASSERT_TRUE(r1.ok() && r2.ok() && r2_again.ok()) << r2_again.status().ToString();
  EXPECT_TRUE(SameBits(*r2, *r2_again));
  EXPECT_FALSE(SameBits(*r1, *r2));
  // Noise there is: the clean value is 0.01 everywhere.
  EXPECT_NE((*r1)[0], 0.01f);
}

TEST(PrivateHandlerTest, AnotherRunOrAnotherClientKeyGetsOtherNoise) {
  FixedClient inner;
  privacy::SecureRng::Key key{7};
  PrivateTaskHandler a(&inner, key), same_key(&inner, key), b(&inner, privacy::SecureRng::Key{8});
  auto in_a = Protected(&a, 1, Task(kRunA));
  auto again = Protected(&same_key, 1, Task(kRunA));
  auto other_run = Protected(&a, 1, Task(kRunB));
  auto other_key = Protected(&b, 1, Task(kRunA));
  ASSERT_TRUE(in_a.ok() && again.ok() && other_run.ok() && other_key.ok());
  EXPECT_TRUE(SameBits(*in_a, *again));
  EXPECT_FALSE(SameBits(*in_a, *other_run));
  EXPECT_FALSE(SameBits(*in_a, *other_key));
}

TEST(PrivateHandlerTest, AReplayWithADifferentUpdateIsRefused) {
  FixedClient inner;
  PrivateTaskHandler handler(&inner);
  ASSERT_TRUE(Protected(&handler, 3, Task(kRunA)).ok());
  inner.values[5] = 0.02f;
  // The same noise on another update would reveal the difference of the two.
  StatusOr<std::vector<float>> replay = Protected(&handler, 3, Task(kRunA));
  ASSERT_FALSE(replay.ok());
  EXPECT_NE(replay.status().message().find("refused"), std::string::npos);
  // The next round is not affected.
  EXPECT_TRUE(Protected(&handler, 4, Task(kRunA)).ok());
}

TEST(PrivateHandlerTest, ATaskWithoutANoiseRunIdIsRefused) {
  FixedClient inner;
  PrivateTaskHandler handler(&inner);
  wire::TaskAssign task = Task(kRunA);
  task.params.erase("privacy.run");
  EXPECT_FALSE(Protected(&handler, 1, task).ok());
  task.params["privacy.run"] = std::string("not hex");
  EXPECT_FALSE(Protected(&handler, 1, task).ok());
}

}  // namespace
}  // namespace tandem

// Weights apart from workspaces: several workspaces on one set of weights run at once (two
// threads here) and give, bit for bit, what one workspace gives alone; a second workspace's
// forward pass between this one's Forward and Backward disturbs nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/rng.h"
#include "models/gpt.h"
#include "models/gpt_workspace.h"

namespace tandem {
namespace {

struct Result {
  float loss = 0.0f;
  std::vector<float> logits, grads;
};

struct Batch {
  int B, T;
  std::vector<int32_t> tokens, targets;
};

Batch RandomBatch(uint64_t seed, int B, int T, int vocab) {
  Rng rng(seed);
  Batch b{B, T, {}, {}};
  for (int i = 0; i < B * T; ++i) {
    b.tokens.push_back(static_cast<int32_t>(rng.Below(vocab)));
    b.targets.push_back(static_cast<int32_t>(rng.Below(vocab)));
  }
  return b;
}

Result TrainStep(GptWorkspace& ws, const Batch& b) {
  Result r;
  ws.ZeroGrad();
  r.loss = ws.Forward(b.tokens.data(), b.targets.data(), b.B, b.T);
  r.logits.assign(ws.logits(), ws.logits() + static_cast<size_t>(b.B) * b.T * ws.config().vocab);
  ws.Backward();
  r.grads.assign(ws.grads().begin(), ws.grads().end());
  return r;
}

void ExpectSame(const Result& a, const Result& b, const char* what) {
  EXPECT_EQ(a.loss, b.loss) << what;
  ASSERT_EQ(a.logits.size(), b.logits.size());
  EXPECT_EQ(std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)), 0)
      << what << ": logits differ";
  ASSERT_EQ(a.grads.size(), b.grads.size());
  EXPECT_EQ(std::memcmp(a.grads.data(), b.grads.data(), a.grads.size() * sizeof(float)), 0)
      << what << ": gradients differ";
}

ModelConfig TestConfig() {
  ModelConfig c{256, 32, 64, 2, 4};
  c.layer_n_head = {4, 2};  // non-uniform, so per-block shapes are exercised too
  c.layer_d_mlp = {256, 96};
  return c;
}

TEST(GptWorkspaceTest, TwoWorkspacesOnOneWeightsRunConcurrentlyBitForBit) {
  Gpt model(TestConfig());
  model.InitWeights(21);
  const Batch a = RandomBatch(1, 4, 32, 256), b = RandomBatch(2, 3, 17, 256);
  // Reference: one workspace, one batch after the other.
  GptWorkspace solo(model.shared_weights());
  const Result ref_a = TrainStep(solo, a), ref_b = TrainStep(solo, b);

  GptWorkspace ws1(model.shared_weights()), ws2(model.shared_weights());
  std::vector<Result> got1, got2;
  std::thread t1([&] {
    for (int i = 0; i < 4; ++i) got1.push_back(TrainStep(ws1, a));
  });
  std::thread t2([&] {
    for (int i = 0; i < 4; ++i) got2.push_back(TrainStep(ws2, b));
  });
  t1.join();
  t2.join();
  for (const Result& r : got1) ExpectSame(r, ref_a, "workspace 1");
  for (const Result& r : got2) ExpectSame(r, ref_b, "workspace 2");
}

TEST(GptWorkspaceTest, ConcurrentDecodingMatchesDecodingAlone) {
  Gpt model(TestConfig());
  model.InitWeights(22);
  std::vector<int32_t> seq(20);
  Rng rng(3);
  for (auto& t : seq) t = static_cast<int32_t>(rng.Below(256));
  auto decode_all = [&](GptWorkspace& ws) {
    std::vector<float> out;
    for (size_t i = 0; i < seq.size(); ++i) {
      const float* l = ws.Decode(&seq[i], 1);
      out.insert(out.end(), l, l + 256);
    }
    return out;
  };
  GptWorkspace solo(model.shared_weights());
  const std::vector<float> ref = decode_all(solo);
  GptWorkspace ws1(model.shared_weights()), ws2(model.shared_weights());
  std::vector<float> got1, got2;
  const Batch batch = RandomBatch(4, 2, 32, 256);
  Result trained;
  // One thread decodes while another trains (forward and backward) on the same weights.
  std::thread t1([&] { got1 = decode_all(ws1); });
  std::thread t2([&] { trained = TrainStep(ws2, batch); });
  t1.join();
  t2.join();
  EXPECT_EQ(std::memcmp(got1.data(), ref.data(), ref.size() * sizeof(float)), 0);
  ExpectSame(trained, TrainStep(solo, batch), "training workspace");
}

TEST(GptWorkspaceTest, AnotherWorkspaceBetweenForwardAndBackwardChangesNothing) {
  Gpt model(TestConfig());
  model.InitWeights(23);
  const Batch a = RandomBatch(5, 4, 32, 256), b = RandomBatch(6, 4, 32, 256);
  const Result ref = TrainStep(model.workspace(), a);
  model.ZeroGrad();
  model.Forward(a.tokens.data(), a.targets.data(), a.B, a.T);
  GptWorkspace eval(model.shared_weights());
  eval.Forward(b.tokens.data(), b.targets.data(), b.B, b.T);  // an evaluation in between
  model.Backward();
  EXPECT_EQ(std::memcmp(model.grads().data(), ref.grads.data(), ref.grads.size() * sizeof(float)),
            0);
}

TEST(GptWorkspaceTest, CopyOfGptIsIndependent) {
  Gpt model(TestConfig());
  model.InitWeights(24);
  Gpt copy(model);
  copy.params()[0] += 1.0f;
  EXPECT_NE(copy.params()[0], model.params()[0]);
  // A Gpt on shared weights sees every change.
  Gpt shared(model.shared_weights());
  model.params()[1] += 1.0f;
  EXPECT_EQ(shared.params()[1], model.params()[1]);
}

}  // namespace
}  // namespace tandem
namespace tandem {
namespace {

// Regression: backward shards are not in step, so one may work on a block while another is still
// a block above; with per-block scratch strides, a narrow block's rows of one shard overlapped a
// wide block's rows of the next, and the gradients of a non-uniform model depended on timing
// (seen as a step on a fresh thread giving other gradients than on the main thread).
TEST(GptWorkspaceTest, ShardsOfNonUniformBlocksDoNotShareScratch) {
  Gpt model(TestConfig());
  model.InitWeights(25);
  const Batch b = RandomBatch(7, 3, 17, 256);
  GptWorkspace solo(model.shared_weights());
  const Result ref = TrainStep(solo, b);
  for (int rep = 0; rep < 4; ++rep) {
    Result got;
    std::thread t([&] {
      GptWorkspace ws(model.shared_weights());
      got = TrainStep(ws, b);
    });
    t.join();
    ExpectSame(got, ref, ("fresh thread, rep " + std::to_string(rep)).c_str());
  }
}

// Decoding's buffers are carved 64-byte aligned, so its logits do not depend on where malloc put
// them (Eigen's vectorised softmax reductions start at the first aligned element).
TEST(GptWorkspaceTest, DecodingOnAFreshThreadMatchesTheMainThread) {
  Gpt model(TestConfig());
  model.InitWeights(26);
  std::vector<int32_t> seq(20);
  Rng rng(8);
  for (auto& t : seq) t = static_cast<int32_t>(rng.Below(256));
  auto decode_all = [&](GptWorkspace& ws) {
    std::vector<float> out;
    for (size_t i = 0; i < seq.size(); ++i) {
      const float* l = ws.Decode(&seq[i], 1);
      out.insert(out.end(), l, l + 256);
    }
    return out;
  };
  GptWorkspace solo(model.shared_weights());
  const std::vector<float> ref = decode_all(solo);
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<float> got;
    std::thread t([&] {
      std::vector<std::unique_ptr<float[]>> shift;  // move the heap around between reps
      for (int i = 0; i < rep * 3; ++i) shift.emplace_back(new float[17 + i]);
      GptWorkspace ws(model.shared_weights());
      got = decode_all(ws);
    });
    t.join();
    EXPECT_EQ(std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)), 0) << rep;
  }
}

}  // namespace
}  // namespace tandem

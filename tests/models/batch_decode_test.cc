// Batched decoding (BatchDecoder): several sequences, each in a workspace of its own, advanced in
// one pass must give the logits of separate GptWorkspace::Decode calls — with prompts of
// different lengths, steps of different k, sequences leaving the batch, and after Truncate — and
// on one compute thread a sequence's logits must not depend on what else is in the batch nor on
// how its tokens were split into steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/threads.h"
#include "models/gpt.h"
#include "models/gpt_workspace.h"

namespace tandem {
namespace {

constexpr int kVocab = 256;

// A perturbed model, uniform or with per-block head counts and MLP widths (as generate_test's).
std::unique_ptr<Gpt> TestModel(bool uniform) {
  ModelConfig c{kVocab, 40, 32, 3, 4};
  if (!uniform) {
    c.d_head = 6;
    c.layer_n_head = {4, 1, 3};
    c.layer_d_mlp = {128, 40, 72};
  }
  auto model = std::make_unique<Gpt>(c);
  model->InitWeights(3);
  Rng rng(1);
  for (float& p : model->params()) p += 0.05f * static_cast<float>(rng.Normal());
  return model;
}

std::vector<int32_t> RandomTokens(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> seq;
  for (int i = 0; i < n; ++i) seq.push_back(static_cast<int32_t>(rng.Below(kVocab)));
  return seq;
}

// One step of the schedule below: which sequences feed how many tokens, or roll back.
struct Feed {
  int seq;
  int k;             // tokens to feed; 0: Truncate to `truncate`
  int truncate = 0;
};

// Four sequences: prompts of 5, 8, 1 and 11 tokens in one pass, then steps of 1 to 4 tokens in
// which sequences leave (2 after the second pass) and come back, and sequence 1 rolls back three
// positions (a rejected draft) and continues with other tokens.
std::vector<std::vector<Feed>> Schedule() {
  return {
      {{0, 5}, {1, 8}, {2, 1}, {3, 11}},
      {{0, 1}, {1, 3}, {2, 1}, {3, 2}},
      {{0, 1}, {1, 4}, {3, 1}},
      {{1, 0, 12}, {0, 2}, {1, 1}, {3, 1}},
      {{0, 1}, {1, 2}, {2, 3}, {3, 1}},
      {{2, 1}},
  };
}

// Runs Schedule() on fresh workspaces, per pass either batched (one BatchDecoder::Decode) or
// with `alone` a single sequence's steps only, each in a decoder of its own; returns every
// logits row fed, per sequence in order.
std::vector<std::vector<float>> RunBatched(const Gpt& model, int only = -1) {
  std::vector<std::unique_ptr<GptWorkspace>> ws;
  for (int j = 0; j < 4; ++j) ws.push_back(std::make_unique<GptWorkspace>(model.shared_weights()));
  BatchDecoder decoder(model.shared_weights());
  std::vector<std::vector<int32_t>> tokens;
  for (int j = 0; j < 4; ++j) tokens.push_back(RandomTokens(40, 10 + j));
  std::vector<int> fed(4, 0);
  std::vector<std::vector<float>> out(4);
  for (const std::vector<Feed>& pass : Schedule()) {
    std::vector<BatchDecoder::Step> steps;
    std::vector<int> who;
    for (const Feed& f : pass) {
      if (only >= 0 && f.seq != only) continue;
      if (f.k == 0) {
        ws[f.seq]->Truncate(f.truncate);
        fed[f.seq] = f.truncate;
        tokens[f.seq][f.truncate] = (tokens[f.seq][f.truncate] + 1) % kVocab;  // another draft
        continue;
      }
      steps.push_back({ws[f.seq].get(), tokens[f.seq].data() + fed[f.seq], f.k});
      who.push_back(f.seq);
      fed[f.seq] += f.k;
    }
    if (steps.empty()) continue;
    std::span<const float* const> logits = decoder.Decode(steps);
    EXPECT_EQ(logits.size(), steps.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      EXPECT_EQ(ws[who[i]]->position(), fed[who[i]]);
      out[who[i]].insert(out[who[i]].end(), logits[i], logits[i] + steps[i].k * kVocab);
    }
  }
  return out;
}

// The same schedule through GptWorkspace::Decode, one sequence at a time.
std::vector<std::vector<float>> RunSeparately(const Gpt& model) {
  std::vector<std::vector<float>> out(4);
  for (int j = 0; j < 4; ++j) {
    GptWorkspace ws(model.shared_weights());
    std::vector<int32_t> tokens = RandomTokens(40, 10 + j);
    int fed = 0;
    for (const std::vector<Feed>& pass : Schedule()) {
      for (const Feed& f : pass) {
        if (f.seq != j) continue;
        if (f.k == 0) {
          ws.Truncate(f.truncate);
          fed = f.truncate;
          tokens[f.truncate] = (tokens[f.truncate] + 1) % kVocab;
          continue;
        }
        const float* l = ws.Decode(tokens.data() + fed, f.k);
        out[j].insert(out[j].end(), l, l + f.k * kVocab);
        fed += f.k;
      }
    }
  }
  return out;
}

class BatchDecodeTest : public testing::TestWithParam<bool> {};

// Within 2e-6 of separate Decodes (logits of scale ~1 here; 5e-7 measured): the matrix products block a batch's
// rows otherwise than a single sequence's, so the last bits may differ (see gpt_workspace.h).
TEST_P(BatchDecodeTest, MatchesSeparateDecodes) {
  auto model = TestModel(GetParam());
  const auto batched = RunBatched(*model);
  const auto separate = RunSeparately(*model);
  for (int j = 0; j < 4; ++j) {
    ASSERT_EQ(batched[j].size(), separate[j].size()) << "sequence " << j;
    ASSERT_FALSE(batched[j].empty());
    float worst = 0.0f, scale = 0.0f;
    for (size_t i = 0; i < batched[j].size(); ++i) {
      worst = std::max(worst, std::abs(batched[j][i] - separate[j][i]));
      scale = std::max(scale, std::abs(separate[j][i]));
    }
    EXPECT_GT(scale, 0.1f);
    EXPECT_LE(worst, 2e-6f) << "sequence " << j;
  }
}

// On one compute thread, a sequence's logits are the same bits alone in the batch as with the
// others: what the inference service's replies rely on.
TEST_P(BatchDecodeTest, ASequencesBitsDoNotDependOnTheBatch) {
  SetComputeThreads(1);
  auto model = TestModel(GetParam());
  const auto together = RunBatched(*model);
  for (int j = 0; j < 4; ++j) {
    const auto alone = RunBatched(*model, j);
    ASSERT_EQ(alone[j].size(), together[j].size());
    EXPECT_EQ(std::memcmp(alone[j].data(), together[j].data(), sizeof(float) * alone[j].size()),
              0)
        << "sequence " << j;
  }
}

// Nor on how its tokens were split into steps: fed all at once, in uneven steps beside another
// sequence, or one token at a time after a rollback, every row has the same bits.
TEST_P(BatchDecodeTest, ASequencesBitsDoNotDependOnItsSteps) {
  SetComputeThreads(1);
  auto model = TestModel(GetParam());
  const std::vector<int32_t> x = RandomTokens(14, 4), y = RandomTokens(9, 5);
  BatchDecoder decoder(model->shared_weights());
  auto feed = [&](GptWorkspace& ws, int from, int k, std::vector<float>* out,
                  GptWorkspace* other = nullptr) {
    std::vector<BatchDecoder::Step> steps = {{&ws, x.data() + from, k}};
    if (other != nullptr) steps.push_back({other, y.data() + other->position(), 2});
    std::span<const float* const> logits = decoder.Decode(steps);
    out->insert(out->end(), logits[0], logits[0] + k * kVocab);
  };
  GptWorkspace whole(model->shared_weights());
  std::vector<float> at_once;
  feed(whole, 0, 14, &at_once);
  GptWorkspace split(model->shared_weights()), other(model->shared_weights());
  std::vector<float> uneven;
  int at = 0;
  for (int k : {5, 1, 3, 5}) {
    feed(split, at, k, &uneven, &other);
    at += k;
  }
  // A cache that held other tokens, rolled back to 6 shared ones, then fed one at a time.
  GptWorkspace reused(model->shared_weights());
  std::vector<float> scratch, rolled(at_once.begin(), at_once.begin() + 6 * kVocab);
  feed(reused, 0, 9, &scratch);
  reused.Truncate(6);
  for (int i = 6; i < 14; ++i) feed(reused, i, 1, &rolled);
  ASSERT_EQ(uneven.size(), at_once.size());
  ASSERT_EQ(rolled.size(), at_once.size());
  for (size_t r = 0; r < 14; ++r) {
    const size_t o = r * kVocab;
    EXPECT_EQ(std::memcmp(uneven.data() + o, at_once.data() + o, sizeof(float) * kVocab), 0)
        << "row " << r << " in uneven steps";
    EXPECT_EQ(std::memcmp(rolled.data() + o, at_once.data() + o, sizeof(float) * kVocab), 0)
        << "row " << r << " after a rollback";
  }
}

// With LoRA adapters (rank 2) on every linear layer, both of the above.
TEST_P(BatchDecodeTest, WithAdapters) {
  SetComputeThreads(1);
  auto model = TestModel(GetParam());
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4.0f;
  ASSERT_TRUE(model->EnableLora(lora, 6).ok());
  Rng rng(10);
  for (float& p : model->lora_params()) p += 0.2f * static_cast<float>(rng.Normal());
  const auto batched = RunBatched(*model);
  const auto separate = RunSeparately(*model);
  for (int j = 0; j < 4; ++j) {
    ASSERT_EQ(batched[j].size(), separate[j].size());
    float worst = 0.0f, scale = 0.0f;
    for (size_t i = 0; i < batched[j].size(); ++i) {
      worst = std::max(worst, std::abs(batched[j][i] - separate[j][i]));
      scale = std::max(scale, std::abs(separate[j][i]));
    }
    // Adapters this large (A and B of scale 0.2) make the intermediate sums larger: 5e-6 measured.
    EXPECT_LE(worst, 1e-5f * std::max(1.0f, scale)) << "sequence " << j;
    const auto alone = RunBatched(*model, j);
    EXPECT_EQ(std::memcmp(alone[j].data(), batched[j].data(), sizeof(float) * alone[j].size()), 0)
        << "sequence " << j;
  }
  // The adapters do change the logits.
  auto plain = TestModel(GetParam());
  EXPECT_NE(RunSeparately(*plain)[0], separate[0]);
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchDecodeTest, testing::Values(true, false),
                         [](const testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "uniform" : "nonuniform");
                         });

}  // namespace
}  // namespace tandem

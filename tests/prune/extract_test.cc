// Extract and Scatter through alignment maps: keeping every index reproduces the parent bit for
// bit; removing heads, neurons or blocks that contribute nothing leaves the output unchanged;
// Scatter(Extract(W)) is W where covered and nothing elsewhere, with exact coverage counts; the
// weighted sub-model average (ScatterAdd + ApplyCoveredMean) matches a direct computation.
#include "prune/extract.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "prune/plan.h"
#include "tests/prune/prune_test_util.h"

namespace tandem {
namespace {

using testing::Logits;
using testing::RandomWeights;
using testing::TinyConfig;

std::vector<int32_t> Tokens(int n, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng.Below(vocab));
  return t;
}

void ExpectClose(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  ASSERT_EQ(a.size(), b.size());
  float worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  EXPECT_LE(worst, tol);
}

TEST(ExtractTest, KeepingEveryIndexReproducesTheParentBitForBit) {
  for (const bool nonuniform : {false, true}) {
    ModelConfig c = TinyConfig();
    if (nonuniform) {
      c.d_head = 4;
      c.layer_n_head = {4, 2, 3};
      c.layer_d_mlp = {64, 24, 40};
    }
    auto parent = RandomWeights(c, 7);
    // Through a plan that keeps everything, as `tandem prune --to 1` would make it.
    ImportanceScores scores = *ComputeImportance(parent, ImportanceMethod::kRandom, {}, 3);
    PruneTarget keep_all;
    keep_all.width_ratio = 1.0;
    StatusOr<AlignmentMap> map = PlanPrune(c, scores, keep_all);
    ASSERT_TRUE(map.ok()) << map.status().ToString();
    EXPECT_EQ(*map, AlignmentMap::Identity(c));
    StatusOr<std::unique_ptr<GptWeights>> child = Extract(*parent, *map);
    ASSERT_TRUE(child.ok());
    std::shared_ptr<const GptWeights> shared = std::move(*child);
    const std::vector<int32_t> tokens = Tokens(2 * 16, c.vocab, 1);
    const std::vector<float> a = Logits(parent, tokens, 2, 16);
    const std::vector<float> b = Logits(shared, tokens, 2, 16);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  }
}

TEST(ExtractTest, RemovingSilentHeadsNeuronsAndBlocksKeepsTheOutput) {
  const ModelConfig c = TinyConfig();
  auto parent = RandomWeights(c, 11);
  const int HD = c.head_dim(), C = c.d_model, M = c.mlp_width();
  // Head 2 of block 0 writes nothing: its rows of attn.c_proj are zero.
  float* proj0 = parent->params().data() + parent->block_offset(0, GptWeights::kProjW);  // (A,C)
  std::fill(proj0 + 2 * HD * C, proj0 + 3 * HD * C, 0.0f);
  // Neurons 5 and 9 of block 2 are dead: zero rows of mlp.c_proj (and their c_fc columns).
  float* fcproj2 = parent->params().data() + parent->block_offset(2, GptWeights::kFcProjW);
  float* fc2 = parent->params().data() + parent->block_offset(2, GptWeights::kFcW);  // (C,M)
  for (int m : {5, 9}) {
    std::fill(fcproj2 + m * C, fcproj2 + (m + 1) * C, 0.0f);
    for (int r = 0; r < C; ++r) fc2[r * M + m] = 0.0f;
  }
  // Block 1 adds nothing to the residual stream: both its output projections are zero.
  for (int t : {GptWeights::kProjW, GptWeights::kProjB, GptWeights::kFcProjW,
                GptWeights::kFcProjB}) {
    const TensorSpec* spec = parent->layout().Find(
        "h.1." + std::string(GptWeights::BlockTensorName(t)));
    std::fill(parent->params().begin() + spec->offset,
              parent->params().begin() + spec->offset + spec->size, 0.0f);
  }
  AlignmentMap map = AlignmentMap::KeepLayers(c, {0, 2});
  map.heads[0] = {0, 1, 3};
  map.neurons[1].erase(map.neurons[1].begin() + 9);
  map.neurons[1].erase(map.neurons[1].begin() + 5);
  StatusOr<std::unique_ptr<GptWeights>> child = Extract(*parent, map);
  ASSERT_TRUE(child.ok()) << child.status().ToString();
  EXPECT_EQ((*child)->config().n_layer, 2);
  EXPECT_EQ((*child)->config().heads(0), 3);
  EXPECT_EQ((*child)->config().mlp_width(1), M - 2);
  std::shared_ptr<const GptWeights> shared = std::move(*child);
  const std::vector<int32_t> tokens = Tokens(3 * 16, c.vocab, 2);
  const std::vector<float> want = Logits(parent, tokens, 3, 16);
  ExpectClose(Logits(shared, tokens, 3, 16), want, 2e-5f);
  // Removing a head that does write changes the output (the comparison can fail).
  AlignmentMap live = AlignmentMap::Identity(c);
  live.heads[0] = {0, 2, 3};
  std::shared_ptr<const GptWeights> cut = std::move(Extract(*parent, live).value());
  const std::vector<float> got = Logits(cut, tokens, 3, 16);
  float worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  EXPECT_GT(worst, 1e-3f);
}

TEST(ExtractTest, ExtractRefusesAMapOfAnotherParent) {
  auto parent = RandomWeights(TinyConfig(), 1);
  ModelConfig other = TinyConfig();
  other.n_layer = 2;
  EXPECT_EQ(Extract(*parent, AlignmentMap::Identity(other)).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(ExtractTest, ScatterOfExtractIsTheParentWhereCovered) {
  const ModelConfig c = TinyConfig();
  auto parent = RandomWeights(c, 5);
  SubmodelSpec spec;
  spec.ratio = 0.5;
  spec.kind = WindowKind::kRolling;
  spec.round = 3;
  spec.stride = 1;
  AlignmentMap map = *SubmodelMap(c, spec);
  map.layers = {0, 2};  // and a dropped block
  map.heads = {map.heads[0], map.heads[2]};
  map.neurons = {map.neurons[0], map.neurons[2]};
  std::unique_ptr<GptWeights> child = std::move(Extract(*parent, map).value());
  StatusOr<ScatteredDelta> s = Scatter(child->params(), map);
  ASSERT_TRUE(s.ok());
  // Covered: exactly the parent's value and coverage 1. Elsewhere: 0 and 0. Count it independently
  // from the per-tensor index sets.
  const ParamLayout layout = GptLayout(c);
  std::vector<char> covered(layout.total(), 0);
  for (const TensorAlignment& t : TensorAlignments(map)) {
    const TensorSpec* p = layout.Find(t.parent_name);
    if (t.index.size() == 1) {
      for (int64_t i : t.index[0]) covered[p->offset + i] = 1;
    } else {
      for (int64_t i : t.index[0]) {
        for (int64_t j : t.index[1]) covered[p->offset + i * p->shape[1] + j] = 1;
      }
    }
  }
  size_t n_covered = 0;
  for (size_t i = 0; i < layout.total(); ++i) {
    if (covered[i]) {
      ++n_covered;
      ASSERT_EQ(s->delta[i], parent->params()[i]) << i;
      ASSERT_EQ(s->coverage[i], 1.0f) << i;
    } else {
      ASSERT_EQ(s->delta[i], 0.0f) << i;
      ASSERT_EQ(s->coverage[i], 0.0f) << i;
    }
  }
  EXPECT_EQ(n_covered, child->num_params());
  EXPECT_LT(n_covered, layout.total());
  // And a delta of the wrong size is refused.
  std::vector<float> short_delta(child->num_params() - 1);
  EXPECT_FALSE(Scatter(short_delta, map).ok());
}

TEST(ExtractTest, WeightedSubmodelAverageMatchesDirectComputation) {
  const ModelConfig c = TinyConfig();
  auto parent = RandomWeights(c, 9);
  const size_t P = parent->num_params();
  std::vector<float> sum(P, 0.0f), cov(P, 0.0f);
  // Three clients: two rolling windows of ratio 0.5 and the full model, weights 1, 2, 3.
  std::vector<AlignmentMap> maps;
  for (int64_t round : {0, 1}) {
    SubmodelSpec spec;
    spec.ratio = 0.5;
    spec.kind = WindowKind::kRolling;
    spec.round = round;
    maps.push_back(*SubmodelMap(c, spec));
  }
  maps.push_back(AlignmentMap::Identity(c));
  const float weights[3] = {1.0f, 2.0f, 3.0f};
  std::vector<double> want_sum(P, 0.0), want_cov(P, 0.0);
  for (int k = 0; k < 3; ++k) {
    StatusOr<Alignment> a = Alignment::Create(maps[k]);
    ASSERT_TRUE(a.ok());
    std::vector<float> delta(a->child_size());
    Rng rng(100 + k);
    for (auto& d : delta) d = static_cast<float>(rng.Normal());
    ASSERT_TRUE(ScatterAdd(delta, weights[k], maps[k], sum, cov).ok());
    for (size_t i = 0; i < delta.size(); ++i) {
      want_sum[a->parent_offsets()[i]] += static_cast<double>(weights[k]) * delta[i];
      want_cov[a->parent_offsets()[i]] += weights[k];
    }
  }
  for (size_t i = 0; i < P; ++i) {
    ASSERT_NEAR(sum[i], want_sum[i], 1e-5) << i;
    ASSERT_EQ(cov[i], static_cast<float>(want_cov[i])) << i;
  }
  std::vector<float> updated(parent->params().begin(), parent->params().end());
  ApplyCoveredMean(updated, sum, cov);
  for (size_t i = 0; i < P; ++i) {
    ASSERT_NEAR(updated[i], parent->params()[i] + want_sum[i] / want_cov[i], 1e-5) << i;
  }
  // A bad weight or size writes nothing.
  const std::vector<float> before = sum;
  std::vector<float> delta(maps[0].ChildConfig().vocab);
  EXPECT_FALSE(ScatterAdd(delta, 1.0f, maps[0], sum, cov).ok());
  std::vector<float> full(GptLayout(maps[0].ChildConfig()).total(), 1.0f);
  EXPECT_FALSE(ScatterAdd(full, 0.0f, maps[0], sum, cov).ok());
  EXPECT_EQ(sum, before);
}

}  // namespace
}  // namespace tandem

// Choosing what a child keeps: window widths, static / rolling / importance windows (rolling ones
// cover every index within ceil(1/r) rounds), pruning plans by score, and `--to SHAPE` parsing.
#include "prune/plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "tests/prune/prune_test_util.h"

namespace tandem {
namespace {

using testing::TinyConfig;

TEST(PlanTest, WindowWidthIsCeilClamped) {
  EXPECT_EQ(WindowWidth(0.5, 6), 3);
  EXPECT_EQ(WindowWidth(0.3, 10), 3);
  EXPECT_EQ(WindowWidth(0.34, 10), 4);
  EXPECT_EQ(WindowWidth(0.01, 10), 1);
  EXPECT_EQ(WindowWidth(1.0, 7), 7);
}

TEST(PlanTest, RollingWindowsCoverEveryIndexWithinCeilOneOverRRounds) {
  for (double r : {0.25, 0.3, 0.5, 0.6, 0.75, 1.0}) {
    for (int n : {1, 3, 4, 6, 7, 16, 64}) {
      SubmodelSpec spec;
      spec.ratio = r;
      spec.kind = WindowKind::kRolling;
      const int rounds = static_cast<int>(std::ceil(1.0 / r - 1e-9));
      std::set<int> seen;
      for (int round = 0; round < rounds; ++round) {
        spec.round = round;
        const std::vector<int> w = WindowIndices(spec, n);
        ASSERT_EQ(static_cast<int>(w.size()), WindowWidth(r, n));
        ASSERT_TRUE(std::is_sorted(w.begin(), w.end()));
        seen.insert(w.begin(), w.end());
      }
      EXPECT_EQ(static_cast<int>(seen.size()), n) << "r=" << r << " n=" << n;
    }
  }
}

TEST(PlanTest, RollingByOneShiftsAndWraps) {
  SubmodelSpec spec;
  spec.ratio = 0.5;
  spec.kind = WindowKind::kRolling;
  spec.stride = 1;
  spec.round = 6;
  EXPECT_EQ(WindowIndices(spec, 8), (std::vector<int>{0, 1, 6, 7}));
  spec.round = 3;
  EXPECT_EQ(WindowIndices(spec, 8), (std::vector<int>{3, 4, 5, 6}));
  spec.round = 8 + 3;  // periodic in n
  EXPECT_EQ(WindowIndices(spec, 8), (std::vector<int>{3, 4, 5, 6}));
  spec.kind = WindowKind::kStatic;
  EXPECT_EQ(WindowIndices(spec, 8), (std::vector<int>{0, 1, 2, 3}));
}

TEST(PlanTest, SubmodelMapsOfEachKind) {
  const ModelConfig c = TinyConfig();
  ImportanceScores scores = *ComputeImportance(testing::RandomWeights(c, 1),
                                               ImportanceMethod::kRandom, {}, 42);
  SubmodelSpec spec;
  spec.ratio = 0.5;
  spec.kind = WindowKind::kImportance;
  EXPECT_FALSE(SubmodelMap(c, spec).ok());  // importance without scores
  spec.scores = &scores;
  StatusOr<AlignmentMap> m = SubmodelMap(c, spec);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->ChildConfig().d_model, 8);
  EXPECT_EQ(m->layers.size(), 3u);
  for (int l = 0; l < 3; ++l) {
    ASSERT_EQ(m->heads[l].size(), 2u);
    // The kept heads outscore every dropped one.
    double kept_min = 1e9, dropped_max = -1e9;
    for (int h = 0; h < 4; ++h) {
      const bool kept = std::count(m->heads[l].begin(), m->heads[l].end(), h) > 0;
      (kept ? kept_min : dropped_max) = kept ? std::min(kept_min, scores.heads[l][h])
                                             : std::max(dropped_max, scores.heads[l][h]);
    }
    EXPECT_GT(kept_min, dropped_max);
  }
  spec.kind = WindowKind::kStatic;
  spec.shrink_channels = false;
  m = SubmodelMap(c, spec);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->ChildConfig().d_model, 16);
  EXPECT_EQ(m->neurons[1], (std::vector<int>{
      0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
      25, 26, 27, 28, 29, 30, 31}));
  spec.ratio = 1.5;
  EXPECT_FALSE(SubmodelMap(c, spec).ok());
  spec.ratio = 0.5;
  spec.round = -1;
  EXPECT_FALSE(SubmodelMap(c, spec).ok());
}

TEST(PlanTest, PlanPruneKeepsTheHighestScores) {
  const ModelConfig c = TinyConfig();
  ImportanceScores s = *ComputeImportance(testing::RandomWeights(c, 1),
                                          ImportanceMethod::kRandom, {}, 1);
  s.blocks = {0.9, 0.1, 0.5};
  s.heads[0] = {4, 3, 2, 1};
  s.heads[2] = {1, 1, 5, 1};  // ties go to the lower index
  PruneTarget t;
  t.n_layer = 2;
  t.heads = 2;
  t.d_mlp = 10;
  t.d_model = 12;
  StatusOr<AlignmentMap> m = PlanPrune(c, s, t);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->layers, (std::vector<int>{0, 2}));
  EXPECT_EQ(m->heads[0], (std::vector<int>{0, 1}));
  EXPECT_EQ(m->heads[1], (std::vector<int>{0, 2}));
  EXPECT_EQ(m->neurons[0], TopIndices(s.neurons[0], 10));
  EXPECT_EQ(m->channels, TopIndices(s.channels, 12));
  // Global ranking: same totals, block widths may differ, at least one each.
  t.global = true;
  m = PlanPrune(c, s, t);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->heads[0].size() + m->heads[1].size(), 4u);
  EXPECT_EQ(m->neurons[0].size() + m->neurons[1].size(), 20u);
  EXPECT_GE(m->heads[1].size(), 1u);
  // Asking for more than the parent has is refused.
  t.heads = 5;
  EXPECT_EQ(PlanPrune(c, s, t).status().code(), StatusCode::kInvalidArgument);
  t.heads = 2;
  ImportanceScores wrong = s;
  wrong.channels.pop_back();
  EXPECT_FALSE(PlanPrune(c, wrong, t).ok());
}

TEST(PlanTest, ParsePruneShape) {
  const ModelConfig llm = *ModelPreset("llm-small");  // 384 wide, 6 blocks of 6 heads of 64
  StatusOr<PruneTarget> t = ParsePruneShape("0.5", llm);
  ASSERT_TRUE(t.ok());
  EXPECT_DOUBLE_EQ(t->width_ratio, 0.5);
  t = ParsePruneShape("layers=4", llm);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->n_layer, 4);
  EXPECT_EQ(t->d_model, 0);
  t = ParsePruneShape("slm-small", llm);  // 192 wide, 4 blocks, MLP 768
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->d_model, 192);
  EXPECT_EQ(t->n_layer, 4);
  EXPECT_EQ(t->heads, 3);  // 192 / 64
  EXPECT_EQ(t->d_mlp, 768);
  t = ParsePruneShape("inner=0.5", llm);  // heads and neurons halved, every channel kept
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->d_model, 0);
  EXPECT_EQ(t->n_layer, 0);
  EXPECT_EQ(t->heads, 3);
  EXPECT_EQ(t->d_mlp, 768);
  EXPECT_DOUBLE_EQ(t->width_ratio, 0.0);
  for (const char* bad : {"0", "1.5", "-0.5", "0.5x", "layers=0", "layers=7", "layers=x",
                          "inner=0", "inner=1.5", "inner=", "inner=x", "llm-medium",
                          "no-such-preset", ""}) {
    StatusOr<PruneTarget> b = ParsePruneShape(bad, llm);
    EXPECT_FALSE(b.ok()) << bad;
    EXPECT_NE(b.status().message().find("--to"), std::string::npos) << b.status().message();
  }
  // A preset applied end to end gives the preset's widths.
  ImportanceScores s = *ComputeImportance(std::make_shared<GptWeights>(llm),
                                          ImportanceMethod::kRandom, {}, 1);
  StatusOr<AlignmentMap> m = PlanPrune(llm, s, *ParsePruneShape("slm-small", llm));
  ASSERT_TRUE(m.ok());
  const ModelConfig child = m->ChildConfig();
  EXPECT_EQ(child.d_model, 192);
  EXPECT_EQ(child.n_layer, 4);
  EXPECT_EQ(child.attn_width(0), 192);
  EXPECT_EQ(child.mlp_width(3), 768);
  // inner=R end to end: the parent's channels and depth, R of its heads and neurons.
  StatusOr<AlignmentMap> inner = PlanPrune(llm, s, *ParsePruneShape("inner=0.5", llm));
  ASSERT_TRUE(inner.ok());
  const ModelConfig narrow = inner->ChildConfig();
  EXPECT_EQ(narrow.d_model, 384);
  EXPECT_EQ(narrow.n_layer, 6);
  EXPECT_EQ(narrow.heads(5), 3);
  EXPECT_EQ(narrow.mlp_width(0), 768);
}

TEST(PlanTest, EmulatorKeepsBottomTopAndSpreadsTheKeptMiddleEvenly) {
  ModelConfig c = TinyConfig();
  c.n_layer = 8;
  StatusOr<AlignmentMap> m = EmulatorMap(c, 2, 2, 0.5);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->layers, (std::vector<int>{0, 1, 3, 5, 6, 7}));
  EXPECT_EQ(m->ChildConfig().n_layer, 6);
  EXPECT_EQ(m->ChildConfig().d_model, c.d_model);
  EXPECT_EQ(EmulatorMap(c, 2, 2, 1.0)->layers, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(EmulatorMap(c, 1, 1, 0.01)->layers, (std::vector<int>{0, 4, 7}));
  EXPECT_EQ(EmulatorMap(c, 1, 1, 0.75)->layers, (std::vector<int>{0, 1, 2, 4, 5, 6, 7}));  // 5 of 6
  EXPECT_FALSE(EmulatorMap(c, 4, 4, 0.5).ok()) << "no middle block left";
  EXPECT_FALSE(EmulatorMap(c, 0, 0, 0.5).ok()) << "no adapter";
  EXPECT_FALSE(EmulatorMap(c, -1, 2, 0.5).ok());
  EXPECT_FALSE(EmulatorMap(c, 1, 1, 0.0).ok());
  EXPECT_FALSE(EmulatorMap(c, 1, 1, 1.5).ok());
}

}  // namespace
}  // namespace tandem

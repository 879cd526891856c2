// The local trainer and its loss terms (train/local_trainer.h, distill/kd_terms.h): a step is the
// hand-written loop it replaced, bit for bit; frozen ranges do not move; a diverging term leaves
// the model as it was; the distillation terms agree with each other and teach.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "distill/kd_terms.h"
#include "tests/models/grad_check.h"
#include "train/local_trainer.h"

namespace tandem {
namespace {

ModelConfig Micro() {
  ModelConfig c;
  c.vocab = 256;
  c.context = 16;
  c.d_model = 32;
  c.n_layer = 3;
  c.n_head = 2;
  return c;
}

TokenDataset Stream(uint64_t seed, size_t n = 4000) {
  Rng rng(seed);
  std::vector<int32_t> tokens(n);
  for (size_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>(97 + rng.Below(8) + (i % 3));
  return TokenDataset(std::move(tokens));
}

TEST(LocalTrainerTest, AStepIsTheLoopItReplacedBitForBit) {
  Gpt a(Micro()), b(Micro());
  a.InitWeights(3);
  b.InitWeights(3);
  auto batcher = Batcher::Create(Stream(1), 4, 16);
  ASSERT_TRUE(batcher.ok());
  TrainerOptions options;
  options.adamw.weight_decay = 0.05f;
  options.grad_clip = 0.5;
  LocalTrainer trainer(&a, options);
  TextTerm text(*batcher);
  Rng ra(9), rb(9);
  auto report = trainer.Run({&text}, 5, 1e-3f, ra);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->steps, 5);
  // The loop every caller wrote before.
  AdamW opt(options.adamw, b.layout());
  std::vector<int32_t> tokens(64), targets(64);
  double sum = 0.0;
  for (int s = 0; s < 5; ++s) {
    batcher->Next(&rb, tokens.data(), targets.data());
    b.ZeroGrad();
    sum += b.Forward(tokens.data(), targets.data(), 4, 16);
    b.Backward();
    ClipGradientNorm(b.grads(), 0.5);
    opt.Step(b.params(), b.grads(), 1e-3f);
  }
  for (size_t i = 0; i < a.params().size(); ++i) ASSERT_EQ(a.params()[i], b.params()[i]) << i;
  EXPECT_DOUBLE_EQ(report->Mean("train_loss"), sum / 5);
}

TEST(LocalTrainerTest, FrozenBlocksDoNotMove) {
  Gpt model(Micro());
  model.InitWeights(4);
  const std::vector<float> before(model.params().begin(), model.params().end());
  TrainerOptions options;
  options.trainable = Trainable::Blocks(model.config(), model.layout(), 0, 1);  // the top block
  LocalTrainer trainer(&model, options);
  auto batcher = Batcher::Create(Stream(2), 4, 16);
  ASSERT_TRUE(batcher.ok());
  TextTerm text(*batcher);
  Rng rng(1);
  ASSERT_TRUE(trainer.Run({&text}, 3, 1e-2f, rng).ok());
  size_t moved_top = 0;
  for (const TensorSpec& t : model.layout().tensors()) {
    const bool top = t.name.rfind("h.2.", 0) == 0;
    size_t moved = 0;
    for (size_t i = t.offset; i < t.offset + t.size; ++i) moved += model.params()[i] != before[i];
    if (top) {
      moved_top += moved;
    } else {
      EXPECT_EQ(moved, 0u) << t.name << " is frozen but moved";
    }
  }
  EXPECT_GT(moved_top, 0u) << "the top block did not train";
}

TEST(LocalTrainerTest, ProximalTermPullsTowardsItsAnchorByMuTimesTheDistance) {
  Gpt model(Micro());
  model.InitWeights(5);
  std::vector<float> anchor(model.params().begin(), model.params().end());
  for (float& v : anchor) v += 0.25f;
  ProximalTerm prox(2.0, anchor);
  prox.Bind(model.params(), model.grads());
  model.ZeroGrad();
  Rng rng(1);
  auto l = prox.Accumulate(model, 0, rng);
  ASSERT_TRUE(l.ok());
  for (size_t i = 0; i < 50; ++i) EXPECT_FLOAT_EQ(model.grads()[i], 2.0f * -0.25f);
  const double n = static_cast<double>(anchor.size());
  EXPECT_NEAR(l->loss, 0.5 * 2.0 * 0.0625 * n, 1e-6 * n);
}

// A term whose loss is not finite.
class BrokenTerm : public LossTerm {
 public:
  std::string name() const override { return "broken"; }
  StatusOr<TermLoss> Accumulate(Gpt& model, int64_t, Rng&) override {
    for (float& g : model.grads()) g = 1.0f;
    return TermLoss{std::nan("")};
  }
};

TEST(LocalTrainerTest, ADivergingTermLeavesTheModelAsItWas) {
  Gpt model(Micro());
  model.InitWeights(6);
  const std::vector<float> before(model.params().begin(), model.params().end());
  LocalTrainer trainer(&model, TrainerOptions{});
  BrokenTerm broken;
  Rng rng(1);
  auto r = trainer.Step({&broken}, 1e-2f, rng);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("broken loss is not finite"), std::string::npos)
      << r.status().message();
  EXPECT_TRUE(std::equal(before.begin(), before.end(), model.params().begin()));
}

TEST(KdTermsTest, TopKWithTheWholeVocabularyIsTheDenseTermAndBothTeach) {
  Gpt teacher(Micro()), a(Micro()), b(Micro());
  teacher.InitWeights(10);
  for (float& w : teacher.params()) w *= 4.0f;  // a confident teacher
  a.InitWeights(11);
  b.InitWeights(11);
  const TokenDataset stream = Stream(3);
  auto windows = PublicWindows::Create(stream, PublicWindows::Draw(stream.size(), 16, 6, 1, 1), 16);
  ASSERT_TRUE(windows.ok()) << windows.status().ToString();
  KdOptions kd;
  kd.temperature = 2.0f;
  kd.alpha = 0.0f;
  // The teacher's logits on every window, as full top-k targets and as dense logits.
  std::vector<int32_t> tokens(6 * 16), targets(6 * 16);
  windows->GatherRun(0, 6, tokens.data(), targets.data());
  teacher.Forward(tokens.data(), nullptr, 6, 16);
  std::vector<float> logits(teacher.logits(), teacher.logits() + 6 * 16 * 256);
  const TopKTargets full = TopKFromLogits(logits.data(), 6 * 16, 256, 256, 2.0f);
  TopKDistillTerm sparse(*windows, full, kd, 3);
  DenseDistillTerm dense(*windows, FixedTeacher(logits, 16, 256), kd, 3, 256);
  const double before = dense.MeanLoss(a);
  LocalTrainer ta(&a, TrainerOptions{}), tb(&b, TrainerOptions{});
  Rng ra(1), rb(1);
  auto la = ta.Run({&sparse}, 8, 3e-3f, ra);
  auto lb = tb.Run({&dense}, 8, 3e-3f, rb);
  ASSERT_TRUE(la.ok() && lb.ok());
  EXPECT_NEAR(la->Mean("kd_loss"), lb->Mean("kd_loss"), 1e-3);
  double max_diff = 0.0;
  for (size_t i = 0; i < a.params().size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(double(a.params()[i]) - b.params()[i]));
  }
  EXPECT_LT(max_diff, 1e-4);
  EXPECT_LT(dense.MeanLoss(b), before - 0.05) << "distillation did not move the student";
}

TEST(KdTermsTest, ModelTeacherGivesTheTeachersLogits) {
  Gpt teacher(Micro());
  teacher.InitWeights(12);
  const TokenDataset stream = Stream(4);
  auto windows = PublicWindows::Create(stream, {0, 100, 200}, 16);
  ASSERT_TRUE(windows.ok());
  std::vector<int32_t> tokens(3 * 16), targets(3 * 16);
  windows->GatherRun(0, 3, tokens.data(), targets.data());
  std::vector<float> out(3 * 16 * 256);
  ModelTeacher(&teacher)(0, 3, 16, tokens.data(), out.data());
  Gpt copy(teacher);
  copy.Forward(tokens.data(), nullptr, 3, 16);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], copy.logits()[i]);
  EXPECT_FALSE(PublicWindows::Create(stream, {static_cast<uint32_t>(stream.size())}, 16).ok());
  EXPECT_FALSE(PublicWindows::Create(stream, {}, 16).ok());
}

// A student of the teacher's width but fewer blocks (an emulator), its blocks matched to the
// teacher's: the term's gradient (KD + hidden-state MSE, injected at the block outputs) against
// central differences of its loss.
TEST(KdTermsTest, HiddenMatchGradientMatchesFiniteDifferences) {
  ModelConfig small = Micro();
  small.n_layer = 2;
  Gpt teacher(Micro()), student(small);
  teacher.InitWeights(21);
  student.InitWeights(22);
  const TokenDataset stream = Stream(5);
  auto windows = PublicWindows::Create(stream, {0, 300}, 16);
  ASSERT_TRUE(windows.ok());
  KdOptions kd;
  kd.temperature = 2.0f;
  kd.alpha = 0.5f;
  HiddenMatch hidden;
  hidden.layers = {{0, 0}, {1, 2}};
  hidden.weight = 0.7f;
  DenseDistillTerm term(*windows, &teacher, kd, 2, hidden);  // one batch: every window
  double part = 0.0;
  const double loss = term.MeanLoss(student, &part);
  EXPECT_GT(part, 0.05) << "the hidden-state term should weigh in";
  student.ZeroGrad();
  Rng rng(1);
  auto l = term.Accumulate(student, 0, rng);
  ASSERT_TRUE(l.ok());
  EXPECT_NEAR(l->loss, loss, 1e-6 * std::fabs(loss));
  const std::vector<float> analytic(student.grads().begin(), student.grads().end());
  auto r = testing::CheckGradient(student.params().data(),
                                  testing::SpreadIndices(student.params().size(), 100),
                                  analytic.data(), [&] { return term.MeanLoss(student); }, 1e-2);
  EXPECT_LT(r.max_rel_error, 2e-2) << "abs " << r.max_abs_error << " over " << r.checked;
  std::printf("hidden match: max relative error %.2e over %d parameters\n", r.max_rel_error,
              r.checked);
  // The same student, the KD alone: the hidden term changes the gradient.
  DenseDistillTerm plain(*windows, &teacher, kd, 2, HiddenMatch{});
  student.ZeroGrad();
  ASSERT_TRUE(plain.Accumulate(student, 0, rng).ok());
  double moved = 0.0;
  for (size_t i = 0; i < analytic.size(); ++i) {
    moved = std::max(moved, std::fabs(double(analytic[i]) - student.grads()[i]));
  }
  EXPECT_GT(moved, 1e-3);
}

// With weight 0 the term is the KD term to the model's logits, bit for bit.
TEST(KdTermsTest, HiddenMatchOfWeightZeroIsThePlainTerm) {
  Gpt teacher(Micro()), a(Micro()), b(Micro());
  teacher.InitWeights(31);
  a.InitWeights(32);
  b.InitWeights(32);
  const TokenDataset stream = Stream(6);
  auto windows = PublicWindows::Create(stream, {0, 100, 200, 300}, 16);
  ASSERT_TRUE(windows.ok());
  KdOptions kd;
  HiddenMatch off;
  off.layers = {{2, 2}};
  DenseDistillTerm with(*windows, &teacher, kd, 2, off);
  DenseDistillTerm plain(*windows, ModelTeacher(&teacher), kd, 2, 256);
  LocalTrainer ta(&a, TrainerOptions{}), tb(&b, TrainerOptions{});
  Rng ra(1), rb(1);
  ASSERT_TRUE(ta.Run({&with}, 3, 1e-3f, ra).ok());
  ASSERT_TRUE(tb.Run({&plain}, 3, 1e-3f, rb).ok());
  for (size_t i = 0; i < a.params().size(); ++i) ASSERT_EQ(a.params()[i], b.params()[i]) << i;
}

}  // namespace
}  // namespace tandem

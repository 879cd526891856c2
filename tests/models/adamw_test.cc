// AdamW against the update written out from Loshchilov & Hutter (and PyTorch's AdamW), the
// learning-rate schedule, and gradient clipping.
#include <gtest/gtest.h>

#include <cmath>

#include "models/adamw.h"

namespace tandem {
namespace {

TEST(AdamWTest, MatchesReferenceUpdateWithDecayOnlyWhereMarked) {
  ParamLayout layout;
  layout.Add("w", {3}, true);
  layout.Add("b", {2}, false);
  AdamWConfig cfg;
  cfg.beta1 = 0.9f;
  cfg.beta2 = 0.99f;
  cfg.eps = 1e-8f;
  cfg.weight_decay = 0.5f;
  AdamW opt(cfg, layout);
  std::vector<float> p = {1.0f, -2.0f, 0.5f, 3.0f, -1.0f};
  std::vector<double> ref(p.begin(), p.end()), m(5, 0), v(5, 0);
  const float lr = 0.1f;
  for (int step = 1; step <= 3; ++step) {
    std::vector<float> g = {0.3f * step, -0.1f, 0.2f, -0.4f, 0.05f * step};
    opt.Step(p, g, lr);
    for (int i = 0; i < 5; ++i) {
      const bool decay = i < 3;
      if (decay) ref[i] *= 1.0 - lr * cfg.weight_decay;
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g[i];
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(cfg.beta1, step));
      const double vh = v[i] / (1 - std::pow(cfg.beta2, step));
      ref[i] -= lr * mh / (std::sqrt(vh) + cfg.eps);
    }
  }
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(p[i], ref[i], 1e-5) << i;
  EXPECT_EQ(opt.step(), 3);
}

TEST(LrScheduleTest, WarmupThenCosineToFloor) {
  LrSchedule s;
  s.lr = 1.0f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_lr_ratio = 0.1f;
  EXPECT_NEAR(s.At(0), 0.1f, 1e-6);
  EXPECT_NEAR(s.At(9), 1.0f, 1e-6);
  EXPECT_NEAR(s.At(10), 1.0f, 1e-6);
  EXPECT_NEAR(s.At(60), 0.55f, 1e-5);  // halfway through the cosine
  EXPECT_NEAR(s.At(110), 0.1f, 1e-6);
  EXPECT_NEAR(s.At(500), 0.1f, 1e-6);
  for (int i = 11; i < 110; ++i) EXPECT_LE(s.At(i), s.At(i - 1));
}

TEST(ClipTest, ScalesOnlyAboveTheThreshold) {
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_NEAR(ClipGradientNorm(g, 10.0), 5.0, 1e-6);
  EXPECT_FLOAT_EQ(g[0], 3.0f);
  EXPECT_NEAR(ClipGradientNorm(g, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(GradientNorm(g), 1.0, 1e-5);
}

}  // namespace
}  // namespace tandem

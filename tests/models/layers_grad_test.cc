// Finite-difference checks of every layer's backward against its forward.
#include <gtest/gtest.h>

#include <vector>

#include "core/rng.h"
#include "models/attention.h"
#include "models/cross_entropy.h"
#include "models/embedding.h"
#include "models/gelu.h"
#include "models/layernorm.h"
#include "models/linear.h"
#include "models/lora.h"
#include "tests/models/grad_check.h"

namespace tandem {
namespace {

using testing::CheckGradient;
using testing::SpreadIndices;

std::vector<float> Random(size_t n, Rng& rng, float scale = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal()) * scale;
  return v;
}

// sum(out * R) in double: its gradient with respect to out is R.
double Dot(const std::vector<float>& out, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += static_cast<double>(out[i]) * r[i];
  return s;
}

constexpr double kTol = 1e-2;

TEST(LinearTest, GradientsMatchFiniteDifferences) {
  Rng rng(1);
  const int N = 6, C = 5, OC = 7;
  auto x = Random(N * C, rng), w = Random(C * OC, rng), b = Random(OC, rng), R = Random(N * OC, rng);
  std::vector<float> out(N * OC), dx(N * C), dw(C * OC, 0.0f), db(OC, 0.0f);
  auto loss = [&] {
    LinearForward(out.data(), x.data(), w.data(), b.data(), N, C, OC);
    return Dot(out, R);
  };
  loss();
  LinearBackward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), N, C, OC);
  EXPECT_LT(CheckGradient(x.data(), SpreadIndices(x.size(), 30), dx.data(), loss).max_rel_error, kTol);
  EXPECT_LT(CheckGradient(w.data(), SpreadIndices(w.size(), 35), dw.data(), loss).max_rel_error, kTol);
  EXPECT_LT(CheckGradient(b.data(), SpreadIndices(b.size(), 7), db.data(), loss).max_rel_error, kTol);
}

TEST(LinearTest, AccumulateAddsToOutput) {
  Rng rng(2);
  const int N = 3, C = 4, OC = 2;
  auto x = Random(N * C, rng), w = Random(C * OC, rng);
  std::vector<float> plain(N * OC), acc(N * OC, 1.5f);
  LinearForward(plain.data(), x.data(), w.data(), nullptr, N, C, OC);
  LinearForward(acc.data(), x.data(), w.data(), nullptr, N, C, OC, /*accumulate=*/true);
  for (int i = 0; i < N * OC; ++i) EXPECT_NEAR(acc[i], plain[i] + 1.5f, 1e-5);
}

TEST(LayerNormTest, GradientsMatchFiniteDifferences) {
  Rng rng(3);
  const int N = 5, C = 8;
  auto x = Random(N * C, rng), w = Random(C, rng), b = Random(C, rng), R = Random(N * C, rng);
  std::vector<float> out(N * C), mean(N), rstd(N), dx(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  auto loss = [&] {
    LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return Dot(out, R);
  };
  loss();
  LayerNormBackward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(),
                    rstd.data(), N, C);
  EXPECT_LT(CheckGradient(x.data(), SpreadIndices(x.size(), 40), dx.data(), loss, 1e-2, 1e-2)
                .max_rel_error, kTol);
  EXPECT_LT(CheckGradient(w.data(), SpreadIndices(C, C), dw.data(), loss).max_rel_error, kTol);
  EXPECT_LT(CheckGradient(b.data(), SpreadIndices(C, C), db.data(), loss).max_rel_error, kTol);
}

TEST(LayerNormTest, OutputIsNormalised) {
  Rng rng(4);
  const int N = 3, C = 64;
  auto x = Random(N * C, rng, 5.0f);
  std::vector<float> w(C, 1.0f), b(C, 0.0f), out(N * C), mean(N), rstd(N);
  LayerNormForward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  for (int i = 0; i < N; ++i) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += out[i * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (out[i * C + c] - m) * (out[i * C + c] - m);
    EXPECT_NEAR(m, 0.0, 1e-5);
    EXPECT_NEAR(v / C, 1.0, 1e-3);
  }
}

TEST(AttentionTest, GradientsMatchFiniteDifferences) {
  Rng rng(5);
  const int B = 2, T = 5, C = 8, NH = 2;
  auto qkv = Random(B * T * 3 * C, rng), R = Random(B * T * C, rng);
  std::vector<float> out(B * T * C), att(B * NH * T * T), dqkv(B * T * 3 * C);
  auto loss = [&] {
    AttentionForward(out.data(), att.data(), qkv.data(), B, T, NH, C / NH);
    return Dot(out, R);
  };
  loss();
  AttentionBackward(dqkv.data(), R.data(), qkv.data(), att.data(), B, T, NH, C / NH);
  auto r = CheckGradient(qkv.data(), SpreadIndices(qkv.size(), 240), dqkv.data(), loss);
  EXPECT_LT(r.max_rel_error, kTol);
}

TEST(AttentionTest, IsCausal) {
  // Changing the last position's q, k, v must not change any earlier output.
  Rng rng(6);
  const int B = 1, T = 6, C = 4, NH = 2;
  auto qkv = Random(B * T * 3 * C, rng);
  std::vector<float> out1(T * C), out2(T * C), att(NH * T * T);
  AttentionForward(out1.data(), att.data(), qkv.data(), B, T, NH, C / NH);
  for (int c = 0; c < 3 * C; ++c) qkv[(T - 1) * 3 * C + c] += 1.0f;
  AttentionForward(out2.data(), att.data(), qkv.data(), B, T, NH, C / NH);
  for (int i = 0; i < (T - 1) * C; ++i) EXPECT_FLOAT_EQ(out1[i], out2[i]);
  bool last_changed = false;
  for (int c = 0; c < C; ++c) last_changed |= out1[(T - 1) * C + c] != out2[(T - 1) * C + c];
  EXPECT_TRUE(last_changed);
}

// Queries after `past` cached positions: the same rows as a full pass over past + T positions.
TEST(AttentionTest, CachedQueriesMatchFullPass) {
  Rng rng(16);
  const int NH = 3, HD = 4, A = NH * HD, past = 5, T = 3, S = past + T;
  auto qkv = Random(S * 3 * A, rng);
  std::vector<float> full(S * A), full_att(NH * S * S), part(T * A), part_att(NH * T * S);
  AttentionForward(full.data(), full_att.data(), qkv.data(), 1, S, NH, HD);
  AttentionForward(part.data(), part_att.data(), qkv.data(), 1, T, NH, HD, past);
  for (int i = 0; i < T * A; ++i) EXPECT_NEAR(part[i], full[past * A + i], 1e-6) << i;
}

TEST(GeluTest, GradientsMatchFiniteDifferences) {
  Rng rng(7);
  const size_t n = 50;
  auto x = Random(n, rng, 2.0f), R = Random(n, rng);
  std::vector<float> out(n), dx(n);
  auto loss = [&] {
    GeluForward(out.data(), x.data(), n);
    return Dot(out, R);
  };
  loss();
  GeluBackward(dx.data(), x.data(), R.data(), n);
  EXPECT_LT(CheckGradient(x.data(), SpreadIndices(n, n), dx.data(), loss).max_rel_error, kTol);
}

TEST(GeluTest, MatchesFormula) {
  std::vector<float> x = {-3.0f, -1.0f, 0.0f, 0.5f, 2.0f}, y(5);
  GeluForward(y.data(), x.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double ref = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    EXPECT_NEAR(y[i], ref, 1e-6);
  }
}

TEST(EmbeddingTest, GradientsMatchFiniteDifferences) {
  Rng rng(8);
  const int B = 2, T = 3, C = 4, V = 5;
  std::vector<int32_t> tokens = {1, 3, 1, 4, 0, 1};  // token 1 repeats: gradients must add up
  auto wte = Random(V * C, rng), wpe = Random(T * C, rng), R = Random(B * T * C, rng);
  std::vector<float> out(B * T * C), dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
  auto loss = [&] {
    EmbeddingForward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return Dot(out, R);
  };
  loss();
  EmbeddingBackward(dwte.data(), dwpe.data(), R.data(), tokens.data(), B, T, C);
  EXPECT_LT(CheckGradient(wte.data(), SpreadIndices(wte.size(), 20), dwte.data(), loss).max_rel_error, kTol);
  EXPECT_LT(CheckGradient(wpe.data(), SpreadIndices(wpe.size(), 12), dwpe.data(), loss).max_rel_error, kTol);
}

TEST(CrossEntropyTest, GradientsMatchFiniteDifferencesAndIgnoreMasked) {
  Rng rng(9);
  const int N = 4, V = 6;
  auto logits = Random(N * V, rng);
  std::vector<int32_t> targets = {2, kIgnoreTarget, 5, 0};
  std::vector<float> probs(N * V), losses(N), dlogits(N * V);
  int count = 0;
  auto loss = [&] {
    return static_cast<double>(
        CrossEntropyForward(probs.data(), losses.data(), logits.data(), targets.data(), N, V, &count));
  };
  loss();
  EXPECT_EQ(count, 3);
  EXPECT_EQ(losses[1], 0.0f);
  CrossEntropyBackward(dlogits.data(), probs.data(), targets.data(), N, V, count);
  for (int v = 0; v < V; ++v) EXPECT_EQ(dlogits[V + v], 0.0f);
  EXPECT_LT(CheckGradient(logits.data(), SpreadIndices(logits.size(), 24), dlogits.data(), loss, 1e-2)
                .max_rel_error, kTol);
}

TEST(CrossEntropyTest, UniformLogitsGiveLogV) {
  const int N = 2, V = 256;
  std::vector<float> logits(N * V, 0.3f), probs(N * V), losses(N);
  std::vector<int32_t> targets = {7, 200};
  int count = 0;
  const float l = CrossEntropyForward(probs.data(), losses.data(), logits.data(), targets.data(), N, V, &count);
  EXPECT_NEAR(l, std::log(256.0), 1e-5);
}

TEST(LoraTest, GradientsMatchFiniteDifferences) {
  Rng rng(10);
  const int N = 5, C = 6, r = 3, OC = 4;
  const float scale = 2.0f;
  auto x = Random(N * C, rng), A = Random(C * r, rng), Bm = Random(r * OC, rng), R = Random(N * OC, rng);
  std::vector<float> out(N * OC), xa(N * r), dxa(N * r), dx(N * C, 0.0f), dA(C * r, 0.0f), dB(r * OC, 0.0f);
  auto loss = [&] {
    std::fill(out.begin(), out.end(), 0.0f);
    LoraForward(out.data(), xa.data(), x.data(), A.data(), Bm.data(), N, C, r, OC, scale);
    return Dot(out, R);
  };
  loss();
  LoraBackward(dx.data(), dA.data(), dB.data(), dxa.data(), R.data(), x.data(), xa.data(), A.data(),
               Bm.data(), N, C, r, OC, scale);
  EXPECT_LT(CheckGradient(x.data(), SpreadIndices(x.size(), 30), dx.data(), loss).max_rel_error, kTol);
  EXPECT_LT(CheckGradient(A.data(), SpreadIndices(A.size(), 18), dA.data(), loss).max_rel_error, kTol);
  EXPECT_LT(CheckGradient(Bm.data(), SpreadIndices(Bm.size(), 12), dB.data(), loss).max_rel_error, kTol);
}

TEST(LoraTest, MergeEqualsAdapterPath) {
  Rng rng(11);
  const int N = 3, C = 4, r = 2, OC = 5;
  auto x = Random(N * C, rng), w = Random(C * OC, rng), A = Random(C * r, rng), Bm = Random(r * OC, rng);
  std::vector<float> adapter(N * OC), merged(N * OC), xa(N * r);
  LinearForward(adapter.data(), x.data(), w.data(), nullptr, N, C, OC);
  LoraForward(adapter.data(), xa.data(), x.data(), A.data(), Bm.data(), N, C, r, OC, 0.5f);
  auto w2 = w;
  LoraMerge(w2.data(), A.data(), Bm.data(), C, r, OC, 0.5f, +1.0f);
  LinearForward(merged.data(), x.data(), w2.data(), nullptr, N, C, OC);
  for (int i = 0; i < N * OC; ++i) EXPECT_NEAR(adapter[i], merged[i], 1e-5);
  LoraMerge(w2.data(), A.data(), Bm.data(), C, r, OC, 0.5f, -1.0f);
  for (int i = 0; i < C * OC; ++i) EXPECT_NEAR(w2[i], w[i], 1e-6);
}

}  // namespace
}  // namespace tandem

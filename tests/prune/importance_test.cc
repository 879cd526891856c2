// Importance scores against independent computations: activation scores and block influence
// against a direct double-precision forward pass written here from the model's definition;
// Taylor scores against central finite differences of the calibration loss; magnitude against
// the weights read tensor by tensor; random scores are reproducible from their seed.
#include "prune/importance.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/threads.h"
#include "tests/prune/prune_test_util.h"

namespace tandem {
namespace {

using testing::RandomCalibration;
using testing::RandomWeights;
using testing::TinyConfig;
using W = GptWeights;

ModelConfig NonUniform() {
  ModelConfig c = TinyConfig();
  c.d_head = 4;
  c.layer_n_head = {4, 2, 3};
  c.layer_d_mlp = {64, 24, 40};
  return c;
}

// (N,C) row-major LayerNorm in double.
std::vector<double> Ln(const std::vector<double>& x, const float* w, const float* b, int N,
                       int C) {
  std::vector<double> out(x.size());
  for (int n = 0; n < N; ++n) {
    double mean = 0, var = 0;
    for (int i = 0; i < C; ++i) mean += x[n * C + i];
    mean /= C;
    for (int i = 0; i < C; ++i) var += (x[n * C + i] - mean) * (x[n * C + i] - mean);
    var /= C;
    const double rstd = 1.0 / std::sqrt(var + 1e-5);
    for (int i = 0; i < C; ++i) out[n * C + i] = (x[n * C + i] - mean) * rstd * w[i] + b[i];
  }
  return out;
}

// out (N,O) = x (N,I) @ w (I,O) + b.
std::vector<double> Mm(const std::vector<double>& x, const float* w, const float* b, int N, int I,
                       int O) {
  std::vector<double> out(static_cast<size_t>(N) * O);
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < O; ++o) {
      double s = b[o];
      for (int i = 0; i < I; ++i) s += x[n * I + i] * w[static_cast<size_t>(i) * O + o];
      out[n * O + o] = s;
    }
  }
  return out;
}

// Minitron's activation scores and ShortGPT's block influence from a direct forward pass, one
// sequence at a time.
ImportanceScores DirectActivationScores(const GptWeights& w, const CalibrationBatches& cal) {
  const ModelConfig& c = w.config();
  const int C = c.d_model, HD = c.head_dim(), T = cal.context;
  ImportanceScores s;
  for (int l = 0; l < c.n_layer; ++l) {
    s.heads.emplace_back(c.heads(l), 0.0);
    s.neurons.emplace_back(c.mlp_width(l), 0.0);
  }
  s.channels.assign(C, 0.0);
  s.blocks.assign(c.n_layer, 0.0);
  const float* p = w.params().data();
  const int sequences = cal.count() * cal.batch;
  for (int seq = 0; seq < sequences; ++seq) {
    const int32_t* tok = cal.tokens.data() + static_cast<size_t>(seq) * T;
    std::vector<double> x(static_cast<size_t>(T) * C);
    for (int t = 0; t < T; ++t) {
      for (int i = 0; i < C; ++i) {
        x[t * C + i] = static_cast<double>(p[w.wte_offset() + tok[t] * C + i]) +
                       p[w.wpe_offset() + t * C + i];
      }
    }
    for (int l = 0; l < c.n_layer; ++l) {
      const BlockWeights b = w.block(l);
      const int NH = c.heads(l), A = c.attn_width(l), M = c.mlp_width(l);
      const std::vector<double> in = x;
      const std::vector<double> ln1 = Ln(x, b.ln1_w, b.ln1_b, T, C);
      const std::vector<double> qkv = Mm(ln1, b.qkv_w, b.qkv_b, T, C, 3 * A);
      std::vector<double> y(static_cast<size_t>(T) * A, 0.0);
      for (int h = 0; h < NH; ++h) {
        for (int t = 0; t < T; ++t) {
          std::vector<double> a(t + 1);
          double mx = -1e300, z = 0;
          for (int u = 0; u <= t; ++u) {
            double d = 0;
            for (int j = 0; j < HD; ++j) {
              d += qkv[t * 3 * A + h * HD + j] * qkv[u * 3 * A + A + h * HD + j];
            }
            a[u] = d / std::sqrt(static_cast<double>(HD));
            mx = std::max(mx, a[u]);
          }
          for (int u = 0; u <= t; ++u) z += (a[u] = std::exp(a[u] - mx));
          for (int j = 0; j < HD; ++j) {
            double v = 0;
            for (int u = 0; u <= t; ++u) v += a[u] / z * qkv[u * 3 * A + 2 * A + h * HD + j];
            y[t * A + h * HD + j] = v;
            s.heads[l][h] += std::fabs(v);
          }
        }
      }
      const std::vector<double> proj = Mm(y, b.proj_w, b.proj_b, T, A, C);
      for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
      const std::vector<double> ln2 = Ln(x, b.ln2_w, b.ln2_b, T, C);
      std::vector<double> g = Mm(ln2, b.fc_w, b.fc_b, T, C, M);
      for (size_t i = 0; i < g.size(); ++i) {
        const double u = g[i];
        g[i] = 0.5 * u * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (u + 0.044715 * u * u * u)));
        s.neurons[l][i % M] += std::fabs(g[i]);
      }
      const std::vector<double> out = Mm(g, b.fcproj_w, b.fcproj_b, T, M, C);
      for (size_t i = 0; i < x.size(); ++i) x[i] += out[i];
      for (int t = 0; t < T; ++t) {
        double dot = 0, n1 = 0, n2 = 0;
        for (int i = 0; i < C; ++i) {
          s.channels[i] += std::fabs(ln1[t * C + i]) + std::fabs(ln2[t * C + i]);
          dot += in[t * C + i] * x[t * C + i];
          n1 += in[t * C + i] * in[t * C + i];
          n2 += x[t * C + i] * x[t * C + i];
        }
        s.blocks[l] += 1.0 - dot / std::sqrt(n1 * n2);
      }
    }
  }
  const double tokens = static_cast<double>(sequences) * T;
  for (int l = 0; l < c.n_layer; ++l) {
    for (double& v : s.heads[l]) v /= tokens * HD;
    for (double& v : s.neurons[l]) v /= tokens;
    s.blocks[l] /= tokens;
  }
  for (double& v : s.channels) v /= tokens;
  return s;
}

void ExpectScoresNear(const std::vector<double>& got, const std::vector<double>& want,
                      double rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], rel * std::fabs(want[i]) + 1e-9) << what << "[" << i << "]";
  }
}

TEST(ImportanceTest, ActivationScoresMatchADirectForward) {
  for (const ModelConfig& c : {TinyConfig(), NonUniform()}) {
    auto w = RandomWeights(c, 3);
    const CalibrationBatches cal = RandomCalibration(2, 3, 12, c.vocab, 5);
    StatusOr<ImportanceScores> s = ComputeImportance(w, ImportanceMethod::kActivation, cal);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    ASSERT_TRUE(s->Fits(c));
    const ImportanceScores want = DirectActivationScores(*w, cal);
    for (int l = 0; l < c.n_layer; ++l) {
      ExpectScoresNear(s->heads[l], want.heads[l], 1e-4, "heads" + std::to_string(l));
      ExpectScoresNear(s->neurons[l], want.neurons[l], 1e-4, "neurons" + std::to_string(l));
    }
    ExpectScoresNear(s->channels, want.channels, 1e-4, "channels");
    ExpectScoresNear(s->blocks, want.blocks, 1e-3, "blocks");
    for (double b : s->blocks) EXPECT_GT(b, 0.0);
  }
}

// Mean loss over the calibration batches (what the Taylor gradient differentiates).
double CalibrationLoss(std::shared_ptr<const GptWeights> w, const CalibrationBatches& cal) {
  GptWorkspace ws(std::move(w));
  const size_t N = static_cast<size_t>(cal.batch) * cal.context;
  double sum = 0;
  for (int b = 0; b < cal.count(); ++b) {
    sum += ws.Forward(cal.tokens.data() + b * N, cal.targets.data() + b * N, cal.batch,
                      cal.context);
  }
  return sum / cal.count();
}

TEST(ImportanceTest, TaylorScoresMatchFiniteDifferencesOfTheLoss) {
  // Some thousand forward passes of a tiny model: one thread, so a loaded machine's thread
  // hand-offs do not dominate.
  SetComputeThreads(1);
  const ModelConfig c = NonUniform();
  auto w = RandomWeights(c, 4, 0.3f);
  const CalibrationBatches cal = RandomCalibration(2, 2, 8, c.vocab, 6);
  StatusOr<ImportanceScores> s = ComputeImportance(w, ImportanceMethod::kTaylor, cal);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  // |w · dL/dw| by central differences for every parameter, in a copy we perturb.
  auto probe = std::make_shared<GptWeights>(*w);
  std::vector<double> value(w->num_params(), 0.0);
  const float eps = 1e-2f;
  // Only the parameters of the structures checked below (the others stay 0 and are not compared).
  auto fd = [&](size_t i) {
    float& x = probe->params()[i];
    const float x0 = x;
    x = x0 + eps;
    const double up = CalibrationLoss(probe, cal);
    x = x0 - eps;
    const double down = CalibrationLoss(probe, cal);
    x = x0;
    value[i] = std::fabs(static_cast<double>(x0) * (up - down) / (2.0 * eps));
  };
  const int HD = c.head_dim(), C = c.d_model;
  // Head 1 of block 2 (A = 12): its q, k, v columns and biases, its rows of attn.c_proj.
  {
    const int l = 2, h = 1, A = c.attn_width(l);
    for (int part = 0; part < 3; ++part) {
      for (int j = 0; j < HD; ++j) {
        const int col = part * A + h * HD + j;
        for (int r = 0; r < C; ++r) fd(w->block_offset(l, W::kQkvW) + r * 3 * A + col);
        fd(w->block_offset(l, W::kQkvB) + col);
      }
    }
    for (int j = 0; j < HD; ++j) {
      for (int k = 0; k < C; ++k) fd(w->block_offset(l, W::kProjW) + (h * HD + j) * C + k);
    }
  }
  // Neuron 7 of block 1 (M = 24).
  {
    const int l = 1, m = 7, M = c.mlp_width(l);
    for (int r = 0; r < C; ++r) fd(w->block_offset(l, W::kFcW) + r * M + m);
    fd(w->block_offset(l, W::kFcB) + m);
    for (int k = 0; k < C; ++k) fd(w->block_offset(l, W::kFcProjW) + m * C + k);
  }
  const ImportanceScores want = SumPerStructure(*w, value);
  EXPECT_NEAR(s->heads[2][1], want.heads[2][1], 0.01 * want.heads[2][1]);
  EXPECT_NEAR(s->neurons[1][7], want.neurons[1][7], 0.01 * want.neurons[1][7]);
  EXPECT_GT(want.heads[2][1], 1e-3);
  EXPECT_GT(want.neurons[1][7], 1e-3);
}

TEST(ImportanceTest, MagnitudeIsTheNormOfEachStructuresWeights) {
  const ModelConfig c = NonUniform();
  auto w = RandomWeights(c, 8);
  StatusOr<ImportanceScores> s = ComputeImportance(w, ImportanceMethod::kMagnitude, {});
  ASSERT_TRUE(s.ok());
  const int HD = c.head_dim(), C = c.d_model;
  // Head 2 of block 0 read straight from the named tensors.
  const int l = 0, h = 2, A = c.attn_width(l);
  const float* qkv = w->param("h.0.attn.c_attn.weight");
  const float* qkv_b = w->param("h.0.attn.c_attn.bias");
  const float* proj = w->param("h.0.attn.c_proj.weight");
  double sq = 0;
  for (int part = 0; part < 3; ++part) {
    for (int j = 0; j < HD; ++j) {
      const int col = part * A + h * HD + j;
      for (int r = 0; r < C; ++r) sq += std::pow(qkv[r * 3 * A + col], 2);
      sq += std::pow(qkv_b[col], 2);
    }
  }
  for (int j = 0; j < HD; ++j) {
    for (int k = 0; k < C; ++k) sq += std::pow(proj[(h * HD + j) * C + k], 2);
  }
  EXPECT_NEAR(s->heads[l][h], std::sqrt(sq), 1e-9 * std::sqrt(sq) + 1e-12);
  // Channel 5: wte and wpe columns, ln_f, and in every block its LayerNorm entries, its c_attn
  // and c_fc rows, its c_proj columns and biases.
  double ch = 0;
  auto add = [&](const std::string& name, size_t index) { ch += std::pow(w->param(name)[index], 2); };
  for (int v = 0; v < c.vocab; ++v) add("wte.weight", v * C + 5);
  for (int t = 0; t < c.context; ++t) add("wpe.weight", t * C + 5);
  add("ln_f.weight", 5);
  add("ln_f.bias", 5);
  for (int b = 0; b < c.n_layer; ++b) {
    const std::string p = "h." + std::to_string(b) + ".";
    const int Ab = c.attn_width(b), M = c.mlp_width(b);
    for (const char* t : {"ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias",
                          "attn.c_proj.bias", "mlp.c_proj.bias"}) {
      add(p + t, 5);
    }
    for (int j = 0; j < 3 * Ab; ++j) add(p + "attn.c_attn.weight", 5 * 3 * Ab + j);
    for (int a = 0; a < Ab; ++a) add(p + "attn.c_proj.weight", a * C + 5);
    for (int m = 0; m < M; ++m) add(p + "mlp.c_fc.weight", 5 * M + m);
    for (int m = 0; m < M; ++m) add(p + "mlp.c_proj.weight", m * C + 5);
  }
  EXPECT_NEAR(s->channels[5], std::sqrt(ch), 1e-9 * std::sqrt(ch));
  // Every parameter belongs to exactly one block or to the embeddings / final LayerNorm: the
  // block norms and the rest add up to the whole.
  double total = 0, blocks = 0;
  for (float x : w->params()) total += static_cast<double>(x) * x;
  for (double b : s->blocks) blocks += b * b;
  double outside = 0;
  for (const char* t : {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"}) {
    const TensorSpec* spec = w->layout().Find(t);
    for (size_t i = 0; i < spec->size; ++i) outside += std::pow(w->params()[spec->offset + i], 2);
  }
  EXPECT_NEAR(blocks + outside, total, 1e-9 * total);
}

TEST(ImportanceTest, RandomIsSeeded) {
  auto w = RandomWeights(TinyConfig(), 1);
  const ImportanceScores a = *ComputeImportance(w, ImportanceMethod::kRandom, {}, 7);
  const ImportanceScores b = *ComputeImportance(w, ImportanceMethod::kRandom, {}, 7);
  const ImportanceScores d = *ComputeImportance(w, ImportanceMethod::kRandom, {}, 8);
  EXPECT_EQ(a.neurons, b.neurons);
  EXPECT_EQ(a.channels, b.channels);
  EXPECT_NE(a.neurons, d.neurons);
}

TEST(ImportanceTest, BadInputIsRefused) {
  auto w = RandomWeights(TinyConfig(), 1);
  EXPECT_EQ(ComputeImportance(w, ImportanceMethod::kActivation, {}).status().code(),
            StatusCode::kInvalidArgument);
  CalibrationBatches cal = RandomCalibration(1, 2, 8, 32, 1);
  cal.tokens[3] = 32;
  StatusOr<ImportanceScores> s = ComputeImportance(w, ImportanceMethod::kTaylor, cal);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("vocabulary"), std::string::npos);
  cal = RandomCalibration(1, 2, 17, 32, 1);  // longer than the context
  EXPECT_FALSE(ComputeImportance(w, ImportanceMethod::kActivation, cal).ok());
  EXPECT_EQ(ParseImportanceMethod("taylor").value(), ImportanceMethod::kTaylor);
  EXPECT_FALSE(ParseImportanceMethod("wanda").ok());
}

}  // namespace
}  // namespace tandem

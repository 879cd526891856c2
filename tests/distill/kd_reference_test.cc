// The dense KD loss and its gradient against an independent PyTorch implementation
// (tests/distill/kd_reference.py, float64 autograd). torch is a declared dependency: when python3
// or torch is missing this test fails and says so, it does not skip.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "distill/kd_loss.h"
#include "tests/temp_dir.h"

namespace tandem {
namespace {

constexpr const char* kPython = "/usr/bin/python3";
constexpr double kRelTol = 1e-5;

struct Shape {
  int N, V;
  float temperature, alpha, scale;
  int ignore_every;
};

// One case's shape and its inputs, made in C++ with a fixed seed.
struct Case {
  int N, V;
  float temperature, alpha;
  std::vector<float> s, t;    // (N,V)
  std::vector<int32_t> y;     // (N)
};

struct Reference {
  double loss = 0, ce = 0, kl = 0;
  int count = 0;
  std::vector<double> grad;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

double Rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

class KdReferenceTest : public testing::TempDirTest {
 protected:
  // Writes every case, runs the PyTorch reference once (importing torch takes seconds), and
  // parses its output; fails the test, with python's stderr, when the script cannot run.
  bool RunReference(const std::vector<Case>& cases, std::vector<Reference>* refs) {
    const std::string in = Path("inputs.txt"), out = Path("reference.txt"), err = Path("stderr.txt");
    std::FILE* f = std::fopen(in.c_str(), "w");
    if (f == nullptr) {
      ADD_FAILURE() << "cannot write " << in;
      return false;
    }
    // %.9g round-trips a float exactly, so python sees the very same inputs.
    std::fprintf(f, "%zu\n", cases.size());
    for (const Case& c : cases) {
      std::fprintf(f, "%d %d %.9g %.9g\n", c.N, c.V, c.temperature, c.alpha);
      for (float x : c.s) std::fprintf(f, "%.9g ", x);
      std::fprintf(f, "\n");
      for (float x : c.t) std::fprintf(f, "%.9g ", x);
      std::fprintf(f, "\n");
      for (int32_t x : c.y) std::fprintf(f, "%d ", x);
      std::fprintf(f, "\n");
    }
    std::fclose(f);
    const std::string cmd = std::string(kPython) + " '" + TANDEM_KD_REFERENCE_PY + "' '" + in +
                            "' '" + out + "' 2> '" + err + "'";
    const int rc = std::system(cmd.c_str());
    if (rc != 0) {
      ADD_FAILURE() << "the PyTorch reference failed (status " << rc << ", exit "
                    << (WIFEXITED(rc) ? WEXITSTATUS(rc) : -1) << "): " << ReadFile(err)
                    << "\n/usr/bin/python3 with torch (Debian python3-torch) is a declared "
                       "dependency of tandem's tests; install it (scripts/install-deps.sh).";
      return false;
    }
    std::ifstream r(out);
    refs->resize(cases.size());
    for (size_t c = 0; c < cases.size(); ++c) {
      Reference& ref = (*refs)[c];
      r >> ref.loss >> ref.ce >> ref.kl >> ref.count;
      ref.grad.resize(cases[c].s.size());
      for (double& g : ref.grad) r >> g;
    }
    if (!r) {
      ADD_FAILURE() << "cannot parse the reference output " << out;
      return false;
    }
    return true;
  }
};

TEST_F(KdReferenceTest, DenseLossAndGradientMatchPyTorch) {
  const Shape shapes[] = {
      {9, 13, 1.0f, 0.5f, 1.0f, 4},   {8, 256, 2.0f, 0.3f, 3.0f, 3},
      {5, 50, 0.7f, 0.0f, 2.0f, 5},   {6, 32, 3.0f, 1.0f, 1.0f, 2},
      {16, 256, 4.0f, 0.1f, 8.0f, 7}, {4, 256, 0.25f, 0.6f, 1.0f, 100},
  };
  std::vector<Case> cases;
  for (const Shape& sh : shapes) {
    Case c{sh.N, sh.V, sh.temperature, sh.alpha, {}, {}, {}};
    Rng rng(1000 + sh.N * 31 + sh.V);
    c.s.resize(sh.N * sh.V);
    c.t.resize(sh.N * sh.V);
    for (auto& x : c.s) x = static_cast<float>(rng.Normal()) * sh.scale;
    for (auto& x : c.t) x = static_cast<float>(rng.Normal()) * sh.scale;
    c.y.resize(sh.N);
    for (int i = 0; i < sh.N; ++i) {
      c.y[i] = i % sh.ignore_every == 1 ? kIgnoreTarget : static_cast<int32_t>(rng.Below(sh.V));
    }
    cases.push_back(std::move(c));
  }
  std::vector<Reference> refs;
  ASSERT_TRUE(RunReference(cases, &refs));

  double worst_loss = 0.0, worst_grad = 0.0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    const Reference& ref = refs[ci];
    SCOPED_TRACE(::testing::Message() << "N=" << c.N << " V=" << c.V << " T=" << c.temperature
                                      << " alpha=" << c.alpha);
    const KdOptions opt{c.temperature, c.alpha};
    const KdLoss l = KdForward(c.s.data(), c.t.data(), c.y.data(), c.N, c.V, opt);
    std::vector<float> ds(c.s.size());
    KdBackward(ds.data(), c.s.data(), c.t.data(), c.y.data(), c.N, c.V, opt, l.count);

    EXPECT_EQ(l.count, ref.count);
    EXPECT_LT(Rel(l.loss, ref.loss), kRelTol) << l.loss << " vs " << ref.loss;
    EXPECT_LT(Rel(l.ce, ref.ce), kRelTol) << l.ce << " vs " << ref.ce;
    EXPECT_LT(Rel(l.kl, ref.kl), kRelTol) << l.kl << " vs " << ref.kl;
    worst_loss = std::max({worst_loss, Rel(l.loss, ref.loss), Rel(l.kl, ref.kl)});
    // Relative per element, floored at 1% of the row's largest gradient: a float gradient carries
    // ~1e-7 of its row's scale, not of each of its tiny entries.
    for (int i = 0; i < c.N; ++i) {
      double row_max = 0.0;
      for (int v = 0; v < c.V; ++v) row_max = std::max(row_max, std::abs(ref.grad[i * c.V + v]));
      for (int v = 0; v < c.V; ++v) {
        const size_t j = static_cast<size_t>(i) * c.V + v;
        const double err =
            std::abs(ds[j] - ref.grad[j]) / std::max(std::abs(ref.grad[j]), 1e-2 * row_max + 1e-30);
        worst_grad = std::max(worst_grad, err);
        EXPECT_LT(err, kRelTol) << "row " << i << " token " << v << ": " << ds[j] << " vs "
                                << ref.grad[j];
      }
    }
  }
  std::printf("max relative error vs PyTorch: loss %.2e, gradient %.2e\n", worst_loss, worst_grad);
}

}  // namespace
}  // namespace tandem

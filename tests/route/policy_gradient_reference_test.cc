// The policy-gradient surrogate (GAPG and GRPO advantages, route/policy_gradient.h) and its
// gradient in the logits against an independent PyTorch implementation
// (tests/route/policy_gradient_reference.py, float64 autograd). torch is a declared dependency:
// when python3 or torch is missing this test fails and says so, it does not skip.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "route/policy_gradient.h"
#include "tests/temp_dir.h"

namespace tandem {
namespace {

constexpr const char* kPython = "/usr/bin/python3";
constexpr double kRelTol = 1e-5;

struct Case {
  AdvantageMode mode;
  int P, G, V;
  double eps = 1e-4;
  std::vector<double> rewards;  // (P*G)
  std::vector<int> owner;       // (rows): completion index k*G + i
  std::vector<int32_t> targets; // (rows)
  std::vector<float> logits;    // (rows,V)
};

struct Reference {
  double loss = 0;
  std::vector<double> grad;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class PolicyGradientReferenceTest : public testing::TempDirTest {
 protected:
  bool RunReference(const std::vector<Case>& cases, std::vector<Reference>* refs) {
    const std::string in = Path("inputs.txt"), out = Path("reference.txt"), err = Path("stderr.txt");
    std::FILE* f = std::fopen(in.c_str(), "w");
    if (f == nullptr) {
      ADD_FAILURE() << "cannot write " << in;
      return false;
    }
    std::fprintf(f, "%zu\n", cases.size());
    for (const Case& c : cases) {
      std::fprintf(f, "%d %d %d %d %.17g %zu\n", c.mode == AdvantageMode::kGrpo ? 1 : 0, c.P, c.G,
                   c.V, c.eps, c.owner.size());
      for (double r : c.rewards) std::fprintf(f, "%.17g ", r);
      std::fprintf(f, "\n");
      for (int o : c.owner) std::fprintf(f, "%d ", o);
      std::fprintf(f, "\n");
      for (int32_t t : c.targets) std::fprintf(f, "%d ", t);
      std::fprintf(f, "\n");
      // %.9g round-trips a float exactly, so python sees the very same inputs.
      for (float x : c.logits) std::fprintf(f, "%.9g ", x);
      std::fprintf(f, "\n");
    }
    std::fclose(f);
    const std::string cmd = std::string(kPython) + " '" + TANDEM_PG_REFERENCE_PY + "' '" + in +
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
      (*refs)[c].grad.resize(cases[c].logits.size());
      r >> (*refs)[c].loss;
      for (double& g : (*refs)[c].grad) r >> g;
    }
    if (!r) {
      ADD_FAILURE() << "cannot parse the reference output " << out;
      return false;
    }
    return true;
  }
};

TEST_F(PolicyGradientReferenceTest, LossAndGradientMatchPyTorch) {
  struct Shape {
    AdvantageMode mode;
    int P, G, V;
    float scale;
    bool ties;  // rewards from {0, a_c, a_a} (ties, groups all equal) or continuous
  };
  const Shape shapes[] = {
      {AdvantageMode::kGapg, 1, 2, 7, 1.0f, false},   {AdvantageMode::kGapg, 3, 4, 256, 2.0f, true},
      {AdvantageMode::kGapg, 2, 8, 50, 4.0f, false},  {AdvantageMode::kGrpo, 1, 3, 11, 1.0f, false},
      {AdvantageMode::kGrpo, 3, 5, 256, 3.0f, true},  {AdvantageMode::kGrpo, 2, 6, 32, 0.5f, false},
  };
  std::vector<Case> cases;
  for (const Shape& sh : shapes) {
    Case c{sh.mode, sh.P, sh.G, sh.V, 1e-4, {}, {}, {}, {}};
    Rng rng(500 + sh.P * 13 + sh.G * 7 + sh.V);
    const double levels[] = {0.0, 0.5, 1.0};
    for (int k = 0; k < sh.P * sh.G; ++k) {
      c.rewards.push_back(sh.ties ? levels[rng.Below(3)] : rng.Normal());
    }
    if (sh.ties) {  // one group with every reward equal: its advantages are 0
      for (int i = 0; i < sh.G; ++i) c.rewards[i] = 0.5;
    }
    for (int k = 0; k < sh.P * sh.G; ++k) {
      const int len = 1 + static_cast<int>(rng.Below(5));  // completion tokens
      for (int t = 0; t < len; ++t) {
        c.owner.push_back(k);
        c.targets.push_back(static_cast<int32_t>(rng.Below(sh.V)));
        for (int v = 0; v < sh.V; ++v) c.logits.push_back(sh.scale * static_cast<float>(rng.Normal()));
      }
    }
    cases.push_back(std::move(c));
  }
  std::vector<Reference> refs;
  ASSERT_TRUE(RunReference(cases, &refs));

  double worst_loss = 0.0, worst_grad = 0.0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& c = cases[ci];
    SCOPED_TRACE(::testing::Message() << "case " << ci << " P=" << c.P << " G=" << c.G);
    PolicyGradientOptions opt;
    opt.mode = c.mode;
    opt.grpo_epsilon = c.eps;
    std::vector<double> adv;
    for (int k = 0; k < c.P; ++k) {
      const auto a = GroupAdvantages(std::span<const double>(c.rewards.data() + k * c.G, c.G), opt);
      adv.insert(adv.end(), a.begin(), a.end());
    }
    const int N = static_cast<int>(c.owner.size());
    std::vector<float> coef(N);
    for (int n = 0; n < N; ++n) coef[n] = static_cast<float>(adv[c.owner[n]]);
    const float scale = 1.0f / c.P;
    const double loss = PolicyGradientForward(c.logits.data(), c.targets.data(), coef.data(), N, c.V) * scale;
    std::vector<float> d(c.logits.size());
    PolicyGradientBackward(d.data(), c.logits.data(), c.targets.data(), coef.data(), N, c.V, scale);
    // The loss is a sum of terms of both signs: relative to the scale of its terms.
    double scale_terms = 0.0;
    for (int n = 0; n < N; ++n) scale_terms += std::abs(adv[c.owner[n]]);
    const double loss_err = std::abs(loss - refs[ci].loss) / std::max(std::abs(refs[ci].loss), scale_terms / c.P);
    EXPECT_LT(loss_err, kRelTol) << loss << " vs " << refs[ci].loss;
    worst_loss = std::max(worst_loss, loss_err);
    for (int n = 0; n < N; ++n) {
      double row_max = 0.0;
      for (int v = 0; v < c.V; ++v) row_max = std::max(row_max, std::abs(refs[ci].grad[n * c.V + v]));
      for (int v = 0; v < c.V; ++v) {
        const size_t j = static_cast<size_t>(n) * c.V + v;
        const double ref = refs[ci].grad[j];
        const double err = std::abs(d[j] - ref) / std::max(std::abs(ref), 1e-2 * row_max + 1e-30);
        worst_grad = std::max(worst_grad, err);
        EXPECT_LT(err, kRelTol) << "row " << n << " token " << v << ": " << d[j] << " vs " << ref;
      }
    }
  }
  std::printf("max relative error vs PyTorch: loss %.2e, gradient %.2e\n", worst_loss, worst_grad);
}

}  // namespace
}  // namespace tandem

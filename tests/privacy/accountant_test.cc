// The RDP accountant against Opacus's published values (opacus/tests/accountants_test.py and the
// analysis/rdp.py docstring), closed forms, an independent numerical integration of the Rényi
// divergence, and its own invariants (monotonicity, composition, continuity, state round trip).
#include "privacy/accountant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

namespace tandem::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double Epsilon(double q, double sigma, int64_t steps, double delta,
               const std::vector<double>& orders = DefaultRdpOrders()) {
  auto spent = EpsilonFromRdp(orders, ComputeRdp(q, sigma, steps, orders), delta);
  EXPECT_TRUE(spent.ok()) << spent.status().ToString();
  return spent.ok() ? spent->epsilon : std::nan("");
}

TEST(AccountantTest, DefaultOrdersAreOpacus) {
  const auto& o = DefaultRdpOrders();
  ASSERT_EQ(o.size(), 151u);  // 99 of 1 + x/10, then the 52 of 12..63
  EXPECT_DOUBLE_EQ(o.front(), 1.1);
  EXPECT_DOUBLE_EQ(o[98], 10.9);
  EXPECT_EQ(o[99], 12.0);
  EXPECT_EQ(o.back(), 63.0);
}

// opacus/tests/accountants_test.py test_rdp_accountant: σ = 1.5, q = 0.04, int(90 / 0.04) = 2250
// steps one at a time, δ = 1e-5 -> 7.32911117143.
TEST(AccountantTest, MatchesOpacusPublishedEpsilon) {
  RdpAccountant accountant;
  for (int i = 0; i < 2250; ++i) accountant.Step(0.04, 1.5);
  EXPECT_EQ(accountant.total_steps(), 2250);
  auto spent = accountant.Spent(1e-5);
  ASSERT_TRUE(spent.ok());
  EXPECT_NEAR(spent->epsilon, 7.32911117143, 7.32911117143 * 1e-6);
  EXPECT_NEAR(spent->epsilon, 7.32911117143, 1e-9);  // in fact to Opacus's printed digits
  EXPECT_DOUBLE_EQ(Epsilon(0.04, 1.5, 2250, 1e-5), spent->epsilon);
}

// The example in the docstring of opacus/accountants/analysis/rdp.py: two phases, orders 2..32,
// δ = 1e-5 -> ε 0.336 (printed to three digits) at order 23.
TEST(AccountantTest, MatchesOpacusDocstringExample) {
  std::vector<double> orders;
  for (int a = 2; a <= 32; ++a) orders.push_back(a);
  RdpAccountant accountant(orders);
  accountant.Step(1e-5, 1.0, 10);
  accountant.Step(1e-4, 3.0, 4);
  auto spent = accountant.Spent(1e-5);
  ASSERT_TRUE(spent.ok());
  EXPECT_NEAR(spent->epsilon, 0.336, 0.0005);
  EXPECT_EQ(spent->best_order, 23.0);
}

// Opacus's get_noise_multiplier (opacus/accountants/utils.py) bisects on σ from [0, 20] until ε is
// within 0.01 below the target and returns the upper end. Re-running that exact search on this
// accountant must land on the values its tests publish: 1.3562 (2000 steps) and 1.416 (90 epochs
// at q = 0.04, i.e. 2250 steps), both to 4 places.
double OpacusGetNoiseMultiplier(double target, double delta, double q, int64_t steps) {
  double lo = 0.0, hi = 10.0, eps_hi = kInf;
  while (eps_hi > target) {
    hi *= 2;
    eps_hi = Epsilon(q, hi, steps, delta);
  }
  while (target - eps_hi > 0.01) {
    const double mid = (lo + hi) / 2;
    const double eps = Epsilon(q, mid, steps, delta);
    if (eps < target) {
      hi = mid;
      eps_hi = eps;
    } else {
      lo = mid;
    }
  }
  return hi;
}

TEST(AccountantTest, MatchesOpacusPublishedNoiseMultipliers) {
  EXPECT_NEAR(OpacusGetNoiseMultiplier(8.0, 1e-5, 0.04, 2000), 1.3562, 5e-5);
  EXPECT_NEAR(OpacusGetNoiseMultiplier(8.0, 1e-5, 0.04, 2250), 1.416, 5e-5);
}

TEST(AccountantTest, CalibrateSigmaIsTheSmallestSigmaMeetingTheTarget) {
  struct Case { double q; int64_t steps; double delta, target; };
  for (const Case& c : {Case{0.04, 2000, 1e-5, 8.0}, Case{0.04, 2250, 1e-5, 8.0},
                        Case{0.01, 500, 1e-6, 1.0}, Case{0.2, 50, 1e-5, 3.0},
                        Case{1.0, 10, 1e-5, 2.0}}) {
    auto sigma = CalibrateSigma(c.q, c.steps, c.delta, c.target);
    ASSERT_TRUE(sigma.ok()) << sigma.status().ToString();
    EXPECT_LE(Epsilon(c.q, *sigma, c.steps, c.delta), c.target);
    EXPECT_GT(Epsilon(c.q, *sigma * (1 - 1e-5), c.steps, c.delta), c.target)
        << "q=" << c.q << " sigma=" << *sigma;
  }
  // Opacus stops within ε 0.01 of the target from above in σ, so its answer is a little larger.
  auto sigma = CalibrateSigma(0.04, 2000, 1e-5, 8.0);
  ASSERT_TRUE(sigma.ok());
  EXPECT_LT(*sigma, 1.3562 + 5e-5);
  EXPECT_GT(*sigma, 1.3562 * 0.99);
}

TEST(AccountantTest, CalibrateSigmaEdgesAndErrors) {
  EXPECT_EQ(*CalibrateSigma(0.0, 100, 1e-5, 1.0), 0.0);  // nobody sampled: no noise needed
  EXPECT_EQ(*CalibrateSigma(0.1, 0, 1e-5, 1.0), 0.0);
  auto unreachable = CalibrateSigma(0.04, 1000, 1e-5, 0.001);
  ASSERT_FALSE(unreachable.ok());
  EXPECT_EQ(unreachable.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unreachable.status().message().find("out of reach"), std::string::npos);
  EXPECT_FALSE(CalibrateSigma(0.04, 1000, 1e-5, 0.0).ok());
  EXPECT_FALSE(CalibrateSigma(0.04, 1000, 1e-5, kInf).ok());
  EXPECT_FALSE(CalibrateSigma(1.5, 1000, 1e-5, 1.0).ok());
  EXPECT_FALSE(CalibrateSigma(0.04, -1, 1e-5, 1.0).ok());
  EXPECT_FALSE(CalibrateSigma(0.04, 1000, 1.0, 1.0).ok());
  const std::vector<double> bad_orders = {2.0, 1.0};
  EXPECT_FALSE(CalibrateSigma(0.04, 1000, 1e-5, 1.0, bad_orders).ok());
}

// q = 1 is the plain Gaussian mechanism: RDP α/(2σ²) per step.
TEST(AccountantTest, FullBatchIsTheGaussianClosedForm) {
  const auto& o = DefaultRdpOrders();
  const auto rdp = ComputeRdp(1.0, 2.0, 7, o);
  for (size_t k = 0; k < o.size(); ++k) EXPECT_DOUBLE_EQ(rdp[k], 7 * o[k] / 8.0);
}

TEST(AccountantTest, NoNoiseIsInfiniteEpsilonAndNoSamplingIsZero) {
  const auto& o = DefaultRdpOrders();
  auto none = EpsilonFromRdp(o, ComputeRdp(0.1, 0.0, 3, o), 1e-5);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->epsilon, kInf);
  auto zero = EpsilonFromRdp(o, ComputeRdp(0.0, 0.0, 3, o), 1e-5);
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(zero->epsilon, 0.0);
  EXPECT_EQ(Epsilon(0.3, 1.0, 0, 1e-5), 0.0);
  RdpAccountant fresh;
  EXPECT_EQ(fresh.Spent(1e-5)->epsilon, 0.0);
  // Every order NaN: no bound at all, as Opacus ({inf, nan}).
  std::vector<double> nan_rdp(o.size(), std::nan(""));
  auto nan = EpsilonFromRdp(o, nan_rdp, 1e-5);
  ASSERT_TRUE(nan.ok());
  EXPECT_EQ(nan->epsilon, kInf);
  EXPECT_TRUE(std::isnan(nan->best_order));
  // A NaN order is skipped, not chosen.
  std::vector<double> some = ComputeRdp(0.04, 1.5, 100, o);
  const double before = EpsilonFromRdp(o, some, 1e-5)->epsilon;
  some[0] = std::nan("");
  EXPECT_GE(EpsilonFromRdp(o, some, 1e-5)->epsilon, before);
}

TEST(AccountantTest, EpsilonIsMonotone) {
  const double base = Epsilon(0.05, 1.2, 500, 1e-5);
  EXPECT_GT(Epsilon(0.05, 1.2, 1000, 1e-5), base);   // more steps
  EXPECT_GT(Epsilon(0.10, 1.2, 500, 1e-5), base);    // more sampling
  EXPECT_LT(Epsilon(0.05, 1.5, 500, 1e-5), base);    // more noise
  EXPECT_LT(Epsilon(0.05, 1.2, 500, 1e-3), base);    // weaker δ
  double prev = 0.0;
  for (int64_t steps : {1, 10, 100, 1000, 10000}) {
    const double e = Epsilon(0.01, 1.0, steps, 1e-5);
    EXPECT_GT(e, prev);
    prev = e;
  }
}

TEST(AccountantTest, PhasesComposeByAddingRdp) {
  const auto& o = DefaultRdpOrders();
  RdpAccountant accountant;
  accountant.Step(0.02, 1.1, 300);
  accountant.Step(0.05, 0.9);
  accountant.Step(0.05, 0.9, 99);  // merges with the previous phase
  const auto a = ComputeRdp(0.02, 1.1, 300, o);
  const auto b = ComputeRdp(0.05, 0.9, 100, o);
  const auto total = accountant.Rdp();
  std::vector<double> sum(o.size());
  for (size_t k = 0; k < o.size(); ++k) {
    sum[k] = a[k] + b[k];
    EXPECT_NEAR(total[k], sum[k], 1e-12 * sum[k]);
  }
  auto spent = accountant.Spent(1e-5);
  ASSERT_TRUE(spent.ok());
  EXPECT_NEAR(spent->epsilon, EpsilonFromRdp(o, sum, 1e-5)->epsilon, 1e-12);
  EXPECT_GT(spent->epsilon, Epsilon(0.02, 1.1, 300, 1e-5));
  EXPECT_GT(spent->epsilon, Epsilon(0.05, 0.9, 100, 1e-5));
  EXPECT_EQ(accountant.total_steps(), 400);
  // 100 single steps compose to the same RDP as one 100-step call.
  RdpAccountant singles;
  for (int i = 0; i < 100; ++i) singles.Step(0.05, 0.9);
  const auto s = singles.Rdp();
  for (size_t k = 0; k < o.size(); ++k) EXPECT_NEAR(s[k], b[k], 1e-12 * b[k]);
}

// Integer orders use the binomial sum, fractional ones the signed series: the two must meet.
TEST(AccountantTest, IntegerAndFractionalOrdersAreContinuous) {
  for (double q : {0.001, 0.04, 0.3, 0.9}) {
    for (double sigma : {0.7, 1.5, 6.0}) {
      for (int a : {2, 3, 5, 12, 40}) {
        const double at = detail::LogA(q, sigma, a, false);
        for (double eps : {-1e-7, 1e-7}) {
          const double near = detail::LogA(q, sigma, a + eps, false);
          EXPECT_NEAR(near, at, 1e-5 * std::abs(at) + 1e-12)
              << "q=" << q << " sigma=" << sigma << " alpha=" << a << eps;
        }
      }
    }
  }
}

// The scaled linear-space summation ComputeRdp uses equals Opacus's literal log-space recurrences.
// Both sum an alternating series whose terms are O(1) while log A may be ~1e-5, so each carries
// rounding of ~1e-16 per term in A: they agree to 1e-12 absolute in log A (relative 1e-12 in A).
TEST(AccountantTest, FastSeriesMatchesOpacusLiteralSeries) {
  for (double q : {1e-5, 0.001, 0.04, 0.3, 0.5, 0.7, 0.99}) {
    for (double sigma : {0.4, 0.8, 1.5, 4.0, 30.0}) {
      for (double a : {1.1, 1.5, 2.7, 4.4, 7.9, 10.9, 20.5}) {
        const double fast = detail::LogA(q, sigma, a, false);
        const double literal = detail::LogA(q, sigma, a, true);
        EXPECT_NEAR(fast, literal, 1e-10 * std::abs(literal) + 1e-12)
            << "q=" << q << " sigma=" << sigma << " alpha=" << a;
      }
    }
  }
}

// An independent reference: A_α = E_{z~N(0,σ²)}[((1-q) + q·exp((2z-1)/(2σ²)))^α], the Rényi
// moment of the sampled Gaussian mixture against N(0, σ²) (Mironov et al. 2019, Section 3.3),
// by composite Simpson quadrature in log space on a wide, fine grid.
double LogAByQuadrature(double q, double sigma, double alpha) {
  const double lo = -40.0 * sigma, hi = 40.0 * sigma + alpha + 1.0;
  const int n = 400000;  // even
  const double h = (hi - lo) / n;
  const double s2 = sigma * sigma;
  std::vector<double> log_f(n + 1);
  double max_log = -kInf;
  for (int i = 0; i <= n; ++i) {
    const double z = lo + i * h;
    const double t = (2 * z - 1) / (2 * s2);
    const double a = std::log1p(-q), b = std::log(q) + t;  // log((1-q) + q e^t)
    const double log_mix = std::max(a, b) + std::log1p(std::exp(-std::abs(a - b)));
    log_f[i] = -z * z / (2 * s2) - std::log(sigma * std::sqrt(2 * std::numbers::pi)) + alpha * log_mix;
    max_log = std::max(max_log, log_f[i]);
  }
  double sum = 0.0;
  for (int i = 0; i <= n; ++i) {
    const double w = (i == 0 || i == n) ? 1.0 : (i % 2 ? 4.0 : 2.0);
    sum += w * std::exp(log_f[i] - max_log);
  }
  return max_log + std::log(sum * h / 3.0);
}

TEST(AccountantTest, AgreesWithNumericalIntegrationOfTheRenyiMoment) {
  struct Case { double q, sigma, alpha; };
  for (const Case& c : {Case{0.04, 1.5, 1.5}, Case{0.04, 1.5, 3.9}, Case{0.04, 1.5, 12},
                        Case{0.01, 0.8, 2.5}, Case{0.01, 0.8, 7}, Case{0.3, 2.0, 5.3},
                        Case{0.3, 2.0, 32}, Case{0.9, 1.0, 1.1}, Case{0.9, 1.0, 10.9}}) {
    const double rdp = ComputeRdp(c.q, c.sigma, 1, std::vector<double>{c.alpha})[0];
    const double reference = LogAByQuadrature(c.q, c.sigma, c.alpha) / (c.alpha - 1);
    EXPECT_NEAR(rdp, reference, 1e-8 * std::abs(reference) + 1e-13)
        << "q=" << c.q << " sigma=" << c.sigma << " alpha=" << c.alpha;
  }
}

TEST(AccountantTest, SaveAndLoadStateResumesTheHistory) {
  RdpAccountant a;
  a.Step(0.03, 1.3, 120);
  a.Step(1.0 / 3.0, 0.7, 5);
  const std::string state = a.SaveState();
  RdpAccountant b;
  ASSERT_TRUE(b.LoadState(state).ok());
  EXPECT_EQ(b.SaveState(), state);
  EXPECT_EQ(b.Spent(1e-5)->epsilon, a.Spent(1e-5)->epsilon);
  a.Step(0.03, 1.3, 10);
  b.Step(0.03, 1.3, 10);
  EXPECT_EQ(b.Spent(1e-6)->epsilon, a.Spent(1e-6)->epsilon);
  EXPECT_EQ(b.total_steps(), 135);

  RdpAccountant empty;
  EXPECT_EQ(empty.SaveState(), "");
  ASSERT_TRUE(b.LoadState("").ok());
  EXPECT_EQ(b.total_steps(), 0);

  ASSERT_TRUE(b.LoadState(state).ok());
  for (const char* bad : {"garbage", "0.1 1.0", "0.1 1.0 5 7", "1.5 1.0 5", "0.1 -1 5",
                          "0.1 1.0 -5", "0.1 1.0 5;", "0.1 1.0 2.5", "0.1 nan 5"}) {
    EXPECT_FALSE(b.LoadState(bad).ok()) << bad;
    EXPECT_EQ(b.SaveState(), state) << "state changed by a failed load of " << bad;
  }
}

TEST(AccountantTest, InvalidInputsAreRejectedWithClearMessages) {
  auto s = ValidateSampledGaussian(1.2, 1.0, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("q"), std::string::npos);
  EXPECT_FALSE(ValidateSampledGaussian(-0.1, 1.0, 1).ok());
  EXPECT_FALSE(ValidateSampledGaussian(std::nan(""), 1.0, 1).ok());
  EXPECT_FALSE(ValidateSampledGaussian(0.1, -1.0, 1).ok());
  EXPECT_FALSE(ValidateSampledGaussian(0.1, kInf, 1).ok());
  EXPECT_FALSE(ValidateSampledGaussian(0.1, 1.0, -1).ok());
  EXPECT_TRUE(ValidateSampledGaussian(0.0, 0.0, 0).ok());
  EXPECT_FALSE(ValidateRdpOrders(std::vector<double>{}).ok());
  EXPECT_FALSE(ValidateRdpOrders(std::vector<double>{2.0, 1.0}).ok());
  EXPECT_FALSE(ValidateRdpOrders(std::vector<double>{kInf}).ok());

  const std::vector<double> orders = {2.0, 4.0};
  const std::vector<double> rdp = {0.1, 0.2};
  EXPECT_FALSE(EpsilonFromRdp(orders, std::vector<double>{0.1}, 1e-5).ok());
  for (double delta : {0.0, 1.0, -1e-5, std::nan("")}) {
    auto r = EpsilonFromRdp(orders, rdp, delta);
    EXPECT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("delta"), std::string::npos);
  }
  EXPECT_FALSE(RdpAccountant().Spent(2.0).ok());
}

TEST(AccountantDeathTest, InvalidStepAborts) {
  RdpAccountant a;
  EXPECT_DEATH(a.Step(2.0, 1.0), "sampling rate");
  EXPECT_DEATH(ComputeRdp(0.1, 1.0, 1, std::vector<double>{0.5}), "orders");
}

}  // namespace
}  // namespace tandem::privacy

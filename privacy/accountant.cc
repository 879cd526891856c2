// RDP of the sampled Gaussian mechanism, following Opacus's analysis/rdp.py term for term (which
// follows TF Privacy's rdp_accountant.py): log A_α in log space, an exact binomial sum at integer
// α, a signed two-sided series at fractional α, and Balle et al.'s RDP -> (ε, δ) conversion.
#include "privacy/accountant.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numbers>
#include <sstream>

namespace tandem::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// The calibration search gives up above this noise multiplier (Opacus's MAX_SIGMA).
constexpr double kMaxSigma = 1e6;
// A guard on the fractional-order series: Opacus loops until the terms fall below e^-30, which
// they do within tens of terms for any sane (q, σ); a runaway series reports NaN (skipped, so
// conservative) instead of spinning.
constexpr int kMaxSeriesTerms = 1000000;

// Programming-error check for inputs that the caller should have validated: prints why.
void CheckOk(const Status& status, const char* where) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", where, status.message().c_str());
    std::abort();
  }
}

// log(exp(logx) + exp(logy)).
double LogAdd(double logx, double logy) {
  const double a = std::min(logx, logy), b = std::max(logx, logy);
  if (a == -kInf) return b;
  return std::log1p(std::exp(a - b)) + b;
}

// log(exp(logx) - exp(logy)); NaN when the difference is negative (Opacus raises there).
double LogSub(double logx, double logy) {
  if (std::isnan(logx) || std::isnan(logy) || logx < logy) return kNaN;
  if (logy == -kInf) return logx;
  if (logx == logy) return -kInf;
  const double d = logx - logy;
  if (d > 709.0) return logx;  // expm1 would overflow; log(expm1(d)) == d to double precision
  return std::log(std::expm1(d)) + logy;
}

// erfc(x) = factor · e^shift, so that neither part underflows: shift = 0 below x = 20, else
// shift = -x² and factor = erfcx(x) from the asymptotic series
// erfcx(x) = 1/(x√π) · Σ_k (-1)^k (2k-1)!! / (2x²)^k, whose terms at x >= 20 fall below double
// precision long before they start to grow.
double ErfcSplit(double x, double* shift) {
  if (x < 20.0) {
    *shift = 0.0;
    return std::erfc(x);
  }
  const double inv2x2 = 1.0 / (2.0 * x * x);
  double term = 1.0, sum = 1.0;
  for (int k = 1; k <= 8; ++k) {
    term *= -(2.0 * k - 1.0) * inv2x2;
    sum += term;
  }
  *shift = -x * x;
  return sum / (x * std::sqrt(std::numbers::pi));
}

// log(erfc(x)), accurate where erfc(x) underflows.
double LogErfc(double x) {
  double shift;
  const double factor = ErfcSplit(x, &shift);
  return shift + std::log(factor);
}

// log A_α for integer α (Mironov et al. 2019, Section 3.3): the sum over i = 0..α of
// C(α, i) q^i (1-q)^(α-i) exp((i² - i)/(2σ²)).
double LogAInt(double q, double sigma, int64_t alpha) {
  const double log_q = std::log(q), log_1mq = std::log1p(-q);
  const double inv_2s2 = 1.0 / (2.0 * sigma * sigma);
  double log_a = -kInf;
  double binom = 1.0;  // C(α, i): exact below 2^53, then rounded once per step
  for (int64_t i = 0; i <= alpha; ++i) {
    if (i > 0) binom = binom * static_cast<double>(alpha - i + 1) / static_cast<double>(i);
    const double fi = static_cast<double>(i);
    const double log_coef = std::log(binom) + fi * log_q + static_cast<double>(alpha - i) * log_1mq;
    log_a = LogAdd(log_a, log_coef + (fi * fi - fi) * inv_2s2);
  }
  return log_a;
}

// log A_α for fractional α: A_α split at z0 = σ² log(1/q - 1) + 1/2 into two integrals, each an
// alternating-sign binomial series (C(α, i) changes sign once i > α), summed until both terms drop
// below e^-30. This is Opacus's _compute_log_a_for_frac_alpha literally: log-space LogAdd/LogSub
// by the sign of the coefficient. Kept as the reference for LogAFrac (detail::LogA).
double LogAFracLiteral(double q, double sigma, double alpha) {
  const double log_q = std::log(q), log_1mq = std::log1p(-q);
  const double s2 = sigma * sigma;
  const double inv_2s2 = 1.0 / (2.0 * s2);
  const double inv_sqrt2_sigma = 1.0 / (std::sqrt(2.0) * sigma);
  const double log_half = std::log(0.5);
  const double z0 = s2 * std::log(1.0 / q - 1.0) + 0.5;
  double log_a0 = -kInf, log_a1 = -kInf;
  double coef = 1.0;  // C(α, i) = Π_{k<i} (α - k)/(k + 1), signed
  for (int i = 0; i < kMaxSeriesTerms; ++i) {
    if (i > 0) coef = coef * (alpha - (i - 1)) / i;
    const double fi = static_cast<double>(i);
    const double j = alpha - fi;
    const double log_coef = std::log(std::abs(coef));
    const double log_t0 = log_coef + fi * log_q + j * log_1mq;
    const double log_t1 = log_coef + j * log_q + fi * log_1mq;
    const double log_e0 = log_half + LogErfc((fi - z0) * inv_sqrt2_sigma);
    const double log_e1 = log_half + LogErfc((z0 - j) * inv_sqrt2_sigma);
    const double log_s0 = log_t0 + (fi * fi - fi) * inv_2s2 + log_e0;
    const double log_s1 = log_t1 + (j * j - j) * inv_2s2 + log_e1;
    if (coef > 0) {
      log_a0 = LogAdd(log_a0, log_s0);
      log_a1 = LogAdd(log_a1, log_s1);
    } else {
      log_a0 = LogSub(log_a0, log_s0);
      log_a1 = LogSub(log_a1, log_s1);
    }
    if (std::isnan(log_a0) || std::isnan(log_a1)) return kNaN;
    if (std::max(log_s0, log_s1) < -30.0) return LogAdd(log_a0, log_a1);
  }
  return kNaN;
}

// A signed sum of positive terms t kept as acc·e^ref, ref the log of the largest term so far: a
// term costs one exp (or none, see Add) instead of a log-space add's log1p, exp, log and expm1.
class ScaledSum {
 public:
  // Adds ±e^log_t.
  void AddLog(double log_t, bool positive) {
    if (log_t == -kInf) return;
    if (log_t > ref_) {
      Rescale(log_t);
      acc_ += positive ? 1.0 : -1.0;
    } else {
      acc_ += positive ? std::exp(log_t - ref_) : -std::exp(log_t - ref_);
    }
    went_negative_ |= acc_ < 0.0;
  }
  // Adds ±v·e^ref for a finite v >= 0 (the caller computed the term relative to ref()).
  void AddRelative(double v, bool positive) {
    if (v > 1.0) {  // larger than the reference: make it the reference
      acc_ /= v;
      ref_ += std::log(v);
      threshold_ = std::exp(-30.0 - ref_);
      acc_ += positive ? 1.0 : -1.0;
    } else {
      acc_ += positive ? v : -v;
    }
    went_negative_ |= acc_ < 0.0;
  }
  double ref() const { return ref_; }
  // e^(-30 - ref): a relative term below this is below e^-30 (Opacus's stopping rule).
  double threshold() const { return threshold_; }
  // log of the sum; NaN if a partial sum went negative (where Opacus's LogSub raises).
  double Log() const {
    if (went_negative_) return kNaN;
    if (acc_ <= 0.0) return -kInf;
    return ref_ + std::log(acc_);
  }

 private:
  void Rescale(double new_ref) {
    acc_ = ref_ == -kInf ? 0.0 : acc_ * std::exp(ref_ - new_ref);
    ref_ = new_ref;
    threshold_ = std::exp(-30.0 - ref_);
  }
  double ref_ = -kInf;
  double acc_ = 0.0;
  double threshold_ = kInf;
  bool went_negative_ = false;
};

// The same series as LogAFracLiteral, summed with ScaledSum. A term is
// |C(α, i)| · exp(a) · erfc(x)/2 with a the exponent from q, 1-q and σ; it is computed relative to
// the running reference as |C| · exp(a + shift - ref) · factor/2 (erfc split as in ErfcSplit): an
// exp and an erfc, no logs, unless exp would overflow or the reference is so large (> ~670) that
// e^-30 is not representable relative to it, when it goes through log space as the literal
// version does. Agrees with the literal sum to ~1e-12 (tested).
double LogAFrac(double q, double sigma, double alpha) {
  const double log_q = std::log(q), log_1mq = std::log1p(-q);
  const double s2 = sigma * sigma;
  const double inv_2s2 = 1.0 / (2.0 * s2);
  const double inv_sqrt2_sigma = 1.0 / (std::sqrt(2.0) * sigma);
  const double log_half = std::log(0.5);
  const double z0 = s2 * std::log(1.0 / q - 1.0) + 0.5;
  ScaledSum a0, a1;
  // One term into `sum`; returns whether it is below e^-30.
  auto add = [&](ScaledSum& sum, double abs_coef, double a, double x, bool positive) {
    double shift;
    const double factor = ErfcSplit(x, &shift);
    const double rel = a + shift - sum.ref();
    // The relative test against threshold() needs e^(-30 - ref) to be a normal double.
    if (rel < 600.0 && sum.threshold() > std::numeric_limits<double>::min()) {
      const double v = abs_coef * std::exp(rel) * 0.5 * factor;
      const bool small = v < sum.threshold();
      sum.AddRelative(v, positive);
      return small;
    }
    const double log_t = std::log(abs_coef) + a + log_half + shift + std::log(factor);
    sum.AddLog(log_t, positive);
    return log_t < -30.0;
  };
  double coef = 1.0;
  for (int i = 0; i < kMaxSeriesTerms; ++i) {
    if (i > 0) coef = coef * (alpha - (i - 1)) / i;
    const double fi = static_cast<double>(i);
    const double j = alpha - fi;
    const double abs_coef = std::abs(coef);
    const bool positive = coef > 0;
    const bool small0 = add(a0, abs_coef, fi * log_q + j * log_1mq + (fi * fi - fi) * inv_2s2,
                            (fi - z0) * inv_sqrt2_sigma, positive);
    const bool small1 = add(a1, abs_coef, j * log_q + fi * log_1mq + (j * j - j) * inv_2s2,
                            (z0 - j) * inv_sqrt2_sigma, positive);
    if (small0 && small1) {
      const double l0 = a0.Log(), l1 = a1.Log();
      if (std::isnan(l0) || std::isnan(l1)) return kNaN;
      return LogAdd(l0, l1);
    }
  }
  return kNaN;
}

// RDP of one step at order α (Opacus's _compute_rdp, same order of special cases).
double RdpOneStep(double q, double sigma, double alpha) {
  if (q == 0.0) return 0.0;
  if (sigma == 0.0) return kInf;
  if (q == 1.0) return alpha / (2.0 * sigma * sigma);
  return detail::LogA(q, sigma, alpha, /*literal=*/false) / (alpha - 1.0);
}

}  // namespace

namespace detail {

double LogA(double q, double sigma, double alpha, bool literal) {
  if (alpha == std::floor(alpha) && alpha <= 9.0e15) {
    return LogAInt(q, sigma, static_cast<int64_t>(alpha));
  }
  return literal ? LogAFracLiteral(q, sigma, alpha) : LogAFrac(q, sigma, alpha);
}

}  // namespace detail

namespace {

// Exact (round-trips through strtod): for saved state.
std::string Num(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

// For messages: enough digits to tell values apart, without 0.10000000000000001 noise.
std::string Show(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", x);
  return buf;
}

// Strict decimal parse of one number (the whole token).
bool ParseDouble(const std::string& s, double* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}

bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  *out = v;
  return true;
}

}  // namespace

const std::vector<double>& DefaultRdpOrders() {
  static const std::vector<double> orders = [] {
    std::vector<double> o;
    for (int x = 1; x < 100; ++x) o.push_back(1.0 + x / 10.0);
    for (int a = 12; a < 64; ++a) o.push_back(a);
    return o;
  }();
  return orders;
}

Status ValidateSampledGaussian(double q, double sigma, int64_t steps) {
  if (!std::isfinite(q) || q < 0.0 || q > 1.0) {
    return Status::InvalidArgument("sampling rate q must be in [0, 1], got " + Show(q));
  }
  if (!std::isfinite(sigma) || sigma < 0.0) {
    return Status::InvalidArgument("noise multiplier sigma must be finite and >= 0, got " +
                                   Show(sigma));
  }
  if (steps < 0) {
    return Status::InvalidArgument("steps must be >= 0, got " + std::to_string(steps));
  }
  return Status::Ok();
}

Status ValidateRdpOrders(std::span<const double> orders) {
  if (orders.empty()) return Status::InvalidArgument("the list of RDP orders is empty");
  for (size_t i = 0; i < orders.size(); ++i) {
    if (!std::isfinite(orders[i]) || orders[i] <= 1.0) {
      return Status::InvalidArgument("RDP orders must be finite and > 1, got " + Show(orders[i]) +
                                     " at position " + std::to_string(i));
    }
  }
  return Status::Ok();
}

std::vector<double> ComputeRdp(double q, double sigma, int64_t steps,
                               std::span<const double> orders) {
  CheckOk(ValidateSampledGaussian(q, sigma, steps), "ComputeRdp");
  CheckOk(ValidateRdpOrders(orders), "ComputeRdp");
  std::vector<double> rdp(orders.size(), 0.0);
  if (steps == 0) return rdp;
  for (size_t k = 0; k < orders.size(); ++k) {
    rdp[k] = RdpOneStep(q, sigma, orders[k]) * static_cast<double>(steps);
  }
  return rdp;
}

StatusOr<PrivacySpent> EpsilonFromRdp(std::span<const double> orders, std::span<const double> rdp,
                                      double delta) {
  if (orders.size() != rdp.size()) {
    return Status::InvalidArgument("got " + std::to_string(orders.size()) + " RDP orders but " +
                                   std::to_string(rdp.size()) + " RDP values");
  }
  TANDEM_RETURN_IF_ERROR(ValidateRdpOrders(orders));
  if (!(delta > 0.0 && delta < 1.0)) {
    return Status::InvalidArgument("delta must be in (0, 1), got " + Show(delta));
  }
  bool all_zero = true;
  for (double r : rdp) all_zero &= r == 0.0;
  if (all_zero) return PrivacySpent{0.0, kNaN};

  // Balle et al. 2020 (arXiv 1905.09982), Theorem 21, as Opacus's get_privacy_spent.
  const double log_delta = std::log(delta);
  double best = kNaN, best_order = kNaN;
  for (size_t k = 0; k < orders.size(); ++k) {
    const double a = orders[k];
    const double eps = rdp[k] - (log_delta + std::log(a)) / (a - 1.0) + std::log((a - 1.0) / a);
    if (std::isnan(eps)) continue;
    if (std::isnan(best) || eps < best) {  // first minimum wins, as np.nanargmin
      best = eps;
      best_order = a;
    }
  }
  if (std::isnan(best)) return PrivacySpent{kInf, kNaN};
  return PrivacySpent{std::max(best, 0.0), best_order};
}

StatusOr<double> CalibrateSigma(double q, int64_t steps, double delta, double target_epsilon,
                                std::span<const double> orders) {
  TANDEM_RETURN_IF_ERROR(ValidateSampledGaussian(q, 0.0, steps));
  TANDEM_RETURN_IF_ERROR(ValidateRdpOrders(orders));
  if (!(delta > 0.0 && delta < 1.0)) {
    return Status::InvalidArgument("delta must be in (0, 1), got " + Show(delta));
  }
  if (!std::isfinite(target_epsilon) || target_epsilon <= 0.0) {
    return Status::InvalidArgument("target epsilon must be finite and > 0, got " +
                                   Show(target_epsilon));
  }
  if (q == 0.0 || steps == 0) return 0.0;  // nobody's data is used: ε = 0 at any σ

  auto epsilon_at = [&](double sigma) {
    auto spent = EpsilonFromRdp(orders, ComputeRdp(q, sigma, steps, orders), delta);
    return spent.ok() ? spent->epsilon : kInf;
  };
  // ε(σ) is non-increasing in σ (every order's RDP is), so bracket then bisect.
  double hi = 1.0;
  while (epsilon_at(hi) > target_epsilon) {
    if (hi >= kMaxSigma) {
      return Status::InvalidArgument(
          "target epsilon " + Show(target_epsilon) + " is out of reach: even sigma = " +
          Show(kMaxSigma) + " gives epsilon " + Show(epsilon_at(kMaxSigma)) + " at delta " +
          Show(delta) + " with these orders; raise the target or delta, or add larger orders");
    }
    hi *= 2.0;
  }
  double lo = hi > 1.0 ? hi / 2.0 : 0.0;
  while (hi - lo > 1e-7 * hi) {
    const double mid = 0.5 * (lo + hi);
    if (epsilon_at(mid) <= target_epsilon) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return hi;
}

RdpAccountant::RdpAccountant(std::vector<double> orders) : orders_(std::move(orders)) {
  CheckOk(ValidateRdpOrders(orders_), "RdpAccountant");
}

void RdpAccountant::Step(double q, double sigma, int64_t steps) {
  CheckOk(ValidateSampledGaussian(q, sigma, steps), "RdpAccountant::Step");
  if (steps == 0) return;
  if (!phases_.empty() && phases_.back().q == q && phases_.back().sigma == sigma) {
    phases_.back().steps += steps;
    return;
  }
  phases_.push_back(Phase{q, sigma, steps, ComputeRdp(q, sigma, 1, orders_)});
}

std::vector<double> RdpAccountant::Rdp() const {
  std::vector<double> total(orders_.size(), 0.0);
  for (const Phase& p : phases_) {
    for (size_t k = 0; k < total.size(); ++k) {
      total[k] += p.rdp_per_step[k] * static_cast<double>(p.steps);
    }
  }
  return total;
}

StatusOr<PrivacySpent> RdpAccountant::Spent(double delta) const {
  return EpsilonFromRdp(orders_, Rdp(), delta);
}

int64_t RdpAccountant::total_steps() const {
  int64_t n = 0;
  for (const Phase& p : phases_) n += p.steps;
  return n;
}

std::string RdpAccountant::SaveState() const {
  std::string out;
  for (const Phase& p : phases_) {
    if (!out.empty()) out += ';';
    out += Num(p.q) + ' ' + Num(p.sigma) + ' ' + std::to_string(p.steps);
  }
  return out;
}

Status RdpAccountant::LoadState(const std::string& state) {
  std::vector<Phase> phases;
  std::stringstream all(state);
  std::string item;
  while (!state.empty() && std::getline(all, item, ';')) {
    std::stringstream fields(item);
    std::string qs, ss, ns, extra;
    double q = 0, sigma = 0;
    int64_t steps = 0;
    if (!(fields >> qs >> ss >> ns) || (fields >> extra) || !ParseDouble(qs, &q) ||
        !ParseDouble(ss, &sigma) || !ParseInt(ns, &steps)) {
      return Status::InvalidArgument("accountant state: cannot parse phase '" + item +
                                     "' (expected 'q sigma steps')");
    }
    TANDEM_RETURN_IF_ERROR(ValidateSampledGaussian(q, sigma, steps).WithContext("accountant state"));
    phases.push_back(Phase{q, sigma, steps, ComputeRdp(q, sigma, 1, orders_)});
  }
  if (!state.empty() && state.back() == ';') {
    return Status::InvalidArgument("accountant state: trailing ';'");
  }
  phases_ = std::move(phases);
  return Status::Ok();
}

}  // namespace tandem::privacy

// The Rényi-DP accountant for the sampled Gaussian mechanism (Mironov, Talwar, Zhang 2019,
// arXiv 1908.10530, Section 3.3), computed as Opacus computes it (opacus/accountants/analysis/rdp.py),
// with Opacus's default orders and its RDP -> (ε, δ) conversion (Balle et al. 2020, Theorem 21).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace tandem::privacy {

// Opacus's DEFAULT_ALPHAS: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63 (151 orders).
const std::vector<double>& DefaultRdpOrders();

// InvalidArgument unless q in [0, 1], sigma >= 0 (0 means no noise: ε = inf) and steps >= 0,
// all finite. Messages name the parameter and the value.
Status ValidateSampledGaussian(double q, double sigma, int64_t steps);
// InvalidArgument unless `orders` is non-empty and every order is finite and > 1.
Status ValidateRdpOrders(std::span<const double> orders);

// RDP of `steps` compositions of the sampled Gaussian mechanism (sampling rate q, noise multiplier
// sigma: the noise stddev over the L2 sensitivity), one value per order. As Opacus: q = 0 gives 0,
// sigma = 0 gives +inf, q = 1 gives α/(2σ²); integer orders use the exact binomial sum, fractional
// orders the signed two-sided series. steps = 0 gives 0 (no mechanism ran). An order whose series
// cancels numerically to a negative sum (Opacus raises there) gives NaN, which EpsilonFromRdp skips.
// Requires: ValidateSampledGaussian and ValidateRdpOrders pass (checked, aborts with the message:
// validate user input first).
std::vector<double> ComputeRdp(double q, double sigma, int64_t steps,
                               std::span<const double> orders);

struct PrivacySpent {
  double epsilon = 0.0;     // +inf when the mechanism gives no privacy
  double best_order = 0.0;  // the order attaining epsilon; NaN when every order gave NaN
};

// ε(δ) = min over orders α of rdp(α) - (log δ + log α)/(α - 1) + log((α - 1)/α), NaNs skipped;
// all NaN gives {inf, NaN}. Two departures from Opacus, both where it would report a positive ε
// for a mechanism that leaked nothing: RDP exactly 0 at every order (q = 0, or no steps) gives
// {0, NaN}, and ε is clamped at 0.
// InvalidArgument: sizes differ, invalid orders, δ not in (0, 1).
StatusOr<PrivacySpent> EpsilonFromRdp(std::span<const double> orders, std::span<const double> rdp,
                                      double delta);

// The smallest noise multiplier σ whose ε(δ) after `steps` steps at rate q is <= target_epsilon,
// by bisection to a relative 1e-7 (Opacus's get_noise_multiplier stops at an ε tolerance of 0.01).
// Returns 0 when no noise is needed (q = 0 or steps = 0 and the target is reachable).
// InvalidArgument: invalid inputs, target_epsilon <= 0, or a target no σ <= 1e6 reaches (the
// message gives the ε at σ = 1e6, about the least these orders and δ can certify).
StatusOr<double> CalibrateSigma(double q, int64_t steps, double delta, double target_epsilon,
                                std::span<const double> orders = DefaultRdpOrders());

// Composes the privacy cost of a run: phases of `steps` steps at (q, σ) add their RDP. Consecutive
// steps with the same (q, σ) are merged into one phase, as Opacus's RDPAccountant does, so a long
// run keeps a short history and ε is computed as per-step RDP times the step count.
// Not thread-safe; copyable.
class RdpAccountant {
 public:
  // Requires ValidateRdpOrders(orders) to pass (checked, aborts).
  explicit RdpAccountant(std::vector<double> orders = DefaultRdpOrders());

  // Requires ValidateSampledGaussian(q, sigma, steps) to pass (checked, aborts).
  void Step(double q, double sigma, int64_t steps = 1);

  // ε at `delta` over every step so far ({0, NaN} before any step or when every step had q = 0).
  // InvalidArgument when delta is not in (0, 1).
  StatusOr<PrivacySpent> Spent(double delta) const;
  // Total RDP per order over every step so far.
  std::vector<double> Rdp() const;

  // The history as text ("q sigma steps" per phase, ';'-separated, exact round trip), to store in a
  // checkpoint; LoadState replaces the history with a saved one (unchanged on error).
  std::string SaveState() const;
  Status LoadState(const std::string& state);

  const std::vector<double>& orders() const { return orders_; }
  int64_t total_steps() const;

 private:
  struct Phase {
    double q = 0.0;
    double sigma = 0.0;
    int64_t steps = 0;
    std::vector<double> rdp_per_step;  // one per order
  };
  std::vector<double> orders_;
  std::vector<Phase> phases_;
};

namespace detail {
// log A_α of one sampled-Gaussian step (Mironov et al. 2019, Section 3.3), for 0 < q < 1, σ > 0.
// literal = true sums the fractional-order series exactly as Opacus does, in log space (slower);
// false, as ComputeRdp does, sums the same terms in scaled linear space. Exposed for tests.
double LogA(double q, double sigma, double alpha, bool literal);
}  // namespace detail

}  // namespace tandem::privacy

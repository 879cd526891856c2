// The `[privacy.dp]` and `[privacy.secagg]` sections of a run's config: what every upload goes
// through (docs/privacy.md). A builder reads them and validates the whole against the shape of the
// federation, so a run that could not keep its promise (a budget that is spent before the first
// round, a threshold the declared dropouts would break, a ring a sum could wrap) never starts.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace tandem {
class Config;
}

namespace tandem::privacy {

// Client-level differential privacy (DP-FedAvg, McMahan et al. 2018; adaptive clipping after
// Andrew et al. 2021). Every contribution is clipped to L2 norm `clip_norm`, weighted 1, and the
// sum carries Gaussian noise of standard deviation noise_multiplier · clip_norm; the sum is
// divided by the expected cohort size, not the number that arrived, so dropouts do not change the
// sensitivity.
struct DpConfig {
  bool enabled = false;
  // σ: noise standard deviation in units of the clip norm. When target_epsilon > 0 instead, σ is
  // calibrated at start so that `rounds` rounds spend exactly the target (at most).
  double noise_multiplier = 1.0;
  double target_epsilon = 0.0;
  double delta = 1e-5;
  // The run stops before a round that would take ε past this; 0 = no budget.
  double epsilon_budget = 0.0;
  double clip_norm = 1.0;
  // "central": the (trusted) coordinator adds the noise to the sum. "distributed": each client
  // adds N(0, (σC)²/K) with K = min_results, so any K or more contributions carry at least σC;
  // this is the form that composes with secure aggregation.
  std::string noise = "central";
  // "poisson": each client joins a round's cohort independently with probability q =
  // cohort / clients (what the accountant's analysis assumes). "fixed": a uniformly random cohort
  // of fixed size, accounted as Poisson with the same q (the usual approximation).
  std::string sampling = "poisson";
  // Adaptive clipping: C ← C·exp(−clip_lr·(b̄ − target_quantile)), where b̄ is the noisy fraction
  // of contributions that were not clipped; the bit count's noise (bit_noise_multiplier) is
  // accounted by raising the update noise (Andrew et al. 2021, §3.1).
  bool adaptive_clipping = false;
  double target_quantile = 0.5;
  double clip_lr = 0.2;
  double bit_noise_multiplier = 0.0;  // σ_b; 0 = cohort / 20 as in the paper
};

// Secure aggregation (Bonawitz et al. 2017; SecAgg+ of Bell et al. 2020 when neighbours > 0).
struct SecAggConfig {
  bool enabled = false;
  int threshold = 0;             // t: shares needed to reconstruct a secret; 0 = ⌊2n/3⌋ + 1
  double dropout_rate = 0.1;     // the dropouts the threshold must tolerate, per step
  int neighbours = 0;            // 0: every pair masks (SecAgg); k: k neighbours each (SecAgg+)
  int modulus_bits = 64;         // the ring Z / 2^modulus_bits
  int fraction_bits = 32;        // fixed-point resolution 2^-fraction_bits
  double clip_range = 65536.0;   // each weighted coordinate is clamped to ±clip_range
};

struct PrivacyConfig {
  DpConfig dp;
  SecAggConfig secagg;
  bool any() const { return dp.enabled || secagg.enabled; }
};

// What the privacy settings are checked against: the [federation] section.
struct FederationShape {
  int64_t clients = 0;      // the population N
  int64_t cohort = 0;       // clients per round (expected size under Poisson sampling)
  int64_t min_results = 0;  // contributions a task needs to close
  int64_t rounds = 0;
};

// Every range and every cross-check, naming the key: ε, δ, budgets, clip norms, quantiles > 0 and
// in range; noise and sampling choices; adaptive clipping's bit noise large enough that the update
// noise stays finite; the threshold within [2, n] and no larger than the contributions that
// survive `dropout_rate` (and than min_results, so a task that closes has enough shares); SecAgg+
// neighbourhoods that can hold t; a ring in which `cohort` weighted contributions cannot wrap.
Status ValidatePrivacyConfig(const PrivacyConfig& config, const FederationShape& shape);

// Reads [privacy.dp] and [privacy.secagg] (a section switched off with `enabled = false` has its
// other keys ignored, not validated, so `--set privacy.dp.enabled=false` switches a configured
// section off; keys of a section with no `enabled` are reported as unknown), fills the defaults that depend on the shape
// (threshold, bit noise), then ValidatePrivacyConfig.
StatusOr<PrivacyConfig> PrivacyConfigFromConfig(const Config& config, const FederationShape& shape);

// The threshold used when the config leaves it at 0: ⌊2n/3⌋ + 1, at least 2.
int DefaultThreshold(int64_t cohort);

// The clip norm's per-round update noise multiplier when adaptive clipping spends part of the
// budget on the bit count; σ itself otherwise. See DpConfig.
double EffectiveBitNoise(const DpConfig& dp, int64_t cohort);

}  // namespace tandem::privacy

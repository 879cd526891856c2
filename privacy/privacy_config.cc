#include "privacy/privacy_config.h"

#include <algorithm>
#include <cmath>

#include "core/config.h"
#include "privacy/fixed_point.h"

namespace tandem::privacy {
namespace {

Status Bad(const std::string& key, const std::string& why) {
  return Status::InvalidArgument(key + ": " + why);
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status ValidateDp(const DpConfig& dp, const FederationShape& shape) {
  if (!(dp.delta > 0.0 && dp.delta < 1.0)) {
    return Bad("privacy.dp.delta", "must be in (0, 1), got " + Num(dp.delta));
  }
  if (shape.clients > 0 && dp.delta >= 1.0 / static_cast<double>(shape.clients)) {
    // δ ≥ 1/N permits mechanisms that publish one client's data outright.
    return Bad("privacy.dp.delta", Num(dp.delta) + " is not below 1/clients = " +
                                       Num(1.0 / static_cast<double>(shape.clients)));
  }
  if (!(dp.clip_norm > 0.0) || !std::isfinite(dp.clip_norm)) {
    return Bad("privacy.dp.clip_norm", "must be > 0, got " + Num(dp.clip_norm));
  }
  if (dp.target_epsilon != 0.0 && !(dp.target_epsilon > 0.0 && std::isfinite(dp.target_epsilon))) {
    return Bad("privacy.dp.target_epsilon", "must be > 0, got " + Num(dp.target_epsilon));
  }
  if (dp.target_epsilon == 0.0 &&
      !(dp.noise_multiplier > 0.0 && std::isfinite(dp.noise_multiplier))) {
    return Bad("privacy.dp.noise_multiplier",
               "must be > 0 (or set privacy.dp.target_epsilon), got " + Num(dp.noise_multiplier));
  }
  if (dp.epsilon_budget != 0.0 && !(dp.epsilon_budget > 0.0 && std::isfinite(dp.epsilon_budget))) {
    return Bad("privacy.dp.epsilon_budget", "must be > 0 (0 = none), got " + Num(dp.epsilon_budget));
  }
  if (dp.target_epsilon > 0.0 && dp.epsilon_budget > 0.0 && dp.target_epsilon > dp.epsilon_budget) {
    return Bad("privacy.dp.target_epsilon", Num(dp.target_epsilon) +
                                                " is above privacy.dp.epsilon_budget " +
                                                Num(dp.epsilon_budget));
  }
  if (dp.noise != "central" && dp.noise != "distributed") {
    return Bad("privacy.dp.noise", "must be \"central\" or \"distributed\", got \"" + dp.noise + "\"");
  }
  if (dp.sampling != "poisson" && dp.sampling != "fixed") {
    return Bad("privacy.dp.sampling", "must be \"poisson\" or \"fixed\", got \"" + dp.sampling + "\"");
  }
  if (dp.adaptive_clipping) {
    if (!(dp.target_quantile > 0.0 && dp.target_quantile < 1.0)) {
      return Bad("privacy.dp.target_quantile", "must be in (0, 1), got " + Num(dp.target_quantile));
    }
    if (!(dp.clip_lr > 0.0 && dp.clip_lr <= 10.0)) {
      return Bad("privacy.dp.clip_lr", "must be in (0, 10], got " + Num(dp.clip_lr));
    }
    if (dp.bit_noise_multiplier < 0.0 || !std::isfinite(dp.bit_noise_multiplier)) {
      return Bad("privacy.dp.bit_noise_multiplier", "must be >= 0, got " +
                                                        Num(dp.bit_noise_multiplier));
    }
    // Andrew et al. 2021 §3.1: z_Δ = (z^-2 − (2σ_b)^-2)^(-1/2) is finite only for σ_b > z/2.
    // (With target_epsilon the z is not known yet; the coordinator checks again after calibrating.)
    const double bits = EffectiveBitNoise(dp, shape.cohort);
    if (dp.target_epsilon == 0.0 && !(bits > dp.noise_multiplier / 2.0)) {
      return Bad("privacy.dp.bit_noise_multiplier",
                 Num(bits) + " must exceed noise_multiplier / 2 = " +
                     Num(dp.noise_multiplier / 2.0) +
                     ": the clipped-bit count would take the whole privacy budget");
    }
  }
  if (shape.clients > 0 && shape.cohort > shape.clients) {
    return Bad("federation.cohort", "exceeds federation.clients");
  }
  return Status::Ok();
}

// `summands`: the most contributions one sum can hold (the cohort, or every client under Poisson
// sampling, whose cohorts only average the cohort size).
Status ValidateSecAgg(const SecAggConfig& s, const FederationShape& shape, int64_t summands) {
  if (!(s.dropout_rate >= 0.0 && s.dropout_rate < 1.0)) {
    return Bad("privacy.secagg.dropout_rate", "must be in [0, 1), got " + Num(s.dropout_rate));
  }
  if (s.modulus_bits < 8 || s.modulus_bits > 64) {
    return Bad("privacy.secagg.modulus_bits", "must be in [8, 64], got " +
                                                  std::to_string(s.modulus_bits));
  }
  if (s.fraction_bits < 0 || s.fraction_bits >= s.modulus_bits) {
    return Bad("privacy.secagg.fraction_bits",
               "must be in [0, modulus_bits), got " + std::to_string(s.fraction_bits));
  }
  if (!(s.clip_range > 0.0) || !std::isfinite(s.clip_range)) {
    return Bad("privacy.secagg.clip_range", "must be > 0, got " + Num(s.clip_range));
  }
  const int64_t n = shape.cohort;
  if (n < 2) {
    return Bad("privacy.secagg", "needs a cohort of at least 2 clients, got " + std::to_string(n));
  }
  if (s.neighbours < 0 || (s.neighbours > 0 && s.neighbours >= n)) {
    return Bad("privacy.secagg.neighbours",
               "must be 0 (every pair) or in [1, cohort), got " + std::to_string(s.neighbours));
  }
  // A client's shares go to its neighbourhood: everyone, or its k neighbours and itself.
  const int64_t group = s.neighbours > 0 ? s.neighbours + 1 : n;
  if (s.threshold < 2 || s.threshold > group) {
    return Bad("privacy.secagg.threshold", "must be in [2, " + std::to_string(group) + "], got " +
                                               std::to_string(s.threshold) +
                                               " (one share alone would reveal a secret)");
  }
  // Above half the group, no two disjoint sets of answers can each reach t: a coordinator cannot
  // collect both kinds of share of one client by telling two halves different stories.
  if (2 * static_cast<int64_t>(s.threshold) <= group) {
    return Bad("privacy.secagg.threshold",
               std::to_string(s.threshold) + " must exceed half of the " + std::to_string(group) +
                   " clients that hold a secret's shares");
  }
  // Each step may lose dropout_rate of its clients; the survivors of the neighbourhood must still
  // hold t shares.
  const auto survivors = static_cast<int64_t>(
      std::floor(static_cast<double>(group) * (1.0 - s.dropout_rate) + 1e-9));
  if (s.threshold > survivors) {
    return Bad("privacy.secagg.threshold",
               std::to_string(s.threshold) + " cannot tolerate dropout_rate " +
                   Num(s.dropout_rate) + ": only " + std::to_string(survivors) + " of " +
                   std::to_string(group) + " are expected to survive; lower it to at most " +
                   std::to_string(survivors));
  }
  if (s.neighbours == 0 && shape.min_results > 0 && shape.min_results < s.threshold) {
    return Bad("federation.min_results",
               std::to_string(shape.min_results) + " is below privacy.secagg.threshold " +
                   std::to_string(s.threshold) + ": a step could close with too few shares");
  }
  // A sum of as many contributions as can arrive must not wrap the ring.
  const FixedPointFormat format{s.modulus_bits, s.fraction_bits, s.clip_range};
  if (Status fits = ValidateFixedPoint(format, summands); !fits.ok()) {
    return Bad("privacy.secagg.modulus_bits", fits.message());
  }
  return Status::Ok();
}

}  // namespace

int DefaultThreshold(int64_t cohort) {
  return static_cast<int>(std::max<int64_t>(2, (2 * cohort) / 3 + 1));
}

double EffectiveBitNoise(const DpConfig& dp, int64_t cohort) {
  if (dp.bit_noise_multiplier > 0.0) return dp.bit_noise_multiplier;
  return static_cast<double>(std::max<int64_t>(cohort, 1)) / 20.0;
}

Status ValidatePrivacyConfig(const PrivacyConfig& config, const FederationShape& shape) {
  if (config.dp.enabled) TANDEM_RETURN_IF_ERROR(ValidateDp(config.dp, shape));
  if (config.secagg.enabled) {
    const bool poisson = config.dp.enabled && config.dp.sampling == "poisson";
    const int64_t summands = poisson ? std::max(shape.clients, shape.cohort) : shape.cohort;
    TANDEM_RETURN_IF_ERROR(ValidateSecAgg(config.secagg, shape, summands));
  }
  return Status::Ok();
}

StatusOr<PrivacyConfig> PrivacyConfigFromConfig(const Config& config,
                                                const FederationShape& shape) {
  PrivacyConfig out;
  DpConfig& dp = out.dp;
  TANDEM_ASSIGN_OR_RETURN(dp.enabled, config.GetBool("privacy.dp.enabled", false));
  if (dp.enabled) {
    TANDEM_ASSIGN_OR_RETURN(dp.noise_multiplier,
                            config.GetDouble("privacy.dp.noise_multiplier", dp.noise_multiplier));
    TANDEM_ASSIGN_OR_RETURN(dp.target_epsilon,
                            config.GetDouble("privacy.dp.target_epsilon", dp.target_epsilon));
    if (config.Has("privacy.dp.noise_multiplier") && config.Has("privacy.dp.target_epsilon")) {
      return Bad("privacy.dp", "set noise_multiplier or target_epsilon, not both");
    }
    TANDEM_ASSIGN_OR_RETURN(dp.delta, config.GetDouble("privacy.dp.delta", dp.delta));
    TANDEM_ASSIGN_OR_RETURN(dp.epsilon_budget,
                            config.GetDouble("privacy.dp.epsilon_budget", dp.epsilon_budget));
    TANDEM_ASSIGN_OR_RETURN(dp.clip_norm, config.GetDouble("privacy.dp.clip_norm", dp.clip_norm));
    TANDEM_ASSIGN_OR_RETURN(dp.noise, config.GetString("privacy.dp.noise", dp.noise));
    TANDEM_ASSIGN_OR_RETURN(dp.sampling, config.GetString("privacy.dp.sampling", dp.sampling));
    TANDEM_ASSIGN_OR_RETURN(dp.adaptive_clipping,
                            config.GetBool("privacy.dp.adaptive_clipping", false));
    if (dp.adaptive_clipping) {
      TANDEM_ASSIGN_OR_RETURN(dp.target_quantile, config.GetDouble("privacy.dp.target_quantile",
                                                                   dp.target_quantile));
      TANDEM_ASSIGN_OR_RETURN(dp.clip_lr, config.GetDouble("privacy.dp.clip_lr", dp.clip_lr));
      TANDEM_ASSIGN_OR_RETURN(dp.bit_noise_multiplier,
                              config.GetDouble("privacy.dp.bit_noise_multiplier", 0.0));
    }
  }
  SecAggConfig& s = out.secagg;
  TANDEM_ASSIGN_OR_RETURN(s.enabled, config.GetBool("privacy.secagg.enabled", false));
  if (s.enabled) {
    TANDEM_ASSIGN_OR_RETURN(int64_t t, config.GetInt("privacy.secagg.threshold", 0, 0, 1 << 20));
    TANDEM_ASSIGN_OR_RETURN(s.dropout_rate,
                            config.GetDouble("privacy.secagg.dropout_rate", s.dropout_rate));
    TANDEM_ASSIGN_OR_RETURN(int64_t k, config.GetInt("privacy.secagg.neighbours", 0, 0, 1 << 20));
    TANDEM_ASSIGN_OR_RETURN(int64_t bits, config.GetInt("privacy.secagg.modulus_bits", 64, 0, 64));
    TANDEM_ASSIGN_OR_RETURN(int64_t frac, config.GetInt("privacy.secagg.fraction_bits", 32, 0, 64));
    TANDEM_ASSIGN_OR_RETURN(s.clip_range,
                            config.GetDouble("privacy.secagg.clip_range", s.clip_range));
    s.neighbours = static_cast<int>(k);
    s.modulus_bits = static_cast<int>(bits);
    s.fraction_bits = static_cast<int>(frac);
    s.threshold = t > 0 ? static_cast<int>(t)
                        : DefaultThreshold(s.neighbours > 0 ? s.neighbours + 1 : shape.cohort);
  }
  // A section switched off (`enabled = false`) does not act: its other keys are left unread, and
  // Config::CheckAllKeysUsed() ignores them. A section with keys but no `enabled` at all is left
  // off too, and its keys are reported: that is a forgotten `enabled = true`, not a switch.
  TANDEM_RETURN_IF_ERROR(ValidatePrivacyConfig(out, shape));
  return out;
}

}  // namespace tandem::privacy

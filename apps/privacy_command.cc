// `tandem privacy epsilon` and `tandem privacy sigma`: parse, validate, call the accountant, print
// one line (or one JSON object). Numbers are parsed here, strictly, so every bad input gets a
// message naming the flag and exit status 2.
#include "apps/privacy_command.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "privacy/accountant.h"

namespace tandem {
namespace {

constexpr int kBadInputExitCode = 2;

// The flags as typed; empty means not given.
struct PrivacyArgs {
  std::string q, sigma, steps, delta, target_epsilon, orders;
  bool json = false;
};

StatusOr<double> ParseNumber(const std::string& flag, const std::string& text) {
  if (text.empty()) return Status::InvalidArgument(flag + " is required");
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size() || !std::isfinite(v)) {
    return Status::InvalidArgument(flag + " must be a finite number, got '" + text + "'");
  }
  return v;
}

StatusOr<int64_t> ParseCount(const std::string& flag, const std::string& text) {
  if (text.empty()) return Status::InvalidArgument(flag + " is required");
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size() || v < 0) {
    return Status::InvalidArgument(flag + " must be a whole number >= 0, got '" + text + "'");
  }
  return static_cast<int64_t>(v);
}

// "2,4.5, 8" -> {2, 4.5, 8}; absent -> Opacus's default orders.
StatusOr<std::vector<double>> ParseOrders(const std::string& text) {
  if (text.empty()) return privacy::DefaultRdpOrders();
  std::vector<double> orders;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos
                                                                     : comma - start);
    const size_t first = item.find_first_not_of(" \t");
    const size_t last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    auto v = ParseNumber("--orders", item);
    if (!v.ok()) {
      return Status::InvalidArgument("--orders must be comma-separated numbers > 1, got '" +
                                     text + "'");
    }
    orders.push_back(*v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  TANDEM_RETURN_IF_ERROR(privacy::ValidateRdpOrders(orders).WithContext("--orders"));
  return orders;
}

std::string Short(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

Status ValidateDelta(double delta) {
  if (!(delta > 0.0 && delta < 1.0)) {
    return Status::InvalidArgument("--delta must be in (0, 1), got " + Short(delta));
  }
  return Status::Ok();
}

// %.17g for JSON (round-trips), null where JSON has no number (inf, NaN).
std::string JsonNumber(double x) {
  if (!std::isfinite(x)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}

// Opacus warns when the best order is an end of the list: the bound is then loose.
void WarnIfEdgeOrder(double best_order, const std::vector<double>& orders) {
  if (std::isnan(best_order) || orders.size() < 2) return;
  double lo = orders[0], hi = orders[0];
  for (double a : orders) {
    lo = std::min(lo, a);
    hi = std::max(hi, a);
  }
  if (best_order == lo || best_order == hi) {
    std::fprintf(stderr,
                 "tandem: warning: the best order %s is the %s of the orders given; a wider "
                 "range of --orders may give a tighter epsilon\n",
                 Short(best_order).c_str(), best_order == lo ? "smallest" : "largest");
  }
}

Status RunEpsilon(const PrivacyArgs& a) {
  TANDEM_ASSIGN_OR_RETURN(const double q, ParseNumber("--q", a.q));
  TANDEM_ASSIGN_OR_RETURN(const double sigma, ParseNumber("--sigma", a.sigma));
  TANDEM_ASSIGN_OR_RETURN(const int64_t steps, ParseCount("--steps", a.steps));
  TANDEM_ASSIGN_OR_RETURN(const double delta, ParseNumber("--delta", a.delta));
  TANDEM_ASSIGN_OR_RETURN(const std::vector<double> orders, ParseOrders(a.orders));
  TANDEM_RETURN_IF_ERROR(privacy::ValidateSampledGaussian(q, sigma, steps));
  TANDEM_RETURN_IF_ERROR(ValidateDelta(delta));
  TANDEM_ASSIGN_OR_RETURN(
      const privacy::PrivacySpent spent,
      privacy::EpsilonFromRdp(orders, privacy::ComputeRdp(q, sigma, steps, orders), delta));
  if (a.json) {
    std::printf("{\"epsilon\": %s, \"best_order\": %s, \"q\": %s, \"sigma\": %s, \"steps\": %lld, "
                "\"delta\": %s}\n",
                JsonNumber(spent.epsilon).c_str(), JsonNumber(spent.best_order).c_str(),
                JsonNumber(q).c_str(), JsonNumber(sigma).c_str(), static_cast<long long>(steps),
                JsonNumber(delta).c_str());
  } else {
    std::string where;
    if (std::isinf(spent.epsilon)) {
      where = " (no noise: no privacy)";
    } else if (std::isnan(spent.best_order)) {
      where = " (no data used)";
    } else {
      where = " at order " + Short(spent.best_order);
    }
    std::printf("epsilon %s%s (q %s, sigma %s, %lld steps, delta %s)\n",
                Short(spent.epsilon).c_str(), where.c_str(), Short(q).c_str(),
                Short(sigma).c_str(), static_cast<long long>(steps), Short(delta).c_str());
  }
  if (std::isfinite(spent.epsilon)) WarnIfEdgeOrder(spent.best_order, orders);
  return Status::Ok();
}

Status RunSigma(const PrivacyArgs& a) {
  TANDEM_ASSIGN_OR_RETURN(const double q, ParseNumber("--q", a.q));
  TANDEM_ASSIGN_OR_RETURN(const int64_t steps, ParseCount("--steps", a.steps));
  TANDEM_ASSIGN_OR_RETURN(const double delta, ParseNumber("--delta", a.delta));
  TANDEM_ASSIGN_OR_RETURN(const double target, ParseNumber("--target-epsilon", a.target_epsilon));
  TANDEM_ASSIGN_OR_RETURN(const std::vector<double> orders, ParseOrders(a.orders));
  TANDEM_RETURN_IF_ERROR(privacy::ValidateSampledGaussian(q, 0.0, steps));
  TANDEM_RETURN_IF_ERROR(ValidateDelta(delta));
  TANDEM_ASSIGN_OR_RETURN(const double sigma,
                          privacy::CalibrateSigma(q, steps, delta, target, orders));
  TANDEM_ASSIGN_OR_RETURN(
      const privacy::PrivacySpent spent,
      privacy::EpsilonFromRdp(orders, privacy::ComputeRdp(q, sigma, steps, orders), delta));
  if (a.json) {
    std::printf("{\"sigma\": %s, \"epsilon\": %s, \"best_order\": %s, \"target_epsilon\": %s, "
                "\"q\": %s, \"steps\": %lld, \"delta\": %s}\n",
                JsonNumber(sigma).c_str(), JsonNumber(spent.epsilon).c_str(),
                JsonNumber(spent.best_order).c_str(), JsonNumber(target).c_str(),
                JsonNumber(q).c_str(), static_cast<long long>(steps), JsonNumber(delta).c_str());
  } else {
    std::printf("sigma %s gives epsilon %s <= %s (q %s, %lld steps, delta %s)\n",
                Short(sigma).c_str(), Short(spent.epsilon).c_str(), Short(target).c_str(),
                Short(q).c_str(), static_cast<long long>(steps), Short(delta).c_str());
  }
  return Status::Ok();
}

// A failure prints one line and ends the parse with exit status 2.
void Finish(const Status& status) {
  if (status.ok()) return;
  std::fprintf(stderr, "tandem: error: %s\n", status.message().c_str());
  throw CLI::RuntimeError(kBadInputExitCode);
}

// Extras are allowed on the subcommands so that an unknown flag gets the same exit status as any
// other bad input (CLI11 would exit with its own code).
Status CheckNoExtras(const CLI::App& sub) {
  const std::vector<std::string> extras = sub.remaining();
  if (extras.empty()) return Status::Ok();
  std::string list;
  for (const auto& e : extras) list += (list.empty() ? "" : " ") + e;
  return Status::InvalidArgument("unexpected argument(s) for privacy " + sub.get_name() + ": " +
                                 list + " (see --help)");
}

}  // namespace

void AddPrivacyCommands(CLI::App& app) {
  auto* privacy = app.add_subcommand(
      "privacy", "The RDP accountant: epsilon for a run's parameters, or sigma for a budget");
  privacy->require_subcommand(0, 1);
  privacy->callback([privacy] {
    if (privacy->get_subcommands().empty()) {
      Finish(Status::InvalidArgument("privacy needs a subcommand: epsilon or sigma (see --help)"));
    }
  });
  auto args = std::make_shared<PrivacyArgs>();
  const char* kQ = "Sampling rate: the chance that one client takes part in a step, in [0, 1]";
  const char* kSteps = "Number of steps (rounds) of the mechanism";
  const char* kDelta = "Target delta, in (0, 1)";
  const char* kOrders = "RDP orders, comma-separated, each > 1 (default: Opacus's 151 orders)";
  const char* kJson = "Print one JSON object instead of a line";

  auto* epsilon = privacy->add_subcommand(
      "epsilon", "Epsilon and the best RDP order of the sampled Gaussian mechanism");
  epsilon->allow_extras();
  epsilon->add_option("--q", args->q, kQ)->type_name("NUM");
  epsilon->add_option("--sigma", args->sigma, "Noise multiplier: noise stddev / clip norm, >= 0")
      ->type_name("NUM");
  epsilon->add_option("--steps", args->steps, kSteps)->type_name("INT");
  epsilon->add_option("--delta", args->delta, kDelta)->type_name("NUM");
  epsilon->add_option("--orders", args->orders, kOrders)->type_name("LIST");
  epsilon->add_flag("--json", args->json, kJson);
  epsilon->callback([args, epsilon] {
    Finish(CheckNoExtras(*epsilon));
    Finish(RunEpsilon(*args));
  });

  auto* sigma = privacy->add_subcommand(
      "sigma", "The smallest noise multiplier whose epsilon meets a target");
  sigma->allow_extras();
  sigma->add_option("--q", args->q, kQ)->type_name("NUM");
  sigma->add_option("--steps", args->steps, kSteps)->type_name("INT");
  sigma->add_option("--delta", args->delta, kDelta)->type_name("NUM");
  sigma->add_option("--target-epsilon", args->target_epsilon, "The epsilon budget, > 0")
      ->type_name("NUM");
  sigma->add_option("--orders", args->orders, kOrders)->type_name("LIST");
  sigma->add_flag("--json", args->json, kJson);
  sigma->callback([args, sigma] {
    Finish(CheckNoExtras(*sigma));
    Finish(RunSigma(*args));
  });
}

}  // namespace tandem

// The speed of two privacy primitives, each against a reference measured in the same run (these
// were wall-clock bounds in privacy's unit tests):
//   - SecureRng::Normal (Box–Muller on the AES-256-CTR keystream) against
//     std::normal_distribution on std::mt19937_64, the standard library's non-cryptographic
//     generator, 10^6 draws each;
//   - ComputeRdp(q = 0.04, sigma = 1.5, 10^9 steps) over the 151 default orders against the same
//     orders evaluated the way Opacus does (detail::LogA with literal = true: every term in log
//     space), which is what ComputeRdp's scaled linear-space sums replace.
// The two sides alternate; medians are compared.
//
//   tandem_privacy_speed_bench [--reps 9]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "privacy/accountant.h"
#include "privacy/secure_rng.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Keeps the compiler from dropping the work whose result nobody reads.
volatile double g_sink = 0;

}  // namespace

int main(int argc, char** argv) {
  int reps = 9;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::printf("usage: tandem_privacy_speed_bench [--reps 9]\n");
      return arg == "--help" ? 0 : 1;
    }
  }

  // ---- SecureRng::Normal against std::normal_distribution. ----
  constexpr int kDraws = 1000000;
  tandem::privacy::SecureRng::Key key{};
  key[0] = 1;
  tandem::privacy::SecureRng secure(key);
  std::mt19937_64 mt(1);
  std::normal_distribution<double> normal;
  std::vector<double> secure_s, std_s;
  for (int rep = -1; rep < reps; ++rep) {  // rep -1 warms both up
    for (int which = 0; which < 2; ++which) {
      const bool do_secure = (which == 0) == (rep % 2 == 0);
      double sum = 0;
      const Clock::time_point start = Clock::now();
      if (do_secure) {
        for (int i = 0; i < kDraws; ++i) sum += secure.Normal();
      } else {
        for (int i = 0; i < kDraws; ++i) sum += normal(mt);
      }
      const double s = Seconds(start, Clock::now());
      g_sink = g_sink + sum;
      if (rep >= 0) (do_secure ? secure_s : std_s).push_back(s);
    }
  }
  std::printf("10^6 standard normal draws, median of %d\n", reps);
  std::printf("  %-52s %8.1f ms\n", "reference: std::normal_distribution, std::mt19937_64",
              1e3 * Median(std_s));
  std::printf("  %-52s %8.1f ms   ratio %.2f\n", "SecureRng::Normal (AES-256-CTR)",
              1e3 * Median(secure_s), Median(secure_s) / Median(std_s));

  // ---- ComputeRdp against the literal log-space evaluation of the same orders. ----
  const std::vector<double>& orders = tandem::privacy::DefaultRdpOrders();
  const double q = 0.04, sigma = 1.5;
  constexpr int64_t kSteps = 1000000000;
  constexpr int kCalls = 20;
  std::vector<double> fast_s, literal_s;
  for (int rep = -1; rep < reps; ++rep) {
    for (int which = 0; which < 2; ++which) {
      const bool do_fast = (which == 0) == (rep % 2 == 0);
      double sum = 0;
      const Clock::time_point start = Clock::now();
      for (int call = 0; call < kCalls; ++call) {
        if (do_fast) {
          const std::vector<double> rdp = tandem::privacy::ComputeRdp(q, sigma, kSteps, orders);
          sum += rdp.back();
        } else {
          for (double alpha : orders) {
            sum += tandem::privacy::detail::LogA(q, sigma, alpha, /*literal=*/true);
          }
        }
      }
      const double s = Seconds(start, Clock::now()) / kCalls;
      g_sink = g_sink + sum;
      if (rep >= 0) (do_fast ? fast_s : literal_s).push_back(s);
    }
  }
  std::printf("\nRDP of the sampled Gaussian (q = %.2f, sigma = %.1f, 10^9 steps) over the %zu "
              "default orders, per call, median of %d\n",
              q, sigma, orders.size(), reps);
  std::printf("  %-52s %8.0f us\n", "reference: the same orders in log space (Opacus's way)",
              1e6 * Median(literal_s));
  std::printf("  %-52s %8.0f us   ratio %.2f\n", "ComputeRdp", 1e6 * Median(fast_s),
              Median(fast_s) / Median(literal_s));
  return 0;
}

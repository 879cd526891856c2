// FP32 peak by FMA throughput: 12 accumulators hide the FMA latency (4 cycles on Zen 3 and
// Skylake, 2 ports => 8 chains in flight needed), so the loop is bound by FMA issue alone.
#include "bench/peak_flops.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace tandem::bench {
namespace {

constexpr int kChains = 12;
constexpr std::int64_t kIters = 20'000'000;  // 12 x 20M FMAs: ~40 ms per core at 3 GHz

volatile float g_seed = 1.0f;
volatile float g_sink = 0.0f;

// Returns a value that depends on every chain, so none can be optimised away.
float FmaChains(std::int64_t iters) {
  const __m256 mul = _mm256_set1_ps(0.999999f * g_seed);
  const __m256 add = _mm256_set1_ps(1e-7f * g_seed);
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(g_seed + 0.1f * c);
  for (std::int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], mul, add);
  }
  __m256 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm256_add_ps(sum, acc[c]);
  alignas(32) float out[8];
  _mm256_store_ps(out, sum);
  return out[0] + out[7];
}

}  // namespace

double MeasurePeakGflops(int threads) {
  threads = std::max(threads, 1);
  const double flops = 2.0 * 8 * kChains * static_cast<double>(kIters) * threads;
  double best = 0.0;
  for (int trial = 0; trial < 5; ++trial) {
    double seconds = 0.0;
#pragma omp parallel num_threads(threads)
    {
#pragma omp barrier
      const auto start = std::chrono::steady_clock::now();
      const float r = FmaChains(kIters);
#pragma omp barrier
#pragma omp master
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
#pragma omp critical
      g_sink = g_sink + r;
    }
    best = std::max(best, flops / seconds * 1e-9);
  }
  return best;
}

}  // namespace tandem::bench

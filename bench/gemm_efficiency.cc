// GEMM efficiency at the shapes of one tandem training step, as a percentage of the FP32 peak
// measured in the same run (bench/peak_flops.h). Two backends side by side: tandem's Gemm
// (OpenBLAS, models/gemm.h) as the training step runs it — single-threaded on one shard of
// N/threads rows, since each thread owns a shard of the batch — and Eigen's product on the
// same shard, the backend tandem used before.
//
//   tandem_gemm_bench [--threads K]
//
// For a linear layer Y(N,out) = X(N,in) W(in,out) a step runs three products of equal cost
// 2*N*in*out: fwd Y = X W (A*B), data grad dX = dY W^T (A*B^T), weight grad dW = X^T dY (A^T*B).
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/peak_flops.h"
#include "models/gemm.h"

namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<Matrix>;

struct Preset {
  const char* name;
  int batch, context, d_model, vocab;
};

struct Layer {
  std::string name;
  int in, out;  // weight (in,out), HF Conv1D layout
};

enum class Variant { kFwd, kDataGrad, kWeightGrad };
const char* VariantName(Variant v) {
  switch (v) {
    case Variant::kFwd: return "fwd   A*B  ";
    case Variant::kDataGrad: return "dX    A*B^T";
    case Variant::kWeightGrad: return "dW    A^T*B";
  }
  return "";
}

// Seconds per product, best of several timed loops of ~50 ms each.
double TimeProduct(int n, const Layer& l, Variant v, std::vector<float>& a, std::vector<float>& b,
                   std::vector<float>& c, bool blas) {
  auto run = [&] {
    if (blas) {
      switch (v) {
        case Variant::kFwd:
          tandem::Gemm(false, false, n, l.out, l.in, 1.0f, a.data(), l.in, b.data(), l.out, 0.0f,
                       c.data(), l.out);
          break;
        case Variant::kDataGrad:
          tandem::Gemm(false, true, n, l.in, l.out, 1.0f, a.data(), l.out, b.data(), l.out, 0.0f,
                       c.data(), l.in);
          break;
        case Variant::kWeightGrad:
          tandem::Gemm(true, false, l.in, l.out, n, 1.0f, a.data(), l.in, b.data(), l.out, 1.0f,
                       c.data(), l.out);
          break;
      }
      return;
    }
    switch (v) {
      case Variant::kFwd:  // (N,in) x (in,out) -> (N,out)
        Map(c.data(), n, l.out).noalias() = Map(a.data(), n, l.in) * Map(b.data(), l.in, l.out);
        break;
      case Variant::kDataGrad:  // (N,out) x (in,out)^T -> (N,in)
        Map(c.data(), n, l.in).noalias() =
            Map(a.data(), n, l.out) * Map(b.data(), l.in, l.out).transpose();
        break;
      case Variant::kWeightGrad:  // (N,in)^T x (N,out) -> (in,out)
        Map(c.data(), l.in, l.out).noalias() =
            Map(a.data(), n, l.in).transpose() * Map(b.data(), n, l.out);
        break;
    }
  };
  using Clock = std::chrono::steady_clock;
  run();  // warm caches and Eigen's blocking buffers
  auto t0 = Clock::now();
  int reps = 0;
  do {
    run();
    ++reps;
  } while (std::chrono::duration<double>(Clock::now() - t0).count() < 0.05);
  double best = 1e30;
  for (int trial = 0; trial < 3; ++trial) {
    t0 = Clock::now();
    for (int r = 0; r < reps; ++r) run();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / reps);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads();
  omp_set_num_threads(1);  // each product on one core, as a shard runs it
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--threads K]\n", argv[0]);
      return 2;
    }
  }
  threads = std::max(threads, 1);

  const double peak1 = tandem::bench::MeasurePeakGflops(1);
  const double peakn = tandem::bench::MeasurePeakGflops(threads);
  std::printf("peak_fp32: %.1f GFLOP/s on 1 core, %.1f GFLOP/s on %d threads (%.1f per core)\n",
              peak1, peakn, threads, peakn / threads);

  const Preset presets[] = {{"slm-tiny", 16, 128, 128, 256}, {"llm-small", 8, 128, 384, 256}};
  const Variant variants[] = {Variant::kFwd, Variant::kDataGrad, Variant::kWeightGrad};
  std::printf("one shard per thread: N = batch*context/%d rows, each product on one core\n",
              threads);
  std::printf("%-10s %-10s %-20s %-12s %9s %6s %9s %6s\n", "preset", "layer", "(N,K)x(K,M)",
              "product", "OpenBLAS", "%pk", "Eigen", "%pk");
  for (const Preset& p : presets) {
    const int n = p.batch * p.context / threads, c = p.d_model;
    const Layer layers[] = {{"qkv", c, 3 * c}, {"attn_proj", c, c}, {"fc", c, 4 * c},
                            {"mlp_proj", 4 * c, c}, {"head", c, p.vocab}};
    double p_flops = 0, p_t1 = 0, p_tn = 0;
    for (const Layer& l : layers) {
      const size_t big = static_cast<size_t>(n) * std::max(l.in, l.out);
      std::vector<float> a(big), b(big), out(big);
      for (size_t i = 0; i < big; ++i) {
        a[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
        b[i] = static_cast<float>((i * 104729) % 1000) * 1e-3f - 0.5f;
      }
      for (Variant v : variants) {
        const double flops = 2.0 * n * l.in * l.out;
        Eigen::setNbThreads(1);
        const double t1 = TimeProduct(n, l, v, a, b, out, /*blas=*/true);
        const double tn = TimeProduct(n, l, v, a, b, out, /*blas=*/false);
        const double g1 = flops / t1 * 1e-9, gn = flops / tn * 1e-9;
        char shape[32];
        std::snprintf(shape, sizeof shape, "(%d,%d)x(%d,%d)", n, l.in, l.in, l.out);
        std::printf("%-10s %-10s %-20s %-12s %9.1f %5.1f%% %9.1f %5.1f%%\n", p.name,
                    l.name.c_str(), shape, VariantName(v), g1, 100 * g1 / peak1, gn,
                    100 * gn / peak1);
        p_flops += flops;
        p_t1 += t1;
        p_tn += tn;
      }
    }
    std::printf("%-10s %-10s %-20s %-12s %9.1f %5.1f%% %9.1f %5.1f%%\n", p.name, "all", "", "",
                p_flops / p_t1 * 1e-9, 100 * p_flops / p_t1 * 1e-9 / peak1,
                p_flops / p_tn * 1e-9, 100 * p_flops / p_tn * 1e-9 / peak1);
  }
  // Another process taking a core mid-run makes every ratio above wrong; say so.
  const double peakn_end = tandem::bench::MeasurePeakGflops(threads);
  const double drift = 100.0 * (peakn_end - peakn) / peakn;
  std::printf("peak_fp32 re-measured at the end: %.1f GFLOP/s on %d threads (%+.1f%%)%s\n",
              peakn_end, threads, drift,
              std::abs(drift) > 10 ? "  WARNING: the machine was busy; rerun when it is idle" : "");
  return 0;
}

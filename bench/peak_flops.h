// Measured FP32 peak of this machine: independent AVX2 FMA chains, no memory traffic.
// The GEMM benchmark divides by this number measured in the same run, so "% of peak" does not
// depend on a datasheet clock that a VM or a turbo governor may not deliver.
#pragma once

namespace tandem::bench {

// Runs `threads` OpenMP threads (one per core), each keeping 12 independent 8-wide FMA chains
// busy, and returns the total GFLOP/s (an FMA counts as 2 flops), best of a few trials.
// Takes about 0.3 s. Requires AVX2+FMA (the build uses -march=native).
double MeasurePeakGflops(int threads);

}  // namespace tandem::bench

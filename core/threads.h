// How many compute threads a process may use: the cores in its CPU affinity mask, divided among
// the processes that share the machine. TANDEM_THREADS overrides.
#pragma once

namespace tandem {

// Cores this process may run on (sched_getaffinity), at least 1.
int AvailableCores();

// Threads for compute in this process when `processes` processes share the machine's cores:
// max(1, AvailableCores() / processes), or TANDEM_THREADS when set.
int ComputeThreads(int processes = 1);

// Sets the OpenMP and Eigen thread counts.
void SetComputeThreads(int threads);

}  // namespace tandem

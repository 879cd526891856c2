// `tandem run`: a whole federated run on one machine. The coordinator runs in this process; the
// config's clients run as child processes (`tandem client ...`, over ipc:// or tcp://) or, with
// federation.transport = "inproc", as threads of this process sharing its ZeroMQ context. Compute
// threads are divided among them and machine-wide compute slots keep the cores from being
// oversubscribed.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "algorithms/algorithm.h"
#include "coordinator/coordinator.h"
#include "core/status.h"

namespace tandem {

class Config;

struct LaunchOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // passed on to every client as --set
  bool resume = false;
  bool overwrite = false;  // the run directory is cleared first
  std::string log_level = "info";
  std::function<void(const std::string& line)> progress;  // the coordinator's round lines
  // Set to SIGINT or SIGTERM when one of them stopped the run (RunLocal then returns an error).
  int* stopped_by_signal = nullptr;
};

// While it runs, SIGINT and SIGTERM stop the run instead of killing this process alone: the
// coordinator stops at the next turn of its event loop (within half a second, or once an
// evaluation and checkpoint in progress are written), keeping its last checkpoint so that
// `tandem run CONFIG --resume` continues; every client process started is terminated by its pid
// (SIGTERM, then SIGKILL after 3 s) and in-process clients by their stop flag. A client process that exits is
// reported to the coordinator, whose rounds then stop waiting for it. The previous signal
// handlers are restored on return.
StatusOr<CoordinatorResult> RunLocal(const Config& config, const Algorithm& algorithm,
                                     const LaunchOptions& options);

}  // namespace tandem

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
};

StatusOr<CoordinatorResult> RunLocal(const Config& config, const Algorithm& algorithm,
                                     const LaunchOptions& options);

}  // namespace tandem

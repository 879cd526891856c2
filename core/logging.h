// Named spdlog loggers, one per module. The library never decides where logs go: a program calls
// SetupLogging() once, and every logger made by GetLogger() writes to the sinks chosen there.
#pragma once

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "core/status.h"

namespace tandem {

// level: trace, debug, info, warn, error, off. log_file: also write there ("" for none).
Status SetupLogging(const std::string& level, const std::string& log_file = "");

// The logger named `name` ("models", "data", "train", ...), created on first use with the sinks
// of the default logger. Thread-safe.
std::shared_ptr<spdlog::logger> GetLogger(const std::string& name);

}  // namespace tandem

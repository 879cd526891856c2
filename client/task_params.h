// Reading a task's parameters, checked: the coordinator is trusted for the run's design but not
// for the integrity of what arrives, so every value is type- and range-checked before use.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "wire/message.h"

namespace tandem {

// InvalidArgument naming the key when it is missing, of another type, or outside [min, max].
StatusOr<int64_t> IntParam(const wire::Params& params, const std::string& key, int64_t min,
                           int64_t max);
// Accepts an integer too.
StatusOr<double> RealParam(const wire::Params& params, const std::string& key, double min,
                           double max);
StatusOr<std::string> StringParam(const wire::Params& params, const std::string& key);

}  // namespace tandem

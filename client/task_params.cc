#include "client/task_params.h"

namespace tandem {

StatusOr<int64_t> IntParam(const wire::Params& params, const std::string& key, int64_t min,
                           int64_t max) {
  auto it = params.find(key);
  if (it == params.end() || !std::holds_alternative<int64_t>(it->second)) {
    return Status::InvalidArgument("task parameter '" + key + "' missing or not an integer");
  }
  const int64_t v = std::get<int64_t>(it->second);
  if (v < min || v > max) {
    return Status::InvalidArgument("task parameter '" + key + "' = " + std::to_string(v) +
                                   " outside [" + std::to_string(min) + ", " +
                                   std::to_string(max) + "]");
  }
  return v;
}

StatusOr<double> RealParam(const wire::Params& params, const std::string& key, double min,
                           double max) {
  auto it = params.find(key);
  if (it == params.end()) return Status::InvalidArgument("task parameter '" + key + "' missing");
  double v;
  if (std::holds_alternative<double>(it->second)) {
    v = std::get<double>(it->second);
  } else if (std::holds_alternative<int64_t>(it->second)) {
    v = static_cast<double>(std::get<int64_t>(it->second));
  } else {
    return Status::InvalidArgument("task parameter '" + key + "' is not a number");
  }
  if (!(v >= min && v <= max)) {
    return Status::InvalidArgument("task parameter '" + key + "' = " + std::to_string(v) +
                                   " outside [" + std::to_string(min) + ", " +
                                   std::to_string(max) + "]");
  }
  return v;
}

StatusOr<std::string> StringParam(const wire::Params& params, const std::string& key) {
  auto it = params.find(key);
  if (it == params.end() || !std::holds_alternative<std::string>(it->second)) {
    return Status::InvalidArgument("task parameter '" + key + "' missing or not a string");
  }
  return std::get<std::string>(it->second);
}

}  // namespace tandem

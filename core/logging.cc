#include "core/logging.h"

#include <mutex>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace tandem {
namespace {
std::mutex g_mutex;
}

Status SetupLogging(const std::string& level, const std::string& log_file) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return Status::InvalidArgument("unknown log level '" + level +
                                   "' (expected trace, debug, info, warn, error or off)");
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!log_file.empty()) {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_file, false));
    } catch (const spdlog::spdlog_ex& e) {
      return Status::IoError("cannot open log file '" + log_file + "': " + e.what());
    }
  }
  spdlog::drop_all();
  auto root = std::make_shared<spdlog::logger>("tandem", sinks.begin(), sinks.end());
  root->set_pattern("%H:%M:%S.%e %^%l%$ [%n] %v");
  root->set_level(lvl);
  // Every line reaches the file at once: a killed process loses none, and a test or a user
  // following the log sees each round as it ends.
  root->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(root);
  spdlog::set_level(lvl);
  return Status::Ok();
}

std::shared_ptr<spdlog::logger> GetLogger(const std::string& name) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (auto existing = spdlog::get(name)) return existing;
  auto root = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(name, root->sinks().begin(), root->sinks().end());
  logger->set_pattern("%H:%M:%S.%e %^%l%$ [%n] %v");
  logger->set_level(root->level());
  logger->flush_on(spdlog::level::trace);
  spdlog::register_logger(logger);
  return logger;
}

}  // namespace tandem

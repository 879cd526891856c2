// `tandem run`; see apps/launch.h.
#include "apps/launch.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include <zmq.h>

#include "client/client.h"
#include "core/config.h"
#include "core/logging.h"
#include "core/threads.h"
#include "core/timer.h"
#include "train/run_dir.h"
#include "wire/curve.h"
#include "wire/transport_config.h"

extern char** environ;

namespace tandem {
namespace {

namespace fs = std::filesystem;

// The signal that asked the run to stop, 0 before one has. A lock-free atomic is what a signal
// handler may store to; the coordinator's event loop polls it.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void OnStopSignal(int signal) { g_stop_signal.store(signal); }

// SIGINT and SIGTERM set g_stop_signal while it lives; the previous handlers come back after.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal.store(0);
    struct sigaction action {};
    action.sa_handler = OnStopSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

std::string SelfExecutable() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "tandem" : p.string();
}

// Child processes: started with posix_spawn, their output in logs/client-K.log.
class ClientProcesses {
 public:
  ~ClientProcesses() { Stop(0.0); }

  Status Start(int index, const std::string& exe, const std::vector<std::string>& args,
               const std::string& log_path, int threads) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::string_view(*e).rfind("TANDEM_THREADS=", 0) != 0) env_strings.push_back(*e);
    }
    env_strings.push_back("TANDEM_THREADS=" + std::to_string(threads));
    std::vector<char*> argv, envp;
    argv.push_back(const_cast<char*>(exe.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return Status::IoError("cannot start '" + exe + "': " + std::strerror(rc));
    pids_.push_back(pid);
    index_of_[pid] = index;
    GetLogger("run")->info("client {}: pid {}", index, pid);
    return Status::Ok();
  }

  // The indices of the clients whose process has ended since the last call (non-blocking).
  std::vector<int> ReapExited() {
    std::vector<int> exited;
    for (auto it = pids_.begin(); it != pids_.end();) {
      int status = 0;
      const pid_t r = waitpid(*it, &status, WNOHANG);
      if (r == *it || r < 0) {
        const bool clean = r == *it && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!clean) ++failed_;
        const int index = index_of_[*it];
        GetLogger("run")->warn("client {} (pid {}) {}", index, *it,
                               r < 0                 ? "is gone"
                               : WIFSIGNALED(status) ? "was killed by signal " +
                                                           std::to_string(WTERMSIG(status))
                                                     : "exited with status " +
                                                           std::to_string(WEXITSTATUS(status)));
        exited.push_back(index);
        it = pids_.erase(it);
      } else {
        ++it;
      }
    }
    return exited;
  }

  // Waits up to `grace_s` for the clients to leave by themselves (they do on the coordinator's
  // Bye), then terminates the rest. Returns how many exited with an error.
  int Stop(double grace_s) {
    int failed = failed_;
    failed_ = 0;
    Stopwatch clock;
    auto reap = [&](bool block) {
      for (auto it = pids_.begin(); it != pids_.end();) {
        int status = 0;
        const pid_t r = waitpid(*it, &status, block ? 0 : WNOHANG);
        if (r == *it || r < 0) {
          if (r == *it && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) ++failed;
          it = pids_.erase(it);
        } else {
          ++it;
        }
      }
    };
    while (!pids_.empty() && clock.Seconds() < grace_s && g_stop_signal.load() == 0) {
      reap(false);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (pid_t pid : pids_) {
      GetLogger("run")->info("stopping client {} (pid {})", index_of_[pid], pid);
      kill(pid, SIGTERM);
    }
    for (Stopwatch term; !pids_.empty() && term.Seconds() < 3.0;) {
      reap(false);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (pid_t pid : pids_) kill(pid, SIGKILL);
    reap(true);
    return failed;
  }

 private:
  std::vector<pid_t> pids_;  // running
  std::map<pid_t, int> index_of_;
  int failed_ = 0;  // reaped by ReapExited with an error
};

}  // namespace

StatusOr<CoordinatorResult> RunLocal(const Config& config, const Algorithm& algorithm,
                                     const LaunchOptions& options) {
  auto log = GetLogger("run");
  TANDEM_ASSIGN_OR_RETURN(std::string run_dir, RunDirectory(config));
  TANDEM_ASSIGN_OR_RETURN(wire::TransportConfig transport,
                          wire::TransportConfigFromConfig(config, run_dir));
  TANDEM_ASSIGN_OR_RETURN(int64_t clients_i, config.GetInt("federation.clients", 4, 1, 100'000));
  const int clients = static_cast<int>(clients_i);
  // Before the clients' logs are opened in it (the clients themselves take no lock).
  TANDEM_ASSIGN_OR_RETURN(RunDirClaim claim,
                          ClaimRunDirectory(run_dir, {options.resume, options.overwrite}));
  std::error_code ec;
  fs::create_directories(run_dir + "/logs", ec);
  if (ec) return Status::IoError("cannot create '" + run_dir + "/logs': " + ec.message());
  if (transport.curve && !fs::exists(transport.keys_dir + "/coordinator.key")) {
    log->info("making CURVE keys for the coordinator and {} clients in {}", clients,
              transport.keys_dir);
    TANDEM_RETURN_IF_ERROR(wire::Keygen(transport.keys_dir, clients, /*overwrite=*/false));
  }
  // Clients compute while the coordinator waits, and the other way round: the clients share the
  // cores (compute slots serialise the excess), the coordinator may use them all between rounds.
  const int client_threads = std::max(1, AvailableCores() / clients);
  SetComputeThreads(ComputeThreads(1));

  StopSignals stop_signals;
  CoordinatorOptions coordinator;
  coordinator.resume = options.resume;
  coordinator.overwrite = options.overwrite;
  coordinator.progress = options.progress;
  coordinator.stop = &g_stop_signal;
  std::atomic<bool> stop_clients{false};
  std::vector<std::thread> threads;
  ClientProcesses processes;
  void* context = nullptr;
  if (transport.transport == "inproc") {
    context = zmq_ctx_new();
    if (context == nullptr) return Status::Internal("cannot create a ZeroMQ context");
    coordinator.zmq_context = context;
    coordinator.on_bound = [&](const std::string& endpoint) -> Status {
      log->info("starting {} in-process clients", clients);
      for (int k = 0; k < clients; ++k) {
        threads.emplace_back([&, k, endpoint] {
          ClientOptions o;
          o.index = k;
          o.connect = endpoint;
          o.zmq_context = context;
          o.threads = client_threads;
          o.stop = &stop_clients;
          auto r = RunClient(config, algorithm.client, o);
          if (!r.ok()) log->error("client {}: {}", k, r.status().message());
        });
      }
      return Status::Ok();
    };
  } else {
    coordinator.on_bound = [&, exe = SelfExecutable()](const std::string& endpoint) -> Status {
      if (g_stop_signal.load() != 0) return Status::Unavailable("the run was stopped");
      log->info("starting {} client processes ({} compute thread{} each); logs in {}/logs",
                clients, client_threads, client_threads == 1 ? "" : "s", run_dir);
      for (int k = 0; k < clients; ++k) {
        std::vector<std::string> args = {"--log-level", options.log_level, "client",
                                         options.config_path, "--id", std::to_string(k),
                                         "--connect", endpoint, "--keys", transport.keys_dir};
        for (const auto& o : options.overrides) {
          args.push_back("--set");
          args.push_back(o);
        }
        TANDEM_RETURN_IF_ERROR(processes.Start(
            k, exe, args, run_dir + "/logs/client-" + std::to_string(k) + ".log", client_threads));
      }
      return Status::Ok();
    };
    coordinator.exited_clients = [&] {
      std::vector<std::string> names;
      for (int k : processes.ReapExited()) names.push_back("client-" + std::to_string(k));
      return names;
    };
  }
  StatusOr<CoordinatorResult> result = RunCoordinator(config, algorithm.server, coordinator);
  stop_clients = true;
  for (auto& t : threads) t.join();
  if (context != nullptr) zmq_ctx_term(context);
  const int failed = processes.Stop(result.ok() ? 10.0 : 0.0);
  if (const int signal = g_stop_signal.load(); signal != 0) {
    log->warn("stopped by signal {}; every client was stopped", signal);
    if (result.ok()) return result;  // the run had just completed
    if (options.stopped_by_signal != nullptr) *options.stopped_by_signal = signal;
    return Status::Unavailable("the run was stopped by signal " + std::to_string(signal));
  }
  if (failed > 0) {
    log->warn("{} client process{} ended with an error; see {}/logs", failed,
              failed == 1 ? "" : "es", run_dir);
  }
  return result;
}

}  // namespace tandem

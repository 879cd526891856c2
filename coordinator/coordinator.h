// `tandem coordinator`: the cloud side of a run. Binds the configured endpoint, admits clients,
// runs the round engine with the configured algorithm, and leaves in runs/<name>/ the resolved
// config, metrics.jsonl (one line per round), summary.json and an atomic checkpoint after every
// round, from which --resume continues bit for bit.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "coordinator/algorithm.h"
#include "core/status.h"

namespace tandem {

class Config;

struct CoordinatorOptions {
  bool resume = false;
  bool overwrite = false;  // clear an earlier run of the same name (train/run_dir.h)
  std::string bind;      // overrides federation.endpoint
  std::string keys_dir;  // overrides federation.keys_dir
  // Called once the endpoint is bound, with the address clients should connect to (the real port
  // when tcp port 0 was asked for). `tandem run` starts its clients from here.
  std::function<Status(const std::string& endpoint)> on_bound;
  void* zmq_context = nullptr;  // shared with in-process clients for inproc://
  // Receives a line for a person after each round (and round 0); the program decides where it
  // goes. Null: nothing is shown.
  std::function<void(const std::string& line)> progress;
  // Set (non-zero, e.g. to the signal's number) by a signal handler or another thread to stop
  // the run: the event loop checks it every iteration (every half second at most, except while
  // a round's evaluation and checkpoint are being written), stops the engine without touching
  // the last checkpoint, says goodbye to the clients and returns an Unavailable status saying
  // so (the caller, who set the flag, knows why). Null: the run stops only by itself.
  const std::atomic<int>* stop = nullptr;
  // Polled every iteration of the event loop, from its thread: the names ("client-K") of clients
  // whose process has ended since the last call. The engine stops waiting for them
  // (RoundEngine::OnClientExited). Null: only lost connections are noticed.
  std::function<std::vector<std::string>()> exited_clients;
  // With serve.enabled: called on the inference service's worker before each request is computed
  // (fault injection for tests: a slow model). Null: nothing.
  std::function<void()> serve_before_compute;
};

struct CoordinatorResult {
  std::string run_dir;
  uint64_t rounds = 0;           // rounds completed or aborted in this run's life (all sessions)
  uint64_t aborted_rounds = 0;
  double initial_val_loss = 0.0;
  double final_val_loss = 0.0;
  double final_test_loss = 0.0;
  uint64_t bytes_up = 0, bytes_down = 0;
  double seconds = 0.0;
  std::string stop_reason;  // why the run ended early without an error (a privacy budget)
  double epsilon = 0.0;     // with DP: ε spent at the config's δ
};

// Runs `algorithm`'s coordinator half (the config's algorithm.name; algorithms/registry.h finds it).
StatusOr<CoordinatorResult> RunCoordinator(const Config& config, const ServerPlugin& algorithm,
                                           const CoordinatorOptions& options);

// runs/<name> for a config (out_dir and name), for programs that need it before the run starts.
StatusOr<std::string> RunDirectory(const Config& config);

}  // namespace tandem

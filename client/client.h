// `tandem client`: one edge client. Loads its own partition of the config's data, connects to the
// coordinator (CURVE with its key pair when the transport asks for it) and answers tasks until the
// coordinator ends the run.
#pragma once

#include <string>

#include "client/context.h"
#include "client/session.h"
#include "core/status.h"

namespace tandem {

class Config;

struct ClientOptions {
  int index = 0;          // K: the data partition, and the identity "client-K" / key client-K.key
  std::string connect;    // the coordinator's endpoint; default: federation.endpoint
  std::string keys_dir;   // overrides federation.keys_dir
  void* zmq_context = nullptr;  // shared with the coordinator for inproc://
  int threads = 0;        // compute threads; 0 = ComputeThreads(1) (TANDEM_THREADS if set)
  bool use_compute_slots = true;
  const std::atomic<bool>* stop = nullptr;  // in-process clients: ends the session when true
};

// Runs `algorithm`'s client half (the config's algorithm.name) until the coordinator ends the run.
StatusOr<SessionSummary> RunClient(const Config& config, const ClientPlugin& algorithm,
                                   const ClientOptions& options);

}  // namespace tandem

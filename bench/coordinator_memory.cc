// Coordinator memory against the model's size: a FedAvg coordinator with a model of `--preset`
// runs rounds with `--clients` clients, which live in a second process of this program (threads,
// each with its own transport, answering "fedavg.train" with a delta of the model's size). The
// coordinator's peak resident memory above its baseline (model built, first evaluation done,
// nothing received yet) is reported as a multiple of the model's bytes; DESIGN.md asks for O(model)
// memory, and the target is at most 4x.
//
//   tandem_coordinator_memory_bench [--clients 100] [--preset llm-small] [--rounds 2]
#include <malloc.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "client/session.h"
#include "coordinator/engine.h"
#include "algorithms/fedavg/server.h"
#include "coordinator/server_outbox.h"
#include "algorithms/common/strategy.h"
#include "core/logging.h"
#include "core/timer.h"
#include "models/gpt.h"
#include "wire/transport.h"

extern char** environ;

namespace {

using namespace tandem;

// kB of a /proc/self/status field ("VmRSS", "VmHWM").
long StatusKb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::strlen(field) + 1);
  }
  return -1;
}

// Bytes malloc has handed out and not had back (arena and mmapped blocks), ZeroMQ's included.
double HeapInUseMb() {
  const struct mallinfo2 m = mallinfo2();
  return static_cast<double>(m.uordblks + m.hblkhd) / 1e6;
}

// Answers with a small delta of the right size, without holding a model.
class EchoHandler : public TaskHandler {
 public:
  std::vector<std::string> Capabilities() const override { return {"fedavg.train"}; }
  Status Run(uint64_t round, const wire::TaskAssign& task, wire::TaskResult* result) override {
    if (task.tensors.empty()) return Status::InvalidArgument("no parameters");
    const uint64_t n = task.tensors[0].NumElements();
    std::vector<float> delta(n, 1e-4f);
    result->tensors = {wire::Tensor::Float32("delta", {n}, delta)};
    result->weight = 1.0;
    result->metrics = {{"train_loss", 1.0}};
    return Status::Ok();
  }
};

int ServeClients(int clients, const std::string& endpoint) {
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  for (int k = 0; k < clients; ++k) {
    threads.emplace_back([&, k] {
      wire::TransportOptions o;
      o.endpoint = endpoint;
      o.identity = "client-" + std::to_string(k);
      o.heartbeat_interval_ms = 1000;
      o.peer_timeout_ms = 60000;
      auto link = wire::Client::Connect(o);
      if (!link.ok()) {
        ++failed;
        return;
      }
      EchoHandler handler;
      SessionOptions s;
      s.give_up_s = 120;
      if (!RunSession(link->get(), &handler, s).ok()) ++failed;
    });
  }
  for (auto& t : threads) t.join();
  return failed.load() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int clients = 100, rounds = 2;
  int hold_ms = 0;  // --hold MS: offers wait up to MS for the model's broadcast to be sent
  bool whole_uploads = false;  // --whole 1: every upload reassembled whole (the path before streaming)
  std::string preset = "llm-small", serve_endpoint;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--clients") clients = std::atoi(argv[i + 1]);
    else if (flag == "--rounds") rounds = std::atoi(argv[i + 1]);
    else if (flag == "--preset") preset = argv[i + 1];
    else if (flag == "--serve") serve_endpoint = argv[i + 1];
    else if (flag == "--hold") hold_ms = std::atoi(argv[i + 1]);
    else if (flag == "--whole") whole_uploads = std::atoi(argv[i + 1]) != 0;
    else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  (void)SetupLogging(getenv("MEMBENCH_LOG") ? getenv("MEMBENCH_LOG") : "warn");
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);  // as `tandem coordinator` does (apps/main.cc)
  if (!serve_endpoint.empty()) return ServeClients(clients, serve_endpoint);

  auto config = ModelPreset(preset);
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", config.status().message().c_str());
    return 2;
  }
  auto model = std::make_unique<Gpt>(*config);
  model->InitWeights(1);
  const double model_bytes = static_cast<double>(model->params().size()) * sizeof(float);
  StrategyConfig sc;
  auto strategy = MakeStrategy(sc);
  FedAvgServerConfig fc;
  fc.eval_tokens = 2048;
  std::vector<Record> validation;
  for (int i = 0; i < 64; ++i) validation.push_back({"the quick brown fox jumps over it\n", "x"});
  FedAvgServer algorithm(fc, std::move(model), std::move(*strategy), validation);
  if (!algorithm.ValidationLoss().ok()) return 1;  // the evaluation arena, before the baseline

  const std::string endpoint = "ipc:///tmp/tandem-membench-" + std::to_string(getpid()) + ".sock";
  wire::TransportOptions so;
  so.endpoint = endpoint;
  so.run_id = 7;
  so.heartbeat_interval_ms = 1000;
  so.peer_timeout_ms = 60000;
  so.stream_contributions = !whole_uploads;
  so.upload_hold_for_broadcast_ms = static_cast<uint32_t>(hold_ms);
  auto server = wire::Server::Bind(so);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().message().c_str());
    return 1;
  }
  const long baseline_kb = StatusKb("VmRSS");
  const double baseline_heap_mb = HeapInUseMb();

  // The clients, in a second process of this program.
  std::string self = "/proc/self/exe";
  std::vector<std::string> args = {argv[0], "--serve", endpoint, "--clients",
                                   std::to_string(clients)};
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  pid_t child = 0;
  if (posix_spawn(&child, self.c_str(), nullptr, nullptr, cargs.data(), environ) != 0) return 1;

  EngineConfig ec;
  ec.rounds = rounds;
  ec.expected_clients = clients;
  ec.round_deadline_s = 300;
  ec.wait_for_clients_s = 120;
  ServerOutbox outbox(server->get());
  Stopwatch clock;
  RoundEngine engine(ec, &algorithm, &outbox, [&] { return clock.Seconds(); }, 1);
  std::vector<double> round_seconds;
  engine.SetRoundEndCallback([&](uint64_t, const std::map<std::string, double>& m) {
    if (m.count("aborted")) return Status::Internal("round aborted");
    round_seconds.push_back(m.at("round_s"));
    return Status::Ok();
  });
  std::vector<std::string> live;
  // Resident memory once every client is connected and before the first task goes out: the
  // per-connection state (ZeroMQ pipes and buffers, per-peer transport state) grows with the
  // number of clients, not with the model, and is reported apart.
  long connected_kb = -1;
  double connected_heap_mb = 0;
  while (!engine.done()) {
    auto ev = (*server)->Receive(std::chrono::milliseconds(50));
    if (!ev.ok()) break;
    if (*ev) {
      if ((*ev)->kind == wire::TransportEvent::Kind::kPeerJoined) {
        wire::Message w;
        w.envelope.round = engine.current_round();
        w.body = wire::Welcome{0, 1000, 60000};
        (void)(*server)->Send((*ev)->peer, std::move(w));
        live.push_back((*ev)->peer);
        if (connected_kb < 0 && static_cast<int>(live.size()) == clients) {
          connected_kb = StatusKb("VmRSS");
          connected_heap_mb = HeapInUseMb();
        }
        engine.OnJoined((*ev)->peer, {"fedavg.train"});
      } else if ((*ev)->kind == wire::TransportEvent::Kind::kPeerLost) {
        engine.OnLost((*ev)->peer);
      } else if (!DeliverUploadEvent(**ev, &engine, server->get())) {
        engine.OnMessage((*ev)->peer, (*ev)->message);
      }
    }
    engine.Tick();
  }
  const long peak_kb = StatusKb("VmHWM");
  const double done_heap_mb = HeapInUseMb();  // the rounds over, every client still connected
  for (const auto& p : live) {
    wire::Message bye;
    bye.envelope.round = engine.current_round();
    bye.body = wire::Bye{"done"};
    (void)(*server)->Send(p, std::move(bye));
  }
  int status = 0;
  for (Stopwatch wait; wait.Seconds() < 20;) {
    if (waitpid(child, &status, WNOHANG) == child) {
      child = 0;
      break;
    }
    (void)(*server)->Receive(std::chrono::milliseconds(50));
  }
  if (child != 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
  }
  if (!engine.status().ok()) {
    std::fprintf(stderr, "engine: %s\n", engine.status().message().c_str());
    return 1;
  }
  const double above = (peak_kb - baseline_kb) * 1024.0;
  std::printf("preset %s (%s uploads, hold %d ms): model %.1f MB, %d clients, %d rounds (%.2f s, %.2f s)\n",
              preset.c_str(), whole_uploads ? "whole" : "streamed", hold_ms, model_bytes / 1e6, clients,
              rounds, round_seconds.empty() ? 0 : round_seconds[0],
              round_seconds.size() > 1 ? round_seconds[1] : 0);
  std::printf("coordinator RSS: baseline %.1f MB, peak %.1f MB, peak above baseline %.1f MB\n",
              baseline_kb / 1024.0, peak_kb / 1024.0, above / 1e6);
  std::printf("ratio (peak above baseline / model bytes) = %.2f  (target <= 4)\n",
              above / model_bytes);
  std::printf("heap in use: baseline %.1f MB, %d clients connected %.1f MB, rounds done %.1f MB\n",
              baseline_heap_mb, clients, connected_heap_mb, done_heap_mb);
  if (connected_kb >= 0) {
    const double above_connected = (peak_kb - connected_kb) * 1024.0;
    std::printf("with %d clients connected: RSS %.1f MB (connections %.1f MB); peak above it "
                "%.1f MB, ratio %.2f\n",
                clients, connected_kb / 1024.0, (connected_kb - baseline_kb) / 1024.0,
                above_connected / 1e6, above_connected / model_bytes);
  }
  return 0;
}

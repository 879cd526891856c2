// How soon tandem's transport notices a silent peer, and how long a Send takes, each against a
// reference measured in the same run (these were wall-clock bounds in the transport's unit tests).
//
// Loss detection: a Server whose client vanishes without a Bye, and a Client whose coordinator
// vanishes, timed from the vanishing to kPeerLost, against a plain timed wait
// (std::condition_variable::wait_for) of the same peer timeout. The ratio is what the transport
// adds to the timeout (heartbeat spacing, timer tick) beyond what this machine adds to any timed
// wait; the transport counts the timeout from the last frame it heard, so it can be below 1.
//
// Send: Server::Send of 80 TaskAssigns of half a MiB to a peer that reads nothing (its queues are
// full after a few), and of a small TaskAssign to a peer whose connection is gone, against
// EncodeMessage of the same messages in the same process. Send validates, encodes into frames and
// queues them for the I/O thread; a ratio near 1 says it does not wait for the network.
//
//   tandem_transport_timing_bench [--reps 5] [--timeout-ms 400]
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/logging.h"
#include "wire/message.h"
#include "wire/transport.h"

namespace {

using tandem::Status;
using tandem::StatusOr;
using namespace tandem::wire;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using Kind = TransportEvent::Kind;

constexpr uint64_t kRun = 0x7A11DE;
constexpr auto kWait = milliseconds(10000);

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "tandem_transport_timing_bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

Message Make(Body body, uint64_t round = 0, uint64_t task = 0) {
  Message m;
  m.envelope.round = round;
  m.envelope.task_id = task;
  m.body = std::move(body);
  return m;
}

Message Assign(uint64_t task, size_t floats) {
  TaskAssign a;
  a.kind = "fedavg.train";
  a.tensors.push_back(Tensor::Float32("weights", {floats}, std::vector<float>(floats, 0.5f)));
  Message m = Make(std::move(a), 1, task);
  m.envelope.run_id = kRun;
  m.envelope.sequence = 1;  // Send stamps its own; EncodeMessage needs one
  return m;
}

// The next event of `kind`; others are skipped.
template <typename T>
void Await(T& transport, Kind kind) {
  const Clock::time_point deadline = Clock::now() + kWait;
  while (Clock::now() < deadline) {
    auto event = transport.Receive(milliseconds(50));
    Check(event.status(), "receive");
    if (event->has_value() && (*event)->kind == kind) return;
  }
  Die("an expected event did not come");
}

TransportOptions Options(const std::string& endpoint, uint32_t timeout_ms) {
  TransportOptions o;
  o.endpoint = endpoint;
  o.run_id = kRun;
  o.heartbeat_interval_ms = 100;
  o.peer_timeout_ms = timeout_ms;
  return o;
}

// A joined Server and Client on tcp loopback, both at the given peer timeout.
struct Pair {
  std::unique_ptr<Server> server;
  std::unique_ptr<Client> client;
  explicit Pair(uint32_t timeout_ms) {
    auto s = Server::Bind(Options("tcp://127.0.0.1:0", timeout_ms));
    Check(s.status(), "bind");
    server = std::move(*s);
    TransportOptions co = Options(server->endpoint(), timeout_ms);
    co.identity = "timed";
    auto c = Client::Connect(co);
    Check(c.status(), "connect");
    client = std::move(*c);
    Check(client->Send(Make(Hello{"bench", {}})), "hello");
    Await(*server, Kind::kPeerJoined);
    Check(server->Send("timed", Make(Welcome{0, 100, timeout_ms})), "welcome");
    Await(*client, Kind::kPeerJoined);
  }
};

// A raw DEALER that says Hello and then reads nothing.
class RawPeer {
 public:
  RawPeer(const std::string& endpoint, const std::string& identity) : ctx_(zmq_ctx_new()) {
    socket_ = zmq_socket(ctx_, ZMQ_DEALER);
    int zero = 0, one = 1;
    zmq_setsockopt(socket_, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(socket_, ZMQ_RCVHWM, &one, sizeof(one));
    zmq_setsockopt(socket_, ZMQ_ROUTING_ID, identity.data(), identity.size());
    if (zmq_connect(socket_, endpoint.c_str()) != 0) Die("raw connect");
    Message hello = Make(Hello{"bench", {}});
    hello.envelope.sequence = 1;
    StatusOr<std::string> bytes = EncodeMessage(hello);
    Check(bytes.status(), "encode hello");
    zmq_send(socket_, bytes->data(), bytes->size(), 0);
  }
  ~RawPeer() { Close(); }
  void Close() {
    if (socket_ != nullptr) zmq_close(socket_);
    if (ctx_ != nullptr) zmq_ctx_term(ctx_);
    socket_ = ctx_ = nullptr;
  }

 private:
  void* ctx_;
  void* socket_ = nullptr;
};

std::unique_ptr<Server> BindForSends(int high_water_mark) {
  TransportOptions so = Options("tcp://127.0.0.1:0", 10000);
  so.high_water_mark = high_water_mark;
  auto s = Server::Bind(so);
  Check(s.status(), "bind");
  return std::move(*s);
}

// Seconds of EncodeMessage over `messages`: the reference for sending them.
double EncodeSeconds(const std::vector<Message>& messages) {
  const Clock::time_point start = Clock::now();
  size_t bytes = 0;
  for (const Message& m : messages) {
    StatusOr<std::string> encoded = EncodeMessage(m);
    Check(encoded.status(), "encode");
    bytes += encoded->size();
  }
  const double s = Seconds(start, Clock::now());
  if (bytes == 0) Die("nothing encoded");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 5;
  uint32_t timeout_ms = 400;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + arg);
      return argv[++i];
    };
    if (arg == "--reps") {
      reps = std::max(1, std::atoi(value().c_str()));
    } else if (arg == "--timeout-ms") {
      timeout_ms = static_cast<uint32_t>(std::max(100, std::atoi(value().c_str())));
    } else {
      std::printf("usage: tandem_transport_timing_bench [--reps 5] [--timeout-ms 400]\n");
      return arg == "--help" ? 0 : 1;
    }
  }
  Check(tandem::SetupLogging("error"), "logging");

  // ---- Loss detection, interleaved with the reference wait. ----
  std::vector<double> reference, server_side, client_side;
  for (int rep = 0; rep < reps; ++rep) {
    {
      std::mutex mu;
      std::condition_variable cv;
      std::unique_lock<std::mutex> lock(mu);
      const Clock::time_point start = Clock::now();
      cv.wait_for(lock, milliseconds(timeout_ms), [] { return false; });
      reference.push_back(Seconds(start, Clock::now()));
    }
    {
      Pair pair(timeout_ms);
      const Clock::time_point start = Clock::now();
      pair.client.reset();  // no Bye: silence
      Await(*pair.server, Kind::kPeerLost);
      server_side.push_back(Seconds(start, Clock::now()));
    }
    {
      Pair pair(timeout_ms);
      const Clock::time_point start = Clock::now();
      pair.server.reset();
      Await(*pair.client, Kind::kPeerLost);
      client_side.push_back(Seconds(start, Clock::now()));
    }
  }
  const double ref = Median(reference);
  std::printf("Loss detection, peer timeout %u ms, heartbeats every 100 ms, tcp loopback, "
              "median of %d\n", timeout_ms, reps);
  std::printf("  %-44s %8.1f ms\n", "reference: a timed wait of the timeout", 1e3 * ref);
  std::printf("  %-44s %8.1f ms   ratio %.2f\n", "Server: a client vanishes -> kPeerLost",
              1e3 * Median(server_side), Median(server_side) / ref);
  std::printf("  %-44s %8.1f ms   ratio %.2f\n", "Client: the coordinator vanishes -> kPeerLost",
              1e3 * Median(client_side), Median(client_side) / ref);

  // ---- Send: 80 half-MiB messages to a peer that reads nothing. ----
  constexpr int kMessages = 80;
  const size_t floats = kChunkThresholdBytes / 8;
  std::vector<double> bulk_send, bulk_encode;
  for (int rep = 0; rep < reps; ++rep) {
    std::vector<Message> messages;
    for (int i = 0; i < kMessages; ++i) messages.push_back(Assign(i + 1, floats));
    bulk_encode.push_back(EncodeSeconds(messages));
    std::unique_ptr<Server> server = BindForSends(2);
    RawPeer slow(server->endpoint(), "slow");
    Await(*server, Kind::kPeerJoined);
    const Clock::time_point start = Clock::now();
    for (Message& m : messages) Check(server->Send("slow", std::move(m)), "send");
    bulk_send.push_back(Seconds(start, Clock::now()));
  }
  std::printf("\nSend of %d TaskAssigns of %.1f MiB to a peer that reads nothing, median of %d\n",
              kMessages, floats * 4.0 / (1 << 20), reps);
  std::printf("  %-44s %8.1f ms\n", "reference: EncodeMessage of the same",
              1e3 * Median(bulk_encode));
  std::printf("  %-44s %8.1f ms   ratio %.2f\n", "Server::Send, all of them",
              1e3 * Median(bulk_send), Median(bulk_send) / Median(bulk_encode));

  // ---- Send: a small message to a peer whose connection is gone. ----
  constexpr int kSends = 200;
  std::vector<double> small_send, small_encode;
  {
    std::unique_ptr<Server> server = BindForSends(1000);
    {
      RawPeer gone(server->endpoint(), "vanishing");
      Await(*server, Kind::kPeerJoined);
    }  // the connection closes; the session lives on until its timeout
    const Message small = Assign(1, 1);
    // Until the I/O thread has found the connection gone (its first drop), as a caller meets it.
    const Clock::time_point deadline = Clock::now() + kWait;
    while (server->stats().dropped == 0) {
      if (Clock::now() > deadline) Die("no frame was dropped: the peer did not vanish");
      Check(server->Send("vanishing", small), "send");
      std::this_thread::sleep_for(milliseconds(20));
    }
    for (int i = 0; i < kSends; ++i) {
      small_encode.push_back(EncodeSeconds({small}));
      Message copy = small;
      const Clock::time_point start = Clock::now();
      Check(server->Send("vanishing", std::move(copy)), "send");
      small_send.push_back(Seconds(start, Clock::now()));
    }
  }
  std::printf("\nSend of a one-float TaskAssign to a peer whose connection is gone, median of %d\n",
              kSends);
  std::printf("  %-44s %8.1f us\n", "reference: EncodeMessage of the same",
              1e6 * Median(small_encode));
  std::printf("  %-44s %8.1f us   ratio %.2f\n", "Server::Send", 1e6 * Median(small_send),
              Median(small_send) / Median(small_encode));
  return 0;
}

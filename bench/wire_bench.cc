// Throughput of a model update through tandem's wire layer against raw ZeroMQ on the same
// loopback, measured back to back and interleaved in one run. The update is a TaskResult with one
// float32 tensor, moved from a Client to a Server over tcp://127.0.0.1 and taken all the way to a
// std::vector<float>: validate, encode, chunk, send, receive, reassemble, decode, copy out. The
// reference is a DEALER sending the same bytes as one message to a ROUTER, received into a zmq
// message and copied to a vector. Each side has its own ZeroMQ context (one I/O thread), as two
// processes would. Both paths are also run with CURVE on.
//
//   tandem_wire_bench [--sizes 16,64] [--reps 9] [--chunk-kib 1024] [--no-curve]
//
// Prints the median throughput (payload MB/s, MB = 10^6 bytes) of each path and the ratio
// tandem / raw (target >= 0.8).
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/logging.h"
#include "wire/curve.h"
#include "wire/transport.h"

namespace {

using tandem::Status;
using tandem::StatusOr;
using namespace tandem::wire;
using Clock = std::chrono::steady_clock;

constexpr auto kTimeout = std::chrono::milliseconds(60000);

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "tandem_wire_bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Keys {
  CurveKeyPair server = *GenerateCurveKeyPair();
  CurveKeyPair client = *GenerateCurveKeyPair();
};

// ---- tandem: one Server, one joined Client. ----

class WirePath {
 public:
  WirePath(bool curve, size_t chunk_bytes, const Keys& keys) {
    TransportOptions so;
    so.endpoint = "tcp://127.0.0.1:0";
    so.run_id = 1;
    so.chunk_bytes = chunk_bytes;
    so.curve = curve;
    so.own_keys = keys.server;
    so.allow_list.name_by_key[keys.client.public_key] = "bench";
    auto server = Server::Bind(so);
    Check(server.status(), "bind");
    server_ = std::move(*server);
    TransportOptions co;
    co.endpoint = server_->endpoint();
    co.identity = "bench";
    co.chunk_bytes = chunk_bytes;
    co.curve = curve;
    co.own_keys = keys.client;
    co.server_public_key = keys.server.public_key;
    auto client = Client::Connect(co);
    Check(client.status(), "connect");
    client_ = std::move(*client);
    Check(client_->Send(Message{{}, Hello{"bench", {}}}), "hello");
    Next(server_.get(), TransportEvent::Kind::kPeerJoined);
    Next(server_.get(), TransportEvent::Kind::kMessage);
    Check(server_->Send("bench", Message{{}, Welcome{0, 1000, 60000}}), "welcome");
    Next(client_.get(), TransportEvent::Kind::kPeerJoined);
    Next(client_.get(), TransportEvent::Kind::kMessage);
  }

  // Seconds from Send to the values in a vector on the server side.
  double Move(Message update, std::vector<float>* out) {
    const Clock::time_point start = Clock::now();
    Check(client_->Send(std::move(update)), "send");
    TransportEvent event = Next(server_.get(), TransportEvent::Kind::kMessage);
    const Tensor& t = std::get<TaskResult>(event.message.body).tensors.at(0);
    *out = t.ToFloat32();
    return Seconds(start, Clock::now());
  }

 private:
  template <typename T>
  TransportEvent Next(T* transport, TransportEvent::Kind kind) {
    auto event = transport->Receive(kTimeout);
    Check(event.status(), "receive");
    if (!event->has_value() || (*event)->kind != kind) Die("unexpected or missing event");
    return std::move(**event);
  }

  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> client_;
};

// ---- raw ZeroMQ: a DEALER to a ROUTER, one message. ----

class RawPath {
 public:
  RawPath(bool curve, const Keys& keys)
      : server_ctx_(zmq_ctx_new()), client_ctx_(zmq_ctx_new()) {
    router_ = zmq_socket(server_ctx_, ZMQ_ROUTER);
    dealer_ = zmq_socket(client_ctx_, ZMQ_DEALER);
    int zero = 0, one = 1;
    zmq_setsockopt(router_, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(dealer_, ZMQ_LINGER, &zero, sizeof(zero));
    if (curve) {
      zmq_setsockopt(router_, ZMQ_CURVE_SERVER, &one, sizeof(one));
      zmq_setsockopt(router_, ZMQ_CURVE_SECRETKEY, keys.server.secret_key.data(), 40);
      zmq_setsockopt(dealer_, ZMQ_CURVE_SERVERKEY, keys.server.public_key.data(), 40);
      zmq_setsockopt(dealer_, ZMQ_CURVE_PUBLICKEY, keys.client.public_key.data(), 40);
      zmq_setsockopt(dealer_, ZMQ_CURVE_SECRETKEY, keys.client.secret_key.data(), 40);
    }
    if (zmq_bind(router_, "tcp://127.0.0.1:0") != 0) Die("raw bind");
    char endpoint[256];
    size_t size = sizeof(endpoint);
    zmq_getsockopt(router_, ZMQ_LAST_ENDPOINT, endpoint, &size);
    if (zmq_connect(dealer_, endpoint) != 0) Die("raw connect");
  }
  ~RawPath() {
    zmq_close(router_);
    zmq_close(dealer_);
    zmq_ctx_term(server_ctx_);
    zmq_ctx_term(client_ctx_);
  }

  double Move(const std::vector<float>& values, std::vector<float>* out) {
    const size_t bytes = values.size() * sizeof(float);
    const Clock::time_point start = Clock::now();
    if (zmq_send(dealer_, values.data(), bytes, 0) != static_cast<int>(bytes)) Die("raw send");
    zmq_msg_t id, msg;
    zmq_msg_init(&id);
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&id, router_, 0) < 0 || zmq_msg_recv(&msg, router_, 0) < 0) Die("raw recv");
    out->resize(zmq_msg_size(&msg) / sizeof(float));
    std::memcpy(out->data(), zmq_msg_data(&msg), out->size() * sizeof(float));
    zmq_msg_close(&id);
    zmq_msg_close(&msg);
    return Seconds(start, Clock::now());
  }

 private:
  void* server_ctx_;
  void* client_ctx_;
  void* router_ = nullptr;
  void* dealer_ = nullptr;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<int> ParseSizes(const std::string& text) {
  std::vector<int> sizes;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const int mib = std::atoi(item.c_str());
    if (mib <= 0 || mib > 250) Die("sizes are MiB between 1 and 250");
    sizes.push_back(mib);
  }
  return sizes;
}

struct Row {
  std::string label;
  std::vector<double> mbps;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes = {16, 64};
  int reps = 9;
  size_t chunk_bytes = tandem::wire::kChunkBytes;
  bool curve = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + arg);
      return argv[++i];
    };
    if (arg == "--sizes") {
      sizes = ParseSizes(value());
    } else if (arg == "--reps") {
      reps = std::max(1, std::atoi(value().c_str()));
    } else if (arg == "--chunk-kib") {
      chunk_bytes = static_cast<size_t>(std::atoi(value().c_str())) * 1024;
    } else if (arg == "--no-curve") {
      curve = false;
    } else {
      std::printf("usage: tandem_wire_bench [--sizes 16,64] [--reps 9] [--chunk-kib 1024] "
                  "[--no-curve]\n");
      return arg == "--help" ? 0 : 1;
    }
  }
  if (chunk_bytes < kMinChunkBytes || chunk_bytes > kMaxChunkBytes) Die("chunk size out of range");
  Check(tandem::SetupLogging("warn"), "logging");

  const Keys keys;
  WirePath wire(false, chunk_bytes, keys);
  RawPath raw(false, keys);
  std::unique_ptr<WirePath> wire_curve;
  std::unique_ptr<RawPath> raw_curve;
  if (curve) {
    wire_curve = std::make_unique<WirePath>(true, chunk_bytes, keys);
    raw_curve = std::make_unique<RawPath>(true, keys);
  }

  std::printf("tandem wire vs raw ZeroMQ, tcp loopback, TaskResult with one f32 tensor -> "
              "std::vector<float>\n");
  std::printf("chunks of %zu KiB, %d repetitions interleaved, median payload throughput\n\n",
              chunk_bytes / 1024, reps);
  std::printf("%-8s %-18s %12s %12s %12s %8s\n", "size", "path", "median MB/s", "min MB/s",
              "max MB/s", "ratio");
  for (int mib : sizes) {
    const size_t n = static_cast<size_t>(mib) * (1 << 20) / sizeof(float);
    std::vector<float> values(n);
    for (size_t i = 0; i < n; ++i) values[i] = static_cast<float>(i % 1000) * 1e-3f - 0.5f;
    TaskResult result;
    result.tensors.push_back(Tensor::Float32("delta", {n}, values));
    result.weight = 1.0;
    Message update{{}, result};
    update.envelope.round = 1;
    update.envelope.task_id = 1;
    const double payload = static_cast<double>(n * sizeof(float));

    Row raw_row{"raw zmq", {}}, wire_row{"tandem wire", {}};
    Row raw_curve_row{"raw zmq +CURVE", {}}, wire_curve_row{"tandem wire +CURVE", {}};
    std::vector<float> out;
    auto check = [&](const char* what) {
      if (out.size() != n || std::memcmp(out.data(), values.data(), n * sizeof(float)) != 0) {
        Die(std::string(what) + ": the received values differ");
      }
      std::vector<float>().swap(out);
    };
    // One untimed warm-up of each path, then interleaved repetitions, alternating which goes first.
    for (int rep = -1; rep < reps; ++rep) {
      for (int k = 0; k < 2; ++k) {
        const bool raw_first = (rep + k) % 2 == 0;
        for (int which = 0; which < 2; ++which) {
          const bool do_raw = (which == 0) == raw_first;
          if (k == 1 && !curve) break;
          RawPath& r = k == 0 ? raw : *raw_curve;
          WirePath& w = k == 0 ? wire : *wire_curve;
          double seconds;
          if (do_raw) {
            seconds = r.Move(values, &out);
            check("raw");
          } else {
            Message copy = update;  // outside the timed region: Send consumes its message
            seconds = w.Move(std::move(copy), &out);
            check("wire");
          }
          if (rep < 0) continue;
          Row& row = k == 0 ? (do_raw ? raw_row : wire_row) : (do_raw ? raw_curve_row : wire_curve_row);
          row.mbps.push_back(payload / seconds / 1e6);
        }
      }
    }
    auto print = [&](const Row& row, const Row* reference) {
      if (row.mbps.empty()) return;
      const double median = Median(row.mbps);
      char ratio[32] = "";
      if (reference) std::snprintf(ratio, sizeof(ratio), "%.2f", median / Median(reference->mbps));
      std::printf("%-8s %-18s %12.0f %12.0f %12.0f %8s\n", (std::to_string(mib) + " MiB").c_str(),
                  row.label.c_str(), median, *std::min_element(row.mbps.begin(), row.mbps.end()),
                  *std::max_element(row.mbps.begin(), row.mbps.end()), ratio);
    };
    print(raw_row, nullptr);
    print(wire_row, &raw_row);
    if (curve) {
      print(raw_curve_row, nullptr);
      print(wire_curve_row, &raw_curve_row);
    }
  }
  std::printf("\nratio = tandem median / raw median on the same transport (target >= 0.80)\n");
  return 0;
}

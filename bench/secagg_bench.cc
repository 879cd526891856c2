// Secure aggregation cost (privacy/secagg.h): client masking time and coordinator unmasking
// (Finish) time against the cohort size n, the vector length m and the share of clients that drop
// after sharing keys, so their masked input never arrives and the coordinator must rebuild their
// pairwise masks from shares (the expensive case in Bonawitz et al. 2017). The complete graph for
// every n, and SecAgg+ (k = 2 * ceil(log2 n)) for n = 100 and 200. Each whole round runs
// in-process, every message through its wire format.
//
// The reference, measured in the same run, is the raw AES-256-CTR keystream (OpenSSL EVP, no
// additions) of one m-word stream, times the number of streams the step expands: a client masks
// with 1 + |its neighbours in U2| streams; Finish expands one stream per survivor plus one per
// (dropped, surviving neighbour) pair. The ratio says how close the step runs to that floor.
//
//   tandem_secagg_bench [--quick] [--n 10,50,100,200] [--m 100000,1000000] [--drop 0,10,30]
//
// Every client masks for real and the unmasked sum is checked against the plain sum ("exact").
// The full table takes about 3 CPU-minutes (5 wall-clock minutes on a busy 2-core machine);
// --quick runs the m = 10^5 column alone (about 20 s).
#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/logging.h"
#include "core/rng.h"
#include "privacy/secagg.h"

namespace {

using tandem::Rng;
using tandem::Status;
using namespace tandem::privacy;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "tandem_secagg_bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) Die(std::string(what) + ": " + s.ToString());
}

template <typename T>
T Take(tandem::StatusOr<T> v, const char* what) {
  Check(v.status(), what);
  return std::move(*v);
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

template <typename M>
M Wire(const M& m) {
  return Take(M::Parse(m.Serialize()), "parse");
}

// The reference: seconds for the raw AES-256-CTR keystream of `words` 64-bit words, streamed
// through a 64 KiB buffer (as AddMask does) with nothing added. Median of `reps`.
double RawKeystreamSeconds(size_t words, int reps) {
  const EVP_CIPHER* cipher = EVP_aes_256_ctr();
  std::vector<uint8_t> zeros(64 * 1024, 0), out(64 * 1024 + 16);
  uint8_t key[32] = {1, 2, 3}, iv[16] = {};
  std::vector<double> times;
  volatile uint8_t sink = 0;
  for (int r = 0; r < reps; ++r) {
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    auto t0 = Clock::now();
    if (EVP_EncryptInit_ex(ctx, cipher, nullptr, key, iv) != 1) Die("EVP_EncryptInit_ex");
    size_t left = words * 8;
    while (left > 0) {
      const int n = static_cast<int>(std::min(left, zeros.size()));
      int got = 0;
      if (EVP_EncryptUpdate(ctx, out.data(), &got, zeros.data(), n) != 1) Die("EVP_EncryptUpdate");
      sink = sink + out[0];
      left -= static_cast<size_t>(n);
    }
    times.push_back(Seconds(t0, Clock::now()));
    EVP_CIPHER_CTX_free(ctx);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

struct Cell {
  int n = 10;
  size_t m = 100000;
  int drop_percent = 0;
  int neighbours = 0;  // 0: complete graph
};

struct Result {
  int threshold = 0;
  int degree = 0;             // neighbours per client
  int masked_real = 0;        // clients that ran MaskInput
  double setup_s = 0;         // advertise + share keys, all clients and the server
  double mask_s = 0;          // mean MaskInput time per client
  double mask_streams = 0;    // mean streams per masking client
  double server_add_s = 0;    // mean OnMaskedInput time (check + fold into the sum)
  double finish_s = 0;
  size_t finish_streams = 0;
  const char* check = "-";
};

int CeilLog2(int n) {
  int k = 0;
  while ((1 << k) < n) ++k;
  return k;
}

Result RunCell(const Cell& cell, uint64_t seed) {
  SecAggParams params;
  params.run_id = 1;
  params.round = seed;
  params.modulus_bits = 64;
  params.length = cell.m;
  params.neighbours = cell.neighbours;
  params.graph_seed = seed;
  const int hood = cell.neighbours == 0 ? cell.n : cell.neighbours + 1;
  // Complete: a majority. SecAgg+: a third of the neighbourhood, so that 30 % random dropouts
  // leave every neighbourhood above it with high probability.
  params.threshold = cell.neighbours == 0 ? cell.n / 2 + 1 : std::max(2, (hood + 2) / 3);
  Check(ValidateSecAggParams(params, cell.n), "params");

  Result res;
  res.threshold = params.threshold;
  std::vector<std::string> ids;
  for (int i = 0; i < cell.n; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "client-%03d", i);
    ids.push_back(name);
  }
  // Which clients' masked inputs never arrive.
  std::vector<int> order(cell.n);
  for (int i = 0; i < cell.n; ++i) order[i] = i;
  Rng rng(seed * 7919 + 1);
  for (int i = cell.n - 1; i > 0; --i) std::swap(order[i], order[rng.Below(i + 1)]);
  const int drops = static_cast<int>(std::lround(cell.n * cell.drop_percent / 100.0));
  std::vector<bool> dropped(cell.n, false);
  for (int i = 0; i < drops; ++i) dropped[order[i]] = true;

  auto t0 = Clock::now();
  SecAggServer server = Take(SecAggServer::Create(params, ids), "server");
  std::vector<SecAggClient> clients;
  for (int i = 0; i < cell.n; ++i) {
    clients.push_back(Take(SecAggClient::Create(params, ids[i]), "client"));
    Check(server.OnAdvertise(ids[i], Wire(Take(clients[i].Advertise(), "advertise"))), "advertise");
  }
  Check(server.CloseAdvertise(), "close advertise");
  for (int i = 0; i < cell.n; ++i) {
    KeyList list = Wire(Take(server.KeyListFor(ids[i]), "key list"));
    res.degree = static_cast<int>(list.neighbours.size()) - 1;
    Check(server.OnShareKeys(ids[i], Wire(Take(clients[i].ShareKeys(list), "share keys"))),
          "share keys");
  }
  Check(server.CloseShareKeys(), "close share keys");
  res.setup_s = Seconds(t0, Clock::now());

  // Masked inputs: every client masks (its input is computed either way); the dropped ones'
  // never reach the server.
  std::vector<uint64_t> expected(cell.m, 0), x(cell.m);
  double mask_total = 0, add_total = 0, streams_total = 0;
  int adds = 0;
  for (int i = 0; i < cell.n; ++i) {
    Rng xr(seed * 1000003 + i);
    for (auto& v : x) v = xr.NextU64();
    if (!dropped[i]) {
      for (size_t j = 0; j < cell.m; ++j) expected[j] += x[j];
    }
    MaskedInputRequest request = Wire(Take(server.MaskedInputRequestFor(ids[i]), "request"));
    auto t1 = Clock::now();
    Check(clients[i].MaskInput(request, x), "mask");
    mask_total += Seconds(t1, Clock::now());
    streams_total += 1 + request.shares.size();
    ++res.masked_real;
    if (dropped[i]) continue;
    auto t2 = Clock::now();
    Check(server.OnMaskedInput(ids[i], x), "masked input");
    add_total += Seconds(t2, Clock::now());
    ++adds;
  }
  res.mask_s = mask_total / res.masked_real;
  res.mask_streams = streams_total / res.masked_real;
  res.server_add_s = add_total / std::max(adds, 1);
  Check(server.CloseMaskedInput(), "close masked input");

  for (const auto& id : server.survivors()) {
    const int i = static_cast<int>(std::find(ids.begin(), ids.end(), id) - ids.begin());
    UnmaskRequest request = Wire(Take(server.UnmaskRequestFor(id), "unmask request"));
    Check(server.OnUnmask(id, Wire(Take(clients[i].Unmask(request), "unmask"))), "unmask");
    res.finish_streams += 1 + request.dropped.size();  // its self mask, and one per dropped pair
  }
  auto t3 = Clock::now();
  std::vector<uint64_t> sum = Take(server.Finish(), "finish");
  res.finish_s = Seconds(t3, Clock::now());
  res.check = sum == expected ? "exact" : "WRONG";
  return res;
}

std::vector<long> ParseList(const char* s) {
  std::vector<long> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stol(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<long> ns = {10, 50, 100, 200}, ms = {100000, 1000000}, drops = {0, 10, 30};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      ms = {100000};
    } else if (a == "--n" && i + 1 < argc) {
      ns = ParseList(argv[++i]);
    } else if (a == "--m" && i + 1 < argc) {
      ms = ParseList(argv[++i]);
    } else if (a == "--drop" && i + 1 < argc) {
      drops = ParseList(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: tandem_secagg_bench [--quick] [--n 10,50,100,200] [--m 100000,1000000] "
                   "[--drop 0,10,30]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  Check(tandem::SetupLogging("warn"), "logging");

  std::vector<Cell> cells;
  for (long m : ms) {
    for (long n : ns) {
      std::vector<int> graphs;
      if (n <= 200) graphs.push_back(0);
      if (n >= 100) graphs.push_back(2 * CeilLog2(static_cast<int>(n)));
      for (int k : graphs) {
        for (long d : drops) {
          cells.push_back({static_cast<int>(n), static_cast<size_t>(m), static_cast<int>(d), k});
        }
      }
    }
  }

  std::printf("secure aggregation: client masking and coordinator Finish, modulus 2^64\n");
  std::printf("reference: raw AES-256-CTR keystream (OpenSSL EVP), per m-word stream\n");
  std::printf("drop%%: clients whose masked input never arrives (their pairwise masks are rebuilt)\n\n");
  std::printf("%-9s %4s %8s %5s %4s %3s | %9s %7s %6s | %9s %9s %6s %6s | %8s %8s %6s\n", "graph",
              "n", "m", "drop%", "deg", "t", "mask_ms", "streams", "x_ref", "add_ms", "finish_ms",
              "streams", "x_ref", "setup_s", "ref_ms", "sum");
  uint64_t seed = 1;
  size_t last_m = 0;
  double stream_s = 0;
  for (const Cell& c : cells) {
    if (c.m != last_m) {
      stream_s = RawKeystreamSeconds(c.m, 7);
      last_m = c.m;
    }
    Result r = RunCell(c, seed++);
    char graph[16];
    if (c.neighbours == 0) {
      std::snprintf(graph, sizeof(graph), "complete");
    } else {
      std::snprintf(graph, sizeof(graph), "k=%d", c.neighbours);
    }
    std::printf("%-9s %4d %8zu %5d %4d %3d | %9.1f %7.1f %6.2f | %9.2f %9.1f %6zu %6.2f | %8.2f %8.3f %6s\n",
                graph, c.n, c.m, c.drop_percent, r.degree, r.threshold, r.mask_s * 1e3,
                r.mask_streams, r.mask_s / (r.mask_streams * stream_s), r.server_add_s * 1e3,
                r.finish_s * 1e3, r.finish_streams,
                r.finish_s / (std::max<size_t>(r.finish_streams, 1) * stream_s), r.setup_s,
                stream_s * 1e3, r.check);
    std::fflush(stdout);
  }
  return 0;
}

// The cloud inference service (serve/) against the cloud model's own generation in this process,
// measured in the same run, over tcp://127.0.0.1 with CURVE and the allow-list:
//
// 1. Completions: queries per second and latency (mean, p50, p95) of the service, from one client
//    and from several at once (one worker, whose batch they share), against
//    the same completions generated locally (the ratio is the service's overhead: transport,
//    CURVE, encoding, queueing).
// 2. Concurrent clients (--concurrency 1,4,8): N clients each asking its next completion as soon
//    as the last is answered, against two services of the same run on their own endpoints: one
//    batching (serve.max_batch = --max-batch, default 8) and one with max_batch = 1 (requests one
//    after another). Queries/s, latency (mean, p50, p95), the ratio of queries/s, the service's
//    mean requests per pass, and whether both gave every request the same reply. The two take
//    turns (a third of the requests each, three times) so that a changing load weighs on both.
// 3. Speculative decoding over the service (RemoteVerifier): acceptance rate, tokens per cloud
//    round trip, bytes per token (frames both ways) and tokens/s, at γ ∈ {1, 2, 4, 8} and an
//    injected round-trip delay of 0, 5 and 50 ms (a sleep before each request), against two
//    references of the same run: the cloud decoding token by token with the delay paid per token
//    (a cloud that streams its tokens), and one completion request to the service for the whole
//    text (the delay paid once, the device waiting for all of it).
//
// Models: --cloud and --draft checkpoints, or a cloud (slm-small) and a device (slm-micro) trained
// here for --train-steps steps on arithmetic text (as bench/speculative_bench.cc).
//
// Prompts: arithmetic lines, or eight English openings with --english (for checkpoints trained on
// fortunes, such as the public ones).
//
//   tandem_serve_bench [--cloud CKPT --draft CKPT [--english]] [--save DIR] [--train-steps 60] [--requests 24]
//                      [--clients 3] [--tokens 32] [--prompts 4] [--temperature 1]
//                      [--concurrency 1,4,8] [--max-batch 8] [--concurrent-requests 32]
//                      [--delays 0,5,50] [--gammas 1,2,4,8] [--no-speculative]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/logging.h"
#include "bench/bench_models.h"
#include "core/threads.h"
#include "data/arithmetic.h"
#include "data/batcher.h"
#include "models/generate.h"
#include "models/gpt_workspace.h"
#include "models/gpt_checkpoint.h"
#include "models/tokenizer.h"
#include "route/handoff.h"
#include "route/speculative.h"
#include "serve/remote.h"
#include "serve/server.h"
#include "serve/service.h"
#include "train/local_trainer.h"
#include "wire/curve.h"
#include "wire/transport_server.h"

namespace tandem {
namespace {

using bench::Clock;
using bench::ParseList;
using bench::Seconds;

// What the service computes for a completion, in this process: the same kernels, sampler and
// stopping rule (end-of-text; the requests here set no stop token).
std::vector<int32_t> LocalComplete(std::shared_ptr<const GptWeights> weights,
                                   const serve::CompleteRequest& r) {
  const int V = weights->config().vocab;
  GptWorkspace ws(weights);
  Rng rng(r.seed);
  std::vector<float> probs(V);
  const float* logits = ws.Decode(r.prompt.data(), static_cast<int>(r.prompt.size()));
  logits += (r.prompt.size() - 1) * static_cast<size_t>(V);
  std::vector<int32_t> out;
  for (int i = 0; i < r.max_tokens; ++i) {
    SamplingProbs(logits, V, r.sampling, probs.data());
    const int32_t t = SampleFromProbs(probs, rng);
    out.push_back(t);
    if (t == ByteTokenizer::kEndOfText || i + 1 == r.max_tokens) break;
    logits = ws.Decode(&t, 1);
  }
  return out;
}

struct Latencies {
  std::vector<double> ms;
  double Mean() const {
    double s = 0;
    for (double v : ms) s += v;
    return ms.empty() ? 0 : s / ms.size();
  }
  double Quantile(double q) const {
    if (ms.empty()) return 0;
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
  }
};

int Main(int argc, char** argv) {
  std::string cloud_path, draft_path, save_dir;
  bool english = false;
  int train_steps = 60, requests = 24, clients = 3, tokens = 32, prompts = 4;
  float temperature = 1.0f;
  std::vector<int> delays = {0, 5, 50}, gammas = {1, 2, 4, 8}, concurrency = {1, 4, 8};
  int max_batch = 8, concurrent_requests = 32;
  bool speculative = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--cloud") cloud_path = next();
    else if (a == "--draft") draft_path = next();
    else if (a == "--save") save_dir = next();
    else if (a == "--english") english = true;
    else if (a == "--train-steps") train_steps = std::atoi(next().c_str());
    else if (a == "--requests") requests = std::atoi(next().c_str());
    else if (a == "--clients") clients = std::atoi(next().c_str());
    else if (a == "--tokens") tokens = std::atoi(next().c_str());
    else if (a == "--prompts") prompts = std::atoi(next().c_str());
    else if (a == "--temperature") temperature = std::strtof(next().c_str(), nullptr);
    else if (a == "--delays") delays = ParseList(next());
    else if (a == "--gammas") gammas = ParseList(next());
    else if (a == "--concurrency") concurrency = ParseList(next());
    else if (a == "--max-batch") max_batch = std::atoi(next().c_str());
    else if (a == "--concurrent-requests") concurrent_requests = std::atoi(next().c_str());
    else if (a == "--no-speculative") speculative = false;
    else {
      std::fprintf(stderr, "unknown flag %s (see the comment at the top of serve_bench.cc)\n",
                   a.c_str());
      return 2;
    }
  }
  (void)SetupLogging("warn");
  SetComputeThreads(ComputeThreads());
  std::unique_ptr<Gpt> cloud, device;
  if (!bench::LoadOrTrainPair(cloud_path, draft_path, train_steps, &cloud, &device)) return 1;
  if (!save_dir.empty()) {
    TANDEM_CHECK(SaveGpt(save_dir + "/cloud.safetensors", *cloud).ok());
    TANDEM_CHECK(SaveGpt(save_dir + "/device.safetensors", *device).ok());
  }
  // One sequence at a time: fastest on one thread at these sizes (see speculative_bench.cc).
  SetComputeThreads(1);

  // ---- The service on tcp loopback with CURVE and an allow-list of `clients` keys. ----
  wire::TransportOptions so;
  so.endpoint = "tcp://127.0.0.1:0";
  so.curve = true;
  so.own_keys = *wire::GenerateCurveKeyPair();
  so.run_id = 0x5e7e;
  so.heartbeat_interval_ms = 500;
  so.peer_timeout_ms = 10000;
  std::vector<wire::CurveKeyPair> client_keys;
  int most_clients = std::max(clients, 1);
  for (int n : concurrency) most_clients = std::max(most_clients, n);
  for (int k = 0; k < most_clients; ++k) {
    client_keys.push_back(*wire::GenerateCurveKeyPair());
    so.allow_list.name_by_key[client_keys.back().public_key] = "client-" + std::to_string(k);
  }
  auto server = wire::Server::Bind(so);
  TANDEM_CHECK(server.ok());
  wire::Server* raw = server->get();
  serve::ServiceOptions service_options;
  service_options.max_inflight_per_client = 4;
  auto service = serve::InferenceService::Create(
      cloud->shared_weights(), service_options,
      [raw](const std::string& peer, wire::Message m) { return raw->Send(peer, std::move(m)); });
  TANDEM_CHECK(service.ok());
  std::atomic<int> stop{0};
  std::thread loop([&] {
    TANDEM_CHECK(serve::ServeEvents(raw, service->get(), 500, 10000, &stop).ok());
  });
  auto remote_options = [&](int k, int delay_ms, const std::string& endpoint = "") {
    serve::RemoteOptions o;
    o.transport.endpoint = endpoint.empty() ? raw->endpoint() : endpoint;
    o.transport.curve = true;
    o.transport.own_keys = client_keys[k];
    o.transport.server_public_key = so.own_keys.public_key;
    o.transport.heartbeat_interval_ms = 500;
    o.transport.peer_timeout_ms = 10000;
    o.timeout = std::chrono::milliseconds(60000);
    o.injected_delay = std::chrono::milliseconds(delay_ms);
    return o;
  };

  // Prompts: arithmetic lines, or English openings (--english: for the public checkpoints,
  // trained on Debian's fortunes).
  std::vector<std::string> texts;
  if (!english) {
    auto examples = MakeArithmeticExamples(3, std::max(prompts, requests), 99);
    TANDEM_CHECK(examples.ok());
    for (const auto& e : *examples) texts.push_back(e.prompt + e.answer + "\n");
  } else {
    texts = {"The ", "You will ", "A man ", "It is ", "There is ", "When ", "Never ", "If you "};
  }
  std::vector<std::vector<int32_t>> prompt_tokens;
  for (const std::string& text : texts) {
    std::vector<int32_t> p = {ByteTokenizer::kEndOfText};
    ByteTokenizer::EncodeAppend(text, &p);
    prompt_tokens.push_back(p);
  }
  size_t longest = 0;
  for (const auto& p : prompt_tokens) longest = std::max(longest, p.size());
  prompts = std::min<int>(prompts, static_cast<int>(prompt_tokens.size()));
  const int context = std::min(cloud->config().context, device->config().context);
  const int max_new = std::min(tokens, context - static_cast<int>(longest) - 1);
  SamplingOptions sampling;
  sampling.temperature = temperature;

  // ---- 1. Completions: the service against local generation. ----
  auto request_for = [&](int i) {
    serve::CompleteRequest r;
    r.prompt = prompt_tokens[i % prompt_tokens.size()];
    r.max_tokens = max_new;
    r.sampling = sampling;
    r.seed = static_cast<uint64_t>(i);
    return r;
  };
  Latencies local_lat;
  auto t0 = Clock::now();
  for (int i = 0; i < requests; ++i) {
    const auto s = Clock::now();
    const serve::CompleteRequest r = request_for(i);
    (void)LocalComplete(cloud->shared_weights(), r);
    local_lat.ms.push_back(1000 * Seconds(s, Clock::now()));
  }
  const double local_qps = requests / Seconds(t0, Clock::now());
  std::printf("\ncompletions: %d requests of up to %d tokens, temperature %.2f\n", requests,
              max_new, temperature);
  std::printf("%-26s %10s %10s %10s %10s %10s %12s\n", "", "queries/s", "mean ms", "p50 ms",
              "p95 ms", "ratio", "queue ms");
  std::printf("%-26s %10.1f %10.2f %10.2f %10.2f %10s %12s\n", "local generation", local_qps,
              local_lat.Mean(), local_lat.Quantile(0.5), local_lat.Quantile(0.95), "1.00", "-");
  for (int n : {1, clients}) {
    if (n < 1) continue;
    std::vector<Latencies> lat(n);
    std::vector<std::unique_ptr<serve::RemoteCloud>> remotes;
    for (int k = 0; k < n; ++k) {
      auto r = serve::RemoteCloud::Connect(remote_options(k, 0));
      TANDEM_CHECK(r.ok());
      remotes.push_back(std::move(*r));
    }
    const serve::ServiceStats before = (*service)->stats();
    t0 = Clock::now();
    std::vector<std::thread> threads;
    for (int k = 0; k < n; ++k) {
      threads.emplace_back([&, k] {
        for (int i = k; i < requests; i += n) {
          const auto s = Clock::now();
          auto reply = remotes[k]->Complete(request_for(i));
          TANDEM_CHECK(reply.ok());
          lat[k].ms.push_back(1000 * Seconds(s, Clock::now()));
        }
      });
    }
    for (auto& t : threads) t.join();
    const double qps = requests / Seconds(t0, Clock::now());
    const serve::ServiceStats after = (*service)->stats();
    Latencies all;
    for (const auto& l : lat) all.ms.insert(all.ms.end(), l.ms.begin(), l.ms.end());
    const double queue_ms =
        1000 * (after.queue_seconds - before.queue_seconds) / (after.served - before.served);
    char label[64];
    std::snprintf(label, sizeof label, "service, %d client%s", n, n == 1 ? "" : "s at once");
    std::printf("%-26s %10.1f %10.2f %10.2f %10.2f %10.2f %12.2f\n", label, qps, all.Mean(),
                all.Quantile(0.5), all.Quantile(0.95), qps / local_qps, queue_ms);
    std::fflush(stdout);
  }

  // ---- 2. Concurrent clients: a batching service against one with max_batch = 1. ----
  // Both on endpoints of their own in this process, with the same keys; the two are measured
  // beside each other for every client count, so a changing load moves both sides of a ratio.
  struct Endpoint {
    std::unique_ptr<wire::Server> server;
    std::unique_ptr<serve::InferenceService> service;
    std::atomic<int> stop{0};
    std::thread loop;
  };
  auto start_endpoint = [&](int batch) {
    auto e = std::make_unique<Endpoint>();
    auto bound = wire::Server::Bind(so);
    TANDEM_CHECK(bound.ok());
    e->server = std::move(*bound);
    wire::Server* sv = e->server.get();
    serve::ServiceOptions o = service_options;
    o.max_batch = batch;
    auto created = serve::InferenceService::Create(
        cloud->shared_weights(), o,
        [sv](const std::string& peer, wire::Message m) { return sv->Send(peer, std::move(m)); });
    TANDEM_CHECK(created.ok());
    e->service = std::move(*created);
    Endpoint* raw_e = e.get();
    e->loop = std::thread([raw_e] {
      TANDEM_CHECK(
          serve::ServeEvents(raw_e->server.get(), raw_e->service.get(), 500, 10000, &raw_e->stop)
              .ok());
    });
    return e;
  };
  struct Run {
    double seconds = 0, qps = 0;
    Latencies lat;
    uint64_t passes = 0, pass_requests = 0;
    double per_pass = 0;  // the service's mean requests per pass
    std::vector<std::vector<int32_t>> replies;  // by request
  };
  // n clients, each asking its next completion as soon as the last is answered: requests
  // [first, first + count).
  auto run_clients = [&](Endpoint& e, int n, int count, int first = 0) {
    std::vector<std::unique_ptr<serve::RemoteCloud>> remotes;
    for (int k = 0; k < n; ++k) {
      auto r = serve::RemoteCloud::Connect(remote_options(k, 0, e.server->endpoint()));
      TANDEM_CHECK(r.ok());
      remotes.push_back(std::move(*r));
    }
    Run run;
    run.replies.resize(count);
    std::vector<Latencies> lat(n);
    const serve::ServiceStats before = e.service->stats();
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int k = 0; k < n; ++k) {
      threads.emplace_back([&, k] {
        for (int i = k; i < count; i += n) {
          const auto s = Clock::now();
          auto reply = remotes[k]->Complete(request_for(first + i));
          TANDEM_CHECK(reply.ok());
          lat[k].ms.push_back(1000 * Seconds(s, Clock::now()));
          run.replies[i] = reply->tokens;
        }
      });
    }
    for (auto& t : threads) t.join();
    run.seconds = Seconds(start, Clock::now());
    for (const auto& l : lat) run.lat.ms.insert(run.lat.ms.end(), l.ms.begin(), l.ms.end());
    const serve::ServiceStats after = e.service->stats();
    run.pass_requests = after.pass_requests - before.pass_requests;
    run.passes = after.passes - before.passes;
    return run;
  };
  // The requests in thirds, the two services taking turns (and the first place), so that a load
  // that changes during the row weighs on both alike.
  auto run_turns = [&](Endpoint& serial_e, Endpoint& batched_e, int n, Run* one, Run* many) {
    const int turns = 3;
    for (int t = 0; t < turns; ++t) {
      const int first = t * concurrent_requests / turns;
      const int count = (t + 1) * concurrent_requests / turns - first;
      // Which goes first alternates too.
      std::pair<Endpoint*, Run*> order[] = {{&serial_e, one}, {&batched_e, many}};
      if (t % 2 == 1) std::swap(order[0], order[1]);
      for (auto [e, total] : order) {
        Run part = run_clients(*e, n, count, first);
        total->seconds += part.seconds;
        total->lat.ms.insert(total->lat.ms.end(), part.lat.ms.begin(), part.lat.ms.end());
        total->replies.insert(total->replies.end(), part.replies.begin(), part.replies.end());
        total->passes += part.passes;
        total->pass_requests += part.pass_requests;
      }
    }
    for (Run* r : {one, many}) {
      r->qps = r->replies.size() / r->seconds;
      r->per_pass = static_cast<double>(r->pass_requests) / std::max<uint64_t>(1, r->passes);
    }
  };
  if (!concurrency.empty()) {
    std::unique_ptr<Endpoint> serial = start_endpoint(1), batched = start_endpoint(max_batch);
    (void)run_clients(*serial, 1, 1);  // warm: connections, caches, buffers
    (void)run_clients(*batched, 1, 1);
    std::printf("\nconcurrent clients: %d completions of up to %d tokens per row, each client "
                "asking again when answered; max_batch 1 against %d\n",
                concurrent_requests, max_new, max_batch);
    std::printf("%-8s %10s %9s %9s %9s | %10s %9s %9s %9s | %7s %9s %9s\n", "clients",
                "1: q/s", "mean ms", "p50 ms", "p95 ms", "batch q/s", "mean ms", "p50 ms",
                "p95 ms", "ratio", "req/pass", "same");
    for (int n : concurrency) {
      if (n < 1) continue;
      Run one, many;
      run_turns(*serial, *batched, n, &one, &many);
      std::printf("%-8d %10.2f %9.1f %9.1f %9.1f | %10.2f %9.1f %9.1f %9.1f | %7.2f %9.2f %9s\n",
                  n, one.qps, one.lat.Mean(), one.lat.Quantile(0.5), one.lat.Quantile(0.95),
                  many.qps, many.lat.Mean(), many.lat.Quantile(0.5), many.lat.Quantile(0.95),
                  many.qps / one.qps, many.per_pass, one.replies == many.replies ? "yes" : "NO");
      std::fflush(stdout);
    }
    for (Endpoint* e : {serial.get(), batched.get()}) {
      e->stop = 1;
      e->loop.join();
      e->service.reset();
    }
  }

  // ---- 3. Speculative decoding over the service. ----
  if (!speculative) delays.clear();
  if (!delays.empty()) {
    std::printf("\nspeculative decoding over the service: %d prompts x up to %d tokens, "
                "temperature %.2f\n", prompts, max_new, temperature);
    std::printf("%-6s %-6s %10s %11s %11s %11s %8s %8s %11s %11s %11s\n", "rtt_ms", "gamma",
                "tok/s", "streamed", "one req", "ratio", "vs one", "accept", "tok/trip",
                "bytes/tok", "trips");
  }
  for (int delay : delays) {
    for (int gamma : gammas) {
      // The references are measured beside each row, so a changing load on a shared host
      // moves both sides of a ratio together.
      // Reference A: the cloud token by token, the delay paid per token.
      Generator reference(*cloud);
      Rng rng(5);
      SamplingConfig plain{temperature, 0};
      int64_t ref_tokens = 0;
      t0 = Clock::now();
      for (int p = 0; p < prompts; ++p) {
        reference.Reset();
        const float* logits = nullptr;
        for (int32_t t : prompt_tokens[p]) logits = reference.Feed(t);
        for (int i = 0; i < max_new; ++i) {
          if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
          const int32_t next = SampleToken(logits, cloud->config().vocab, plain, rng);
          ++ref_tokens;
          if (next == ByteTokenizer::kEndOfText) break;
          logits = reference.Feed(next);
        }
      }
      const double streamed_tps = ref_tokens / Seconds(t0, Clock::now());
      // Reference B: one completion request per prompt, the delay paid once.
      auto one = serve::RemoteCloud::Connect(remote_options(0, delay));
      TANDEM_CHECK(one.ok());
      int64_t one_tokens = 0;
      t0 = Clock::now();
      for (int p = 0; p < prompts; ++p) {
        auto reply = (*one)->Complete(request_for(p));
        TANDEM_CHECK(reply.ok());
        one_tokens += static_cast<int64_t>(reply->tokens.size());
      }
      const double one_tps = one_tokens / Seconds(t0, Clock::now());
      one->reset();
      auto remote = serve::RemoteCloud::Connect(remote_options(0, delay));
      TANDEM_CHECK(remote.ok());
      serve::RemoteVerifier verifier(remote->get(), sampling, 7);
      SpeculativeDecoder decoder(device->shared_weights(), &verifier, {gamma, sampling});
      Rng drng(6);
      const wire::TransportStats b = (*remote)->transport_stats();
      int64_t n = 0;
      t0 = Clock::now();
      for (int p = 0; p < prompts; ++p) {
        auto out = decoder.Generate(prompt_tokens[p], max_new, drng);
        TANDEM_CHECK(out.ok());
        n += static_cast<int64_t>(out->size());
      }
      const double tps = n / Seconds(t0, Clock::now());
      const wire::TransportStats e = (*remote)->transport_stats();
      const double bytes =
          static_cast<double>(e.bytes_sent - b.bytes_sent + e.bytes_received - b.bytes_received);
      const SpeculativeStats& s = decoder.stats();
      std::printf("%-6d %-6d %10.1f %11.1f %11.1f %11.2f %8.2f %8.3f %11.2f %11.0f %11lld\n",
                  delay, gamma, tps, streamed_tps, one_tps, tps / streamed_tps, tps / one_tps,
                  s.acceptance_rate(), s.tokens_per_call(), bytes / n,
                  static_cast<long long>(s.verifier_calls));
      std::fflush(stdout);
    }
  }
  stop = 1;
  loop.join();
  service->reset();
  return 0;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) { return tandem::Main(argc, argv); }

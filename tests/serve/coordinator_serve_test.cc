// The inference service inside the coordinator (serve.enabled): a device asks for a completion
// while a federated run is going on, the service's worker is held inside the request until a
// round has completed, and the reply still comes — the round loop did not wait for the request,
// and the request did not wait for the round. Clients that only ask are not members of a cohort.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "algorithms/registry.h"
#include "client/client.h"
#include "coordinator/coordinator.h"
#include "core/config.h"
#include "models/tokenizer.h"
#include "serve/remote.h"
#include "tests/temp_dir.h"

namespace tandem {
namespace {

using std::chrono::milliseconds;

constexpr int kClients = 2;
constexpr int kRounds = 2;

std::string ConfigText(const std::string& out_dir, bool serve) {
  return "name = \"serve-rounds\"\nseed = 3\nout_dir = \"" + out_dir + "\"\n"
         "[model]\npreset = \"slm-micro\"\n"
         "[data]\nsource = \"fortunes\"\nvalidation_fraction = 0.05\ntest_fraction = 0.05\n"
         "[federation]\nclients = 2\ntransport = \"ipc\"\nrounds = 2\nround_deadline_s = 120\n"
         "heartbeat_ms = 200\npeer_timeout_ms = 5000\nwait_for_clients_s = 60\n"
         "[algorithm]\nname = \"fedavg\"\n"
         "[client]\nlocal_steps = 3\nbatch = 4\n"
         "[eval]\ntokens = 2048\n"
         "[serve]\nenabled = " + std::string(serve ? "true" : "false") + "\n";
}

class CoordinatorServeTest : public testing::TempDirTest {
 protected:
  // Runs the config with kClients in-process clients and one device that asks for a completion
  // as soon as the coordinator is bound. Returns the run's result.
  StatusOr<CoordinatorResult> Run(bool serve, CoordinatorOptions options,
                                  StatusOr<serve::CompleteReply>* reply,
                                  std::atomic<int>* rounds_at_reply) {
    auto parsed = Config::Parse(ConfigText(Path("runs"), serve));
    EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
    const Config config = *parsed;
    auto algorithm = AlgorithmOf(config);
    EXPECT_TRUE(algorithm.ok());
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    options.progress = [&](const std::string& line) {
      if (line.rfind("round 0", 0) != 0) ++rounds_done_;
    };
    options.on_bound = [&](const std::string& endpoint) {
      for (int k = 0; k < kClients; ++k) {
        threads.emplace_back([&, k, endpoint] {
          ClientOptions o;
          o.index = k;
          o.connect = endpoint;
          o.threads = 1;
          o.use_compute_slots = false;
          o.stop = &stop;
          EXPECT_TRUE(RunClient(config, (*algorithm)->client, o).ok());
        });
      }
      threads.emplace_back([&, endpoint] {
        serve::RemoteOptions remote;
        remote.transport.endpoint = endpoint;
        remote.transport.identity = "device-0";
        remote.transport.heartbeat_interval_ms = 200;
        remote.transport.peer_timeout_ms = 5000;
        remote.timeout = milliseconds(60000);
        auto cloud = serve::RemoteCloud::Connect(remote);
        if (!cloud.ok()) {
          *reply = cloud.status();
          return;
        }
        serve::CompleteRequest request;
        request.prompt = {ByteTokenizer::kEndOfText, 't', 'h', 'e', ' '};
        request.max_tokens = 8;
        request.sampling.temperature = 0.0f;
        *reply = (*cloud)->Complete(request);
        *rounds_at_reply = rounds_done_.load();
      });
      return Status::Ok();
    };
    StatusOr<CoordinatorResult> result = RunCoordinator(config, (*algorithm)->server, options);
    stop = true;
    for (auto& t : threads) t.join();
    return result;
  }
  std::atomic<int> rounds_done_{0};
};

TEST_F(CoordinatorServeTest, TheServiceAnswersWhileRoundsGoOn) {
  std::atomic<int> rounds_when_computing{-1};
  CoordinatorOptions options;
  // Hold the worker inside the request until a round completes (at most 60 s).
  options.serve_before_compute = [&] {
    const int at = rounds_done_.load();
    rounds_when_computing = at;
    const auto until = std::chrono::steady_clock::now() + milliseconds(60000);
    while (rounds_done_.load() == at && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(milliseconds(10));
    }
  };
  StatusOr<serve::CompleteReply> reply = Status::Internal("no reply");
  std::atomic<int> rounds_at_reply{-1};
  StatusOr<CoordinatorResult> result = Run(true, options, &reply, &rounds_at_reply);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->rounds, static_cast<uint64_t>(kRounds));
  EXPECT_EQ(result->aborted_rounds, 0u) << "the asking device is no member of a cohort";
  ASSERT_TRUE(reply.ok()) << reply.status().ToString();
  EXPECT_FALSE(reply->tokens.empty());
  ASSERT_GE(rounds_when_computing.load(), 0) << "the request reached the worker";
  EXPECT_GT(rounds_at_reply.load(), rounds_when_computing.load())
      << "a round completed while the request was being served";
  // The service's counts are in the metrics.
  std::ifstream metrics(result->run_dir + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  auto j = nlohmann::json::parse(last);
  EXPECT_TRUE(j.contains("serve.served"));
  EXPECT_EQ(j["serve.refused"].get<double>(), 0.0);
}

TEST_F(CoordinatorServeTest, WithoutTheServiceRequestsAreRefused) {
  StatusOr<serve::CompleteReply> reply = Status::Internal("no reply");
  std::atomic<int> rounds_at_reply{-1};
  StatusOr<CoordinatorResult> result = Run(false, CoordinatorOptions{}, &reply, &rounds_at_reply);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->rounds, static_cast<uint64_t>(kRounds));
  EXPECT_FALSE(reply.ok());
  EXPECT_NE(reply.status().message().find("serve.enabled"), std::string::npos)
      << reply.status().ToString();
}

}  // namespace
}  // namespace tandem

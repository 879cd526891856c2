// The privacy pipeline end to end in one process: the round engine with a PrivateServer around a
// mean-taking algorithm, and clients that are PrivateTaskHandlers around a handler that returns a
// known vector. Messages go through a queue, so clients can drop at any step. Covers: secure
// aggregation gives the same aggregate as the clear sum (bit for bit in a 2^64 ring at 2^-32, the
// RunningSum's own format); dropouts after masking are recovered and too few survivors abort with
// nothing delivered; DP noise has the stated variance (central, and distributed over secure
// aggregation); ε in the metrics is the accountant's; the budget stops a run; adaptive clipping
// moves the clip norm the way Andrew et al. say; a run resumed from a checkpoint adds the noise the
// uninterrupted run adds, central or distributed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "client/private_handler.h"
#include "coordinator/aggregator.h"
#include "coordinator/engine.h"
#include "coordinator/private_server.h"
#include "core/rng.h"
#include "distill/confidence.h"
#include "distill/votes.h"
#include "privacy/accountant.h"

namespace tandem {
namespace {

constexpr const char* kKind = "vec.train";

// A contribution of `length` values: client i sends values[i] with weight weights[i].
struct Scenario {
  size_t length = 64;
  std::vector<std::vector<float>> values;
  std::vector<double> weights;
};

Scenario MakeScenario(int clients, size_t length, double scale = 0.01) {
  Scenario s;
  s.length = length;
  for (int i = 0; i < clients; ++i) {
    std::vector<float> v(length);
    for (size_t j = 0; j < length; ++j) {
      v[j] = static_cast<float>(scale * std::sin(0.37 * (i + 1) * (j + 1) + 0.1 * i));
    }
    s.values.push_back(std::move(v));
    s.weights.push_back(10.0 + 7.0 * i);
  }
  return s;
}

// The inner server algorithm: one contribution task per round; keeps the mean it was given (or
// computes it itself when no pipeline is in between).
class MeanAlgorithm : public ServerAlgorithm {
 public:
  explicit MeanAlgorithm(size_t length) : length_(length) {}
  std::string name() const override { return "mean"; }
  std::vector<std::string> RequiredCapabilities() const override { return {kKind}; }
  StatusOr<TaskSpec> BeginRound(uint64_t, const std::vector<ClientInfo>&) override {
    sum_.emplace(length_);
    aggregated_ = false;
    TaskSpec spec;
    spec.kind = kKind;
    spec.contribution = ContributionSpec{"delta", length_};
    return spec;
  }
  Status OnResult(const ClientInfo&, const wire::TaskResult& result) override {
    return sum_->Add(result.tensors.at(0).ToFloat32(), result.weight);
  }
  Status OnAggregate(const Aggregate& aggregate) override {
    means.push_back(aggregate.mean);
    counts.push_back(aggregate.count);
    aggregated_ = true;
    return Status::Ok();
  }
  StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) override {
    if (!aggregated_) {
      std::vector<float> mean(length_);
      TANDEM_RETURN_IF_ERROR(sum_->Mean(mean));
      means.push_back(mean);
      counts.push_back(sum_->count());
    }
    contributors.push_back(report.responded);
    return std::optional<TaskSpec>();
  }
  void AbortRound() override { ++aborted; }
  Status EndRound(uint64_t, std::map<std::string, double>*) override { return Status::Ok(); }
  void SaveState(std::map<std::string, std::vector<float>>*,
                 std::map<std::string, std::string>*) const override {}
  Status LoadState(const std::map<std::string, std::vector<float>>&,
                   const std::map<std::string, std::string>&) override {
    return Status::Ok();
  }

  std::vector<std::vector<float>> means;
  std::vector<size_t> counts;
  std::vector<std::vector<std::string>> contributors;
  int aborted = 0;

 private:
  size_t length_;
  std::optional<RunningSum> sum_;
  bool aggregated_ = false;
};

// The inner client handler: returns its scenario vector.
class VectorClient : public TaskHandler {
 public:
  VectorClient(const Scenario* s, int index) : s_(s), index_(index) {}
  std::vector<std::string> Capabilities() const override { return {kKind}; }
  Status Run(uint64_t, const wire::TaskAssign&, wire::TaskResult* result) override {
    const auto& v = s_->values[index_];
    result->tensors = {wire::Tensor::Float32("delta", {v.size()}, v)};
    result->weight = s_->weights[index_];
    result->metrics = {{"train_loss", 1.0}, {"compute_s", 0.5}};
    return Status::Ok();
  }

 private:
  const Scenario* s_;
  int index_;
};

class QueueOutbox : public Outbox {
 public:
  Status Send(const std::string& peer, wire::Message message) override {
    queue.push_back({peer, std::move(message)});
    return Status::Ok();
  }
  std::deque<std::pair<std::string, wire::Message>> queue;
};

// A federation of `clients` in-process clients. `drop_at[kind]` names clients that vanish when
// they receive a task of that kind.
class Federation {
 public:
  Federation(const Scenario& scenario, privacy::PrivacyConfig privacy, EngineConfig engine_config,
             bool with_pipeline = true,
             privacy::SecureRng::Key server_key = privacy::SecureRng::Key{1, 2, 3})
      : scenario_(scenario) {
    auto inner = std::make_unique<MeanAlgorithm>(scenario.length);
    algorithm = inner.get();
    const int n = static_cast<int>(scenario.values.size());
    engine_config.expected_clients = n;
    privacy::FederationShape shape{n, CohortSize(engine_config), MinResults(engine_config),
                                   engine_config.rounds};
    if (with_pipeline) {
      PrivateServerOptions options{privacy, shape, 42, 7, server_key};
      auto server = PrivateServer::Create(std::move(inner), options);
      EXPECT_TRUE(server.ok()) << server.status().ToString();
      private_server = server->get();
      server_ = std::move(*server);
    } else {
      server_ = std::move(inner);
    }
    engine = std::make_unique<RoundEngine>(engine_config, server_.get(), &outbox_,
                                           [this] { return now_; }, 3);
    engine->SetRoundEndCallback([this](uint64_t, const std::map<std::string, double>& m) {
      lines.push_back(m);
      return Status::Ok();
    });
    for (int i = 0; i < n; ++i) {
      inner_clients_.push_back(std::make_unique<VectorClient>(&scenario_, i));
    }
    for (int i = 0; i < n; ++i) {
      privacy::SecureRng::Key key{};
      key[0] = static_cast<uint8_t>(i + 10);
      clients_.push_back(std::make_unique<PrivateTaskHandler>(inner_clients_[i].get(), key));
    }
    for (int i = 0; i < n; ++i) {
      auto* handler = with_pipeline ? static_cast<TaskHandler*>(clients_[i].get())
                                    : static_cast<TaskHandler*>(inner_clients_[i].get());
      engine->OnJoined(Name(i), handler->Capabilities());
    }
  }

  static std::string Name(int i) { return "client-" + std::to_string(i); }

  // Runs until the engine is done (or nothing moves); true when done.
  bool Run(int max_steps = 100000) {
    engine->Tick();
    for (int step = 0; step < max_steps && !engine->done(); ++step) {
      if (outbox_.queue.empty()) {
        now_ += 1000.0;  // past any deadline
        engine->Tick();
        if (outbox_.queue.empty() && !engine->done()) return false;
        continue;
      }
      auto [peer, message] = std::move(outbox_.queue.front());
      outbox_.queue.pop_front();
      const auto* assign = std::get_if<wire::TaskAssign>(&message.body);
      if (assign == nullptr) continue;
      if (drop_at.count(assign->kind) && drop_at[assign->kind].count(peer)) {
        gone.insert(peer);
        engine->OnLost(peer);
        engine->Tick();
        continue;
      }
      if (gone.count(peer)) continue;
      const int index = ClientIndexFromName(peer);
      wire::TaskResult result;
      TaskHandler* handler = private_server != nullptr
                                 ? static_cast<TaskHandler*>(clients_[index].get())
                                 : static_cast<TaskHandler*>(inner_clients_[index].get());
      wire::Message reply;
      reply.envelope = message.envelope;
      if (Status s = handler->Run(message.envelope.round, *assign, &result); s.ok()) {
        if (tamper && assign->kind == tamper_kind && peer == tamper_peer) tamper(&result);
        reply.body = std::move(result);
      } else {
        client_errors.push_back(peer + ": " + s.ToString());
        reply.body = wire::Error{wire::ErrorCode::kTaskFailed, s.message()};
      }
      engine->OnMessage(peer, reply);
      engine->Tick();
    }
    return engine->done();
  }

  MeanAlgorithm* algorithm = nullptr;
  PrivateServer* private_server = nullptr;
  std::unique_ptr<RoundEngine> engine;
  std::vector<std::map<std::string, double>> lines;
  std::map<std::string, std::set<std::string>> drop_at;
  std::set<std::string> gone;
  std::vector<std::string> client_errors;
  std::function<void(wire::TaskResult*)> tamper;
  std::string tamper_kind, tamper_peer;

 private:
  Scenario scenario_;
  std::unique_ptr<ServerAlgorithm> server_;
  QueueOutbox outbox_;
  double now_ = 0.0;
  std::vector<std::unique_ptr<VectorClient>> inner_clients_;
  std::vector<std::unique_ptr<PrivateTaskHandler>> clients_;
};

EngineConfig Engine(int64_t rounds, int min_results = 0) {
  EngineConfig c;
  c.rounds = rounds;
  c.min_results = min_results;
  c.round_deadline_s = 10;
  c.wait_for_clients_s = 10;
  return c;
}

privacy::PrivacyConfig SecAgg(int threshold, int modulus_bits = 64, int fraction_bits = 32,
                              double clip_range = 1024.0, int neighbours = 0) {
  privacy::PrivacyConfig p;
  p.secagg.enabled = true;
  p.secagg.threshold = threshold;
  p.secagg.dropout_rate = 0.0;
  p.secagg.modulus_bits = modulus_bits;
  p.secagg.fraction_bits = fraction_bits;
  p.secagg.clip_range = clip_range;
  p.secagg.neighbours = neighbours;
  return p;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(PrivatePipelineTest, SecureAggregationGivesTheClearAggregateBitForBit) {
  const Scenario s = MakeScenario(5, 300);
  Federation clear(s, {}, Engine(2), /*with_pipeline=*/false);
  ASSERT_TRUE(clear.Run());
  Federation masked(s, SecAgg(3), Engine(2));
  ASSERT_TRUE(masked.Run()) << (masked.client_errors.empty() ? "" : masked.client_errors[0]);
  ASSERT_EQ(clear.algorithm->means.size(), 2u);
  ASSERT_EQ(masked.algorithm->means.size(), 2u);
  EXPECT_EQ(masked.algorithm->counts[0], 5u);
  // A 2^64 ring at 2^-32 is RunningSum's own fixed point: the masked sum is the clear sum.
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(SameBits(clear.algorithm->means[r], masked.algorithm->means[r])) << "round " << r;
  }
  EXPECT_EQ(masked.lines.at(0).at("secagg_survivors"), 5.0);
  EXPECT_TRUE(masked.client_errors.empty());
}

TEST(PrivatePipelineTest, ASmallRingAgreesWithinItsResolution) {
  const Scenario s = MakeScenario(4, 200);
  Federation clear(s, {}, Engine(1), false);
  ASSERT_TRUE(clear.Run());
  // 32-bit ring at 2^-16 with weighted values up to ±64: 4 · 64 · 2^16 = 2^24 < 2^31.
  Federation masked(s, SecAgg(3, 32, 16, 64.0), Engine(1));
  ASSERT_TRUE(masked.Run());
  const auto& a = clear.algorithm->means.at(0);
  const auto& b = masked.algorithm->means.at(0);
  double total_weight = 0;
  for (double w : s.weights) total_weight += w;
  // Each of 4 weighted terms and the weight sum is rounded to 2^-17 at most.
  const double tolerance = (4 + 1) * std::ldexp(1.0, -17) / total_weight * 2 + 1e-7;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - double(b[i])));
  EXPECT_LE(worst, tolerance);
  EXPECT_GT(worst, 0.0) << "a 2^-16 ring should not be exact";
}

// Without DP nothing bounds a weighted value but clip_range: a client whose weight or w·x would
// be clamped fails its task with a clear error instead of skewing the mean silently.
TEST(PrivatePipelineTest, AWeightBeyondTheClipRangeIsAnErrorNotASilentClamp) {
  const Scenario s = MakeScenario(4, 20);  // weights 10, 17, 24, 31
  Federation f(s, SecAgg(3, 64, 32, 20.0), Engine(1, 3));
  ASSERT_TRUE(f.Run());
  EXPECT_TRUE(f.algorithm->means.empty());
  ASSERT_EQ(f.client_errors.size(), 2u);
  EXPECT_NE(f.client_errors[0].find("clip_range"), std::string::npos) << f.client_errors[0];
}

TEST(PrivatePipelineTest, DropoutsAfterMaskingAreRecoveredFromShares) {
  const Scenario s = MakeScenario(6, 100);
  Federation f(s, SecAgg(4), Engine(1, 4));
  // client-2 vanishes when asked to unmask: its masked input is in the sum, so it is a survivor
  // whose self mask the others reveal; client-5 vanishes when asked to mask: it shared keys, so
  // its pairwise masks are removed from the others' inputs with its reconstructed key.
  f.drop_at["secagg.mask"] = {"client-5"};
  f.drop_at["secagg.unmask"] = {"client-2"};
  ASSERT_TRUE(f.Run()) << (f.client_errors.empty() ? "" : f.client_errors[0]);
  ASSERT_EQ(f.algorithm->means.size(), 1u);
  EXPECT_EQ(f.algorithm->counts[0], 5u);
  // The aggregate is the weighted mean of the five whose masked inputs arrived.
  RunningSum expected(s.length);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(expected.Add(s.values[i], s.weights[i]).ok());
  std::vector<float> mean(s.length);
  ASSERT_TRUE(expected.Mean(mean).ok());
  EXPECT_TRUE(SameBits(mean, f.algorithm->means[0]));
  const std::set<std::string> who(f.algorithm->contributors[0].begin(),
                                  f.algorithm->contributors[0].end());
  EXPECT_EQ(who.count("client-5"), 0u);
  EXPECT_EQ(who.count("client-2"), 1u);
}

TEST(PrivatePipelineTest, TooFewSurvivorsAbortAndDeliverNothing) {
  const Scenario s = MakeScenario(5, 50);
  // Threshold 3 and min_results 3: three clients vanish when asked to unmask, two answer. The
  // round aborts; no aggregate reaches the algorithm.
  privacy::PrivacyConfig p = SecAgg(3);
  Federation f(s, p, Engine(1, 3));
  f.drop_at["secagg.unmask"] = {"client-0", "client-1", "client-3"};
  ASSERT_TRUE(f.Run());
  EXPECT_TRUE(f.algorithm->means.empty()) << "an aggregate was delivered from too few shares";
  EXPECT_EQ(f.algorithm->aborted, 1);
  EXPECT_EQ(f.lines.at(0).count("aborted"), 1u);
}

TEST(PrivatePipelineTest, ATamperedSecAggMessageIsRejectedAndTheRoundCompletes) {
  const Scenario s = MakeScenario(5, 40);
  Federation f(s, SecAgg(3), Engine(1, 3));
  f.tamper_kind = "secagg.share";
  f.tamper_peer = "client-1";
  f.tamper = [](wire::TaskResult* r) {
    std::string& bytes = r->tensors.at(0).data;  // a truncated message: refused on parsing
    bytes.pop_back();
    r->tensors.at(0).shape = {bytes.size()};
  };
  ASSERT_TRUE(f.Run());
  ASSERT_EQ(f.algorithm->means.size(), 1u);
  EXPECT_EQ(f.lines.at(0).at("rejected"), 1.0);
  // client-1's shares were refused, so it is not in U2 and its input is not in the sum.
  EXPECT_EQ(f.algorithm->counts[0], 4u);
  RunningSum expected(s.length);
  for (int i : {0, 2, 3, 4}) ASSERT_TRUE(expected.Add(s.values[i], s.weights[i]).ok());
  std::vector<float> mean(s.length);
  ASSERT_TRUE(expected.Mean(mean).ok());
  EXPECT_TRUE(SameBits(mean, f.algorithm->means[0]));
}

TEST(PrivatePipelineTest, SecAggPlusWithDropouts) {
  const Scenario s = MakeScenario(12, 30);
  Federation f(s, SecAgg(3, 64, 32, 1024.0, 4), Engine(1, 8));
  f.drop_at["secagg.mask"] = {"client-7"};
  ASSERT_TRUE(f.Run()) << (f.client_errors.empty() ? "" : f.client_errors[0]);
  ASSERT_EQ(f.algorithm->means.size(), 1u);
  RunningSum expected(s.length);
  for (int i = 0; i < 12; ++i) {
    if (i == 7) continue;
    ASSERT_TRUE(expected.Add(s.values[i], s.weights[i]).ok());
  }
  std::vector<float> mean(s.length);
  ASSERT_TRUE(expected.Mean(mean).ok());
  EXPECT_TRUE(SameBits(mean, f.algorithm->means[0]));
}

privacy::PrivacyConfig Dp(double sigma, double clip, const std::string& noise) {
  privacy::PrivacyConfig p;
  p.dp.enabled = true;
  p.dp.noise_multiplier = sigma;
  p.dp.clip_norm = clip;
  p.dp.noise = noise;
  p.dp.delta = 1e-5;
  p.dp.sampling = "fixed";
  return p;
}

// Sample variance of cohort · mean − (the clipped sum): the noise on the sum.
double NoiseVariance(const std::vector<float>& mean, double cohort,
                     const std::vector<double>& clean_sum) {
  double ss = 0;
  for (size_t i = 0; i < mean.size(); ++i) {
    const double e = cohort * mean[i] - clean_sum[i];
    ss += e * e;
  }
  return ss / static_cast<double>(mean.size());
}

// The sum of the scenario's contributions, each clipped to L2 norm `clip`, in double.
std::vector<double> ClippedSum(const Scenario& s, double clip) {
  std::vector<double> sum(s.length, 0.0);
  for (const auto& v : s.values) {
    double norm = 0;
    for (float x : v) norm += double(x) * x;
    norm = std::sqrt(norm);
    for (size_t i = 0; i < s.length; ++i) sum[i] += v[i] * std::min(1.0, clip / norm);
  }
  return sum;
}

// With m = 40000 noise values the sample variance has relative sd √(2/m) = 0.7 %; a ±5 % band is
// 7 sd: a false failure has probability below 1e-11 (and the noise key is fixed anyway).
TEST(PrivatePipelineTest, CentralNoiseHasTheStatedVarianceAndUpdatesAreClipped) {
  const size_t m = 40000;
  const Scenario s = MakeScenario(4, m, 0.05);  // norms ≈ 0.05·√(m/2) = 7 > C: all clipped
  const double sigma = 0.8, clip = 0.5;
  Federation f(s, Dp(sigma, clip, "central"), Engine(1));
  ASSERT_TRUE(f.Run());
  ASSERT_EQ(f.algorithm->means.size(), 1u);
  const double var = NoiseVariance(f.algorithm->means[0], 4.0, ClippedSum(s, clip));
  EXPECT_NEAR(var / (sigma * sigma * clip * clip), 1.0, 0.05);
}

TEST(PrivatePipelineTest, DistributedNoiseOverSecureAggregationHasTheStatedVariance) {
  const size_t m = 40000;
  const Scenario s = MakeScenario(4, m, 0.05);
  const double sigma = 0.8, clip = 0.5;
  privacy::PrivacyConfig p = Dp(sigma, clip, "distributed");
  p.secagg = SecAgg(3).secagg;
  p.secagg.clip_range = 64.0;
  // K = min_results = 4: four shares of σ²C²/4 make σ²C².
  Federation f(s, p, Engine(1, 4));
  ASSERT_TRUE(f.Run()) << (f.client_errors.empty() ? "" : f.client_errors[0]);
  ASSERT_EQ(f.algorithm->means.size(), 1u);
  const double var = NoiseVariance(f.algorithm->means[0], 4.0, ClippedSum(s, clip));
  EXPECT_NEAR(var / (sigma * sigma * clip * clip), 1.0, 0.05);
}

// A coordinator restarted from round 1's checkpoint: another noise key of its own until LoadState
// gives it the checkpoint's, then round 2 is the uninterrupted run's round 2 bit for bit.
void ExpectResumeMatches(const privacy::PrivacyConfig& p, int min_results) {
  const Scenario s = MakeScenario(4, 500, 0.05);
  Federation whole(s, p, Engine(2, min_results));
  ASSERT_TRUE(whole.Run()) << (whole.client_errors.empty() ? "" : whole.client_errors[0]);
  ASSERT_EQ(whole.algorithm->means.size(), 2u);
  Federation first(s, p, Engine(1, min_results));
  ASSERT_TRUE(first.Run());
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> metadata;
  first.private_server->SaveState(&tensors, &metadata);
  Federation resumed(s, p, Engine(2, min_results), true, privacy::SecureRng::Key{9, 9, 9});
  EXPECT_FALSE(resumed.private_server->noise_run() == first.private_server->noise_run());
  ASSERT_TRUE(resumed.private_server->LoadState(tensors, metadata).ok());
  EXPECT_TRUE(resumed.private_server->noise_run() == first.private_server->noise_run());
  resumed.engine->RestoreState(first.engine->state());
  ASSERT_TRUE(resumed.Run()) << (resumed.client_errors.empty() ? "" : resumed.client_errors[0]);
  ASSERT_EQ(resumed.algorithm->means.size(), 1u);
  EXPECT_TRUE(SameBits(whole.algorithm->means[1], resumed.algorithm->means[0]));
  EXPECT_FALSE(SameBits(whole.algorithm->means[0], whole.algorithm->means[1]))
      << "two rounds of one run must not share their noise";
  EXPECT_EQ(whole.private_server->epsilon(), resumed.private_server->epsilon());
}

TEST(PrivatePipelineTest, CentralNoiseAfterLoadStateIsTheUninterruptedRunsNoise) {
  ExpectResumeMatches(Dp(0.8, 0.5, "central"), 0);
}

TEST(PrivatePipelineTest, DistributedNoiseAfterLoadStateIsTheUninterruptedRunsNoise) {
  privacy::PrivacyConfig p = Dp(0.8, 0.5, "distributed");
  p.secagg = SecAgg(3).secagg;
  p.secagg.clip_range = 64.0;
  ExpectResumeMatches(p, 4);
}

TEST(PrivatePipelineTest, TheCentralNoiseKeyIsInTheCheckpointOnlyWhenCentralNoiseIsUsed) {
  const Scenario s = MakeScenario(3, 10);
  Federation central(s, Dp(0.8, 0.5, "central"), Engine(1));
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::string> metadata;
  central.private_server->SaveState(&tensors, &metadata);
  EXPECT_EQ(metadata.count("privacy.noise_key"), 1u);
  EXPECT_EQ(metadata.count("privacy.noise_run"), 1u);
  Federation masked(s, SecAgg(2), Engine(1));
  metadata.clear();
  masked.private_server->SaveState(&tensors, &metadata);
  EXPECT_EQ(metadata.count("privacy.noise_key"), 0u);
  EXPECT_EQ(metadata.count("privacy.noise_run"), 1u);
}

TEST(PrivatePipelineTest, EpsilonInTheMetricsIsTheAccountantsAndTheBudgetStopsTheRun) {
  const Scenario s = MakeScenario(5, 20);
  privacy::PrivacyConfig p = Dp(1.1, 1.0, "central");
  Federation f(s, p, Engine(6));
  ASSERT_TRUE(f.Run());
  ASSERT_EQ(f.lines.size(), 6u);
  privacy::RdpAccountant accountant;
  for (size_t r = 0; r < f.lines.size(); ++r) {
    accountant.Step(1.0, 1.1);  // cohort = clients: q = 1
    StatusOr<privacy::PrivacySpent> spent = accountant.Spent(1e-5);
    ASSERT_TRUE(spent.ok());
    EXPECT_DOUBLE_EQ(f.lines[r].at("epsilon"), spent->epsilon) << "round " << r + 1;
  }
  // A budget between ε after 3 and after 4 rounds: the run stops before round 4, saying why.
  privacy::RdpAccountant three;
  three.Step(1.0, 1.1, 3);
  privacy::RdpAccountant four;
  four.Step(1.0, 1.1, 4);
  p.dp.epsilon_budget = (three.Spent(1e-5)->epsilon + four.Spent(1e-5)->epsilon) / 2;
  Federation g(s, p, Engine(6));
  ASSERT_TRUE(g.Run());
  EXPECT_EQ(g.lines.size(), 3u);
  EXPECT_NE(g.engine->stop_reason().find("budget"), std::string::npos) << g.engine->stop_reason();
  EXPECT_LE(g.lines.back().at("epsilon"), p.dp.epsilon_budget);
}

// Contributions of distill-up's and fedmkt's ensembles (distill/confidence.h, distill/votes.h):
// client i uploads what its random logits give, weight 1.
Scenario EnsembleScenario(int clients, int N, int V, bool votes, int top_k = 1) {
  Scenario s;
  s.length = votes ? static_cast<size_t>(N) * V : ConfidenceContributionLength(N, V);
  Rng rng(77);
  for (int i = 0; i < clients; ++i) {
    std::vector<float> z(static_cast<size_t>(N) * V);
    for (float& x : z) x = static_cast<float>(rng.Normal() * (1.0 + i));
    std::vector<float> v(s.length);
    if (votes) {
      VoteContribution(v.data(), z.data(), N, V, top_k);
    } else {
      ConfidenceContribution(v.data(), z.data(), N, V, 2.0f);
    }
    s.values.push_back(std::move(v));
    s.weights.push_back(1.0);
  }
  return s;
}

// The confidence-weighted ensemble under secure aggregation: the masked sum is the clear sum bit
// for bit, so Σ w·p / Σ w is too; and it is the formula's value up to the sum's 2^-32 grid.
TEST(PrivatePipelineTest, ConfidenceUploadsGiveTheClearEnsembleBitForBitUnderSecureAggregation) {
  const int N = 24, V = 16, K = 5;
  const Scenario s = EnsembleScenario(K, N, V, /*votes=*/false);
  Federation clear(s, {}, Engine(1), /*with_pipeline=*/false);
  ASSERT_TRUE(clear.Run());
  Federation masked(s, SecAgg(3), Engine(1));
  ASSERT_TRUE(masked.Run()) << (masked.client_errors.empty() ? "" : masked.client_errors[0]);
  ASSERT_EQ(masked.algorithm->means.size(), 1u);
  ASSERT_TRUE(SameBits(clear.algorithm->means[0], masked.algorithm->means[0]));
  std::vector<float> a(N * V), b(N * V);
  ConfidenceEnsemble(a.data(), clear.algorithm->means[0].data(), N, V);
  ConfidenceEnsemble(b.data(), masked.algorithm->means[0].data(), N, V);
  EXPECT_TRUE(SameBits(a, b));
  for (int i = 0; i < N; ++i) {
    double den = 0.0;
    for (const auto& v : s.values) den += v[static_cast<size_t>(N) * V + i];
    for (int t = 0; t < V; ++t) {
      double num = 0.0;
      for (const auto& v : s.values) num += v[static_cast<size_t>(i) * V + t];
      EXPECT_NEAR(a[i * V + t], num / den, 1e-6);
    }
  }
}

// GNMax's noise on the vote histogram, central: with C = √N (no vote clipped) the histogram's
// noise has variance σ²C². m = 40000 entries give the sample variance a relative sd of
// √(2/m) = 0.7 %; a ±5 % band is 7 sd, a false failure below 1e-11. The clean histogram is the
// exact vote count (nothing was clipped).
TEST(PrivatePipelineTest, TheVoteHistogramsNoiseHasTheStatedSigma) {
  const int N = 2500, V = 16, K = 4;
  const Scenario s = EnsembleScenario(K, N, V, /*votes=*/true);
  const double sigma = 0.8, clip = VoteSensitivity(N, 1);
  ASSERT_DOUBLE_EQ(clip, 50.0);
  Federation f(s, Dp(sigma, clip, "central"), Engine(1));
  ASSERT_TRUE(f.Run());
  ASSERT_EQ(f.algorithm->means.size(), 1u);
  std::vector<double> histogram(s.length, 0.0);
  for (const auto& v : s.values) {
    for (size_t j = 0; j < s.length; ++j) histogram[j] += v[j];
  }
  EXPECT_EQ(histogram, ClippedSum(s, clip)) << "a vote vector of norm √N is not clipped at √N";
  const double var = NoiseVariance(f.algorithm->means[0], K, histogram);
  EXPECT_NEAR(var / (sigma * sigma * clip * clip), 1.0, 0.05);
}

TEST(PrivatePipelineTest, AdaptiveClippingRaisesTheNormWhenEverythingIsClipped) {
  const Scenario s = MakeScenario(5, 200, 1.0);  // norms ≈ 10 ≫ C
  privacy::PrivacyConfig p = Dp(0.01, 0.1, "central");
  p.dp.adaptive_clipping = true;
  p.dp.target_quantile = 0.5;
  p.dp.clip_lr = 0.2;
  p.dp.bit_noise_multiplier = 0.01;
  Federation f(s, p, Engine(3));
  ASSERT_TRUE(f.Run());
  ASSERT_EQ(f.lines.size(), 3u);
  // b̄ ≈ 0 (all clipped): C ← C·exp(0.2·0.5) each round, up to the small bit noise.
  for (int r = 0; r < 3; ++r) {
    EXPECT_NEAR(f.lines[r].at("clipped_fraction"), 1.0, 0.02);
    EXPECT_NEAR(f.lines[r].at("clip_norm"), 0.1 * std::exp(0.1 * r), 0.002) << "round " << r + 1;
  }
  EXPECT_GT(f.private_server->clip_norm(), 0.1 * std::exp(0.29));
}

}  // namespace
}  // namespace tandem

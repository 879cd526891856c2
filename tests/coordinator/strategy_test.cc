// Server strategies against a plain double-precision reference over several rounds, bit-exact
// resume through SaveState/LoadState, arrival-order independence, robustness of median and
// trimmed mean, the round life cycle, and [strategy] config validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "coordinator/aggregator.h"
#include "algorithms/common/strategy.h"
#include "core/config.h"
#include "core/rng.h"

namespace tandem {
namespace {

using Deltas = std::vector<std::vector<float>>;

struct Round {
  Deltas deltas;
  std::vector<double> weights;
};

Round RandomRound(Rng& rng, size_t clients, size_t length, double scale = 0.01) {
  Round r;
  r.deltas.assign(clients, std::vector<float>(length));
  for (auto& d : r.deltas) {
    for (float& v : d) v = static_cast<float>(scale * rng.Normal());
  }
  for (size_t k = 0; k < clients; ++k) r.weights.push_back(1.0 + std::floor(50 * rng.Uniform()));
  return r;
}

std::vector<float> RandomModel(Rng& rng, size_t length) {
  std::vector<float> x(length);
  for (float& v : x) v = static_cast<float>(rng.Normal());
  return x;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool SameState(const std::map<std::string, std::vector<float>>& a,
               const std::map<std::string, std::vector<float>>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end() || !SameBits(v, it->second)) return false;
  }
  return true;
}

std::unique_ptr<Strategy> Make(const StrategyConfig& c) {
  auto s = MakeStrategy(c);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return std::move(s).value();
}

StrategyConfig Named(const std::string& name) {
  StrategyConfig c;
  c.name = name;
  if (name == "fedprox") c.proximal_mu = 0.01;
  if (name == "fedavgm") c.server_lr = 0.7;
  if (name == "fedadam" || name == "fedyogi") {
    c.server_lr = 0.05;
    c.tau = 1e-2;
  }
  if (name == "trimmed-mean") c.trim_fraction = 0.2;
  return c;
}

void RunRound(Strategy& s, const Round& r, std::vector<float>& global,
              const std::vector<size_t>* order = nullptr) {
  s.BeginRound(global.size());
  for (size_t i = 0; i < r.deltas.size(); ++i) {
    size_t k = order ? (*order)[i] : i;
    ASSERT_TRUE(s.AddDelta(r.deltas[k], r.weights[k]).ok());
  }
  EXPECT_EQ(s.count(), r.deltas.size());
  Status st = s.Apply(global);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(s.count(), 0u);
}

// The update rules written out directly, in double, with double state.
class Reference {
 public:
  Reference(StrategyConfig c, size_t length)
      : c_(std::move(c)), m_(length, 0.0), v_(length, c_.tau * c_.tau), vel_(length, 0.0) {}

  void Step(const Round& r, std::vector<double>& x) {
    const size_t n = r.deltas.size();
    for (size_t i = 0; i < x.size(); ++i) {
      std::vector<double> col(n);
      for (size_t k = 0; k < n; ++k) col[k] = r.deltas[k][i];
      double d;
      if (c_.name == "median" || c_.name == "trimmed-mean") {
        std::sort(col.begin(), col.end());
        size_t cut = c_.name == "median" ? (n - 1) / 2 : static_cast<size_t>(c_.trim_fraction * n);
        if (c_.name == "median") {
          d = (col[(n - 1) / 2] + col[n / 2]) / 2;
        } else {
          d = 0;
          for (size_t k = cut; k < n - cut; ++k) d += col[k];
          d /= static_cast<double>(n - 2 * cut);
        }
      } else {
        double num = 0, den = 0;
        for (size_t k = 0; k < n; ++k) {
          num += r.weights[k] * col[k];
          den += r.weights[k];
        }
        d = num / den;
      }
      if (c_.name == "fedavgm") {
        vel_[i] = c_.momentum * vel_[i] + d;
        x[i] += c_.server_lr * vel_[i];
      } else if (c_.name == "fedadam" || c_.name == "fedyogi") {
        m_[i] = c_.beta1 * m_[i] + (1 - c_.beta1) * d;
        if (c_.name == "fedadam") {
          v_[i] = c_.beta2 * v_[i] + (1 - c_.beta2) * d * d;
        } else {
          double s = v_[i] > d * d ? 1.0 : (v_[i] < d * d ? -1.0 : 0.0);
          v_[i] = v_[i] - (1 - c_.beta2) * d * d * s;
        }
        x[i] += c_.server_lr * m_[i] / (std::sqrt(v_[i]) + c_.tau);
      } else {
        x[i] += d;
      }
    }
  }

 private:
  StrategyConfig c_;
  std::vector<double> m_, v_, vel_;
};

class EveryStrategy : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryStrategy, MatchesReferenceOverSeveralRounds) {
  const StrategyConfig config = Named(GetParam());
  const size_t kLength = 300, kClients = 7;
  Rng rng(21);
  std::vector<float> global = RandomModel(rng, kLength);
  std::vector<double> ref_x(global.begin(), global.end());
  auto strategy = Make(config);
  Reference ref(config, kLength);
  EXPECT_EQ(strategy->name(), GetParam());
  EXPECT_EQ(strategy->NeedsIndividualContributions(),
            GetParam() == "median" || GetParam() == "trimmed-mean");
  const std::vector<float> start = global;
  for (int round = 0; round < 6; ++round) {
    Round r = RandomRound(rng, kClients, kLength);
    RunRound(*strategy, r, global);
    ref.Step(r, ref_x);
    for (size_t i = 0; i < kLength; ++i) {
      ASSERT_NEAR(global[i], ref_x[i], 2e-6 * (1 + std::fabs(ref_x[i])))
          << GetParam() << " round " << round << " coordinate " << i;
    }
  }
  EXPECT_FALSE(SameBits(global, start));  // something happened
}

TEST_P(EveryStrategy, ResultDoesNotDependOnArrivalOrder) {
  const StrategyConfig config = Named(GetParam());
  const size_t kLength = 50, kClients = 12;
  Rng rng(22);
  const std::vector<float> start = RandomModel(rng, kLength);
  std::vector<Round> rounds;
  for (int i = 0; i < 3; ++i) rounds.push_back(RandomRound(rng, kClients, kLength, 0.1));
  std::vector<float> first;
  std::vector<size_t> order(kClients);
  std::iota(order.begin(), order.end(), 0);
  for (int trial = 0; trial < 40; ++trial) {
    auto s = Make(config);
    std::vector<float> global = start;
    for (const auto& r : rounds) {
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.Below(i)]);
      RunRound(*s, r, global, &order);
    }
    if (trial == 0) {
      first = global;
    } else {
      ASSERT_TRUE(SameBits(global, first)) << GetParam() << " trial " << trial;
    }
  }
}

TEST_P(EveryStrategy, SaveLoadResumesBitForBit) {
  const StrategyConfig config = Named(GetParam());
  const size_t kLength = 80, kClients = 5;
  Rng rng(23);
  std::vector<float> global = RandomModel(rng, kLength);
  std::vector<Round> rounds;
  for (int i = 0; i < 4; ++i) rounds.push_back(RandomRound(rng, kClients, kLength));

  auto uninterrupted = Make(config);
  for (int i = 0; i < 2; ++i) RunRound(*uninterrupted, rounds[i], global);
  const auto saved = uninterrupted->SaveState();
  const std::vector<float> saved_global = global;
  for (int i = 2; i < 4; ++i) RunRound(*uninterrupted, rounds[i], global);

  if (GetParam() == "fedavgm") {
    EXPECT_EQ(saved.size(), 1u);
    EXPECT_EQ(saved.count("fedavgm.velocity"), 1u);
  } else if (GetParam() == "fedadam" || GetParam() == "fedyogi") {
    EXPECT_EQ(saved.size(), 3u);
    ASSERT_EQ(saved.count(GetParam() + ".step"), 1u);
    EXPECT_EQ(saved.at(GetParam() + ".step"), std::vector<float>{2.0f});
    EXPECT_EQ(saved.at(GetParam() + ".m").size(), kLength);
  } else {
    EXPECT_TRUE(saved.empty());
  }

  auto resumed = Make(config);
  ASSERT_TRUE(resumed->LoadState(saved, kLength).ok());
  std::vector<float> resumed_global = saved_global;
  std::vector<size_t> reversed(kClients);
  std::iota(reversed.rbegin(), reversed.rend(), 0);
  for (int i = 2; i < 4; ++i) RunRound(*resumed, rounds[i], resumed_global, &reversed);
  EXPECT_TRUE(SameBits(resumed_global, global));
  EXPECT_TRUE(SameState(resumed->SaveState(), uninterrupted->SaveState()));

  // A stateful strategy that forgot its state would diverge: the test can tell.
  if (!saved.empty()) {
    auto fresh = Make(config);
    std::vector<float> fresh_global = saved_global;
    for (int i = 2; i < 4; ++i) RunRound(*fresh, rounds[i], fresh_global);
    EXPECT_FALSE(SameBits(fresh_global, global));
  }
}

TEST_P(EveryStrategy, RoundLifeCycle) {
  auto s = Make(Named(GetParam()));
  std::vector<float> global = {1.0f, 2.0f, 3.0f};
  const std::vector<float> before = global;
  const std::vector<float> delta = {0.5f, -0.5f, 0.25f};
  EXPECT_EQ(s->AddDelta(delta, 1.0).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s->Apply(global).code(), StatusCode::kFailedPrecondition);
  s->BeginRound(3);
  EXPECT_EQ(s->Apply(global).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(global, before);
  // Rejected deltas change nothing.
  EXPECT_EQ(s->AddDelta(std::vector<float>{1.0f, 2.0f}, 1.0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->AddDelta(std::vector<float>{1.0f, NAN, 2.0f}, 1.0).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(s->AddDelta(delta, -1.0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->count(), 0u);
  ASSERT_TRUE(s->AddDelta(std::vector<float>{9.0f, 9.0f, 9.0f}, 1.0).ok());
  s->BeginRound(3);  // drops the unfinished round
  EXPECT_EQ(s->count(), 0u);
  ASSERT_TRUE(s->AddDelta(delta, 2.0).ok());
  EXPECT_EQ(s->count(), 1u);
  std::vector<float> wrong(4, 0.0f);
  EXPECT_EQ(s->Apply(wrong).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wrong, std::vector<float>(4, 0.0f));
  EXPECT_EQ(s->count(), 1u);
  ASSERT_TRUE(s->Apply(global).ok());
  EXPECT_NE(global, before);
  EXPECT_EQ(s->count(), 0u);
  const std::vector<float> after = global;
  EXPECT_EQ(s->Apply(global).code(), StatusCode::kFailedPrecondition);  // consumed
  EXPECT_EQ(global, after);
}

TEST_P(EveryStrategy, LoadStateRejectsForeignOrMalformedState) {
  const std::string name = GetParam();
  auto s = Make(Named(name));
  std::vector<float> global = {1.0f, 2.0f, 3.0f};
  s->BeginRound(3);
  ASSERT_TRUE(s->AddDelta(std::vector<float>{0.1f, 0.2f, 0.3f}, 1.0).ok());
  ASSERT_TRUE(s->Apply(global).ok());
  const auto good = s->SaveState();

  std::map<std::string, std::vector<float>> foreign = {{"other.thing", {1.0f, 2.0f, 3.0f}}};
  EXPECT_EQ(s->LoadState(foreign, 3).code(), StatusCode::kInvalidArgument);
  if (!good.empty()) {
    EXPECT_EQ(s->LoadState(good, 4).code(), StatusCode::kInvalidArgument);  // wrong length
    if (good.size() > 1) {  // (with one tensor, removing it leaves the empty "reset" map)
      auto missing = good;
      missing.erase(missing.begin());
      EXPECT_EQ(s->LoadState(missing, 3).code(), StatusCode::kInvalidArgument);
    }
    auto nan = good;
    nan.begin()->second[0] = NAN;
    EXPECT_EQ(s->LoadState(nan, 3).code(), StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(SameState(s->SaveState(), good));  // failed loads changed nothing
  ASSERT_TRUE(s->LoadState({}, 3).ok());          // empty: back to the initial state
  EXPECT_TRUE(s->SaveState().empty());
}

INSTANTIATE_TEST_SUITE_P(Strategies, EveryStrategy,
                         ::testing::Values("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi",
                                           "median", "trimmed-mean"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// The privacy pipeline hands a mean-based strategy the mean it computed itself: the step and the
// server-optimizer state must be those of Apply() over the same deltas. Robust statistics refuse.
TEST_P(EveryStrategy, ApplyAggregateTakesApplysStepFromAGivenMean) {
  const StrategyConfig config = Named(GetParam());
  const size_t kLength = 40, kClients = 5;
  Rng rng(31);
  std::vector<float> by_apply = RandomModel(rng, kLength);
  std::vector<float> by_aggregate = by_apply;
  auto a = Make(config);
  auto b = Make(config);
  for (int round = 0; round < 3; ++round) {
    const Round r = RandomRound(rng, kClients, kLength, 0.1);
    RunRound(*a, r, by_apply);
    RunningSum sum(kLength);
    for (size_t k = 0; k < kClients; ++k) ASSERT_TRUE(sum.Add(r.deltas[k], r.weights[k]).ok());
    std::vector<float> mean(kLength);
    ASSERT_TRUE(sum.Mean(mean).ok());
    b->BeginRound(kLength);
    const Status s = b->ApplyAggregate(mean, by_aggregate);
    if (b->NeedsIndividualContributions()) {
      EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
      return;
    }
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(SameBits(by_apply, by_aggregate)) << GetParam() << " round " << round;
  }
  EXPECT_TRUE(SameState(a->SaveState(), b->SaveState()));
  // A wrong length or a non-finite mean changes nothing.
  const std::vector<float> before = by_aggregate;
  EXPECT_FALSE(b->ApplyAggregate(std::vector<float>(kLength - 1), by_aggregate).ok());
  std::vector<float> bad(kLength, 0.0f);
  bad[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(b->ApplyAggregate(bad, by_aggregate).ok());
  EXPECT_TRUE(SameBits(before, by_aggregate));
}

TEST(StrategyTest, FedAdamAndFedYogiStartFromVEqualTauSquared) {
  // One client, weight 1: Δ = d. Reddi et al. Algorithm 2 with m = 0, v = τ²:
  //   m1 = (1−β1) d; v1 = β2 τ² + (1−β2) d² (Adam) or τ² + (1−β2) d² (Yogi, τ² < d²).
  for (const std::string name : {"fedadam", "fedyogi"}) {
    StrategyConfig c;
    c.name = name;
    c.server_lr = 0.1;
    c.tau = 0.05;
    const double d = 0.2, b1 = c.beta1, b2 = c.beta2, tau = c.tau;
    auto s = Make(c);
    std::vector<float> global = {0.0f};
    s->BeginRound(1);
    ASSERT_TRUE(s->AddDelta(std::vector<float>{static_cast<float>(d)}, 1.0).ok());
    ASSERT_TRUE(s->Apply(global).ok());
    const double v1 = (name == "fedadam" ? b2 * tau * tau : tau * tau) + (1 - b2) * d * d;
    const double m1 = (1 - b1) * d;
    const double x1 = c.server_lr * m1 / (std::sqrt(v1) + tau);
    EXPECT_NEAR(global[0], x1, 1e-6 * x1) << name;
    // Starting from v = 0 would give a clearly different step.
    const double v1_zero = (1 - b2) * d * d;
    EXPECT_GT(std::fabs(c.server_lr * m1 / (std::sqrt(v1_zero) + tau) - x1), 1e-3);
    auto state = s->SaveState();
    EXPECT_NEAR(state.at(name + ".v")[0], v1, 1e-6 * v1) << name;
    EXPECT_NEAR(state.at(name + ".m")[0], m1, 1e-6 * m1) << name;
  }
}

TEST(StrategyTest, FedYogiShrinksVAdditivelyFedAdamGeometrically) {
  // After a large delta, a run of small ones: Adam's v decays geometrically, Yogi's only
  // additively (Zaheer et al. 2018), so Yogi keeps a larger v.
  std::map<std::string, float> v_after;
  for (const std::string name : {"fedadam", "fedyogi"}) {
    StrategyConfig c;
    c.name = name;
    c.beta2 = 0.9;
    auto s = Make(c);
    std::vector<float> global = {0.0f};
    for (int round = 0; round < 20; ++round) {
      s->BeginRound(1);
      ASSERT_TRUE(s->AddDelta(std::vector<float>{round == 0 ? 1.0f : 0.01f}, 1.0).ok());
      ASSERT_TRUE(s->Apply(global).ok());
    }
    v_after[name] = s->SaveState().at(name + ".v")[0];
  }
  EXPECT_GT(v_after["fedyogi"], 5 * v_after["fedadam"]);
}

// Nine honest clients send deltas near 0.1, one sends 1e6 on every coordinate.
Round PoisonedRound(Rng& rng, size_t length) {
  Round r = RandomRound(rng, 9, length, 0.01);
  for (auto& d : r.deltas) {
    for (float& v : d) v += 0.1f;
  }
  r.deltas.push_back(std::vector<float>(length, 1e6f));
  r.weights.push_back(1.0);
  return r;
}

TEST(StrategyTest, MedianAndTrimmedMeanShrugOffOneHugeDelta) {
  const size_t kLength = 100;
  Rng rng(31);
  const Round r = PoisonedRound(rng, kLength);
  for (const std::string name : {"median", "trimmed-mean", "fedavg"}) {
    StrategyConfig c;
    c.name = name;
    c.trim_fraction = 0.1;  // n = 10: one value dropped at each end
    auto s = Make(c);
    std::vector<float> global(kLength, 0.0f);
    RunRound(*s, r, global);
    float worst = 0;
    for (size_t i = 0; i < kLength; ++i) {
      float lo = 1e30f, hi = -1e30f;
      for (size_t k = 0; k < 9; ++k) {
        lo = std::min(lo, r.deltas[k][i]);
        hi = std::max(hi, r.deltas[k][i]);
      }
      // The robust result stays within the honest clients' range.
      if (name != "fedavg") {
        EXPECT_GE(global[i], lo) << name << " coordinate " << i;
        EXPECT_LE(global[i], hi) << name << " coordinate " << i;
      }
      worst = std::max(worst, std::fabs(global[i] - 0.1f));
    }
    if (name == "fedavg") {
      EXPECT_GT(worst, 1e3f);  // the plain weighted mean is dragged away
    } else {
      EXPECT_LT(worst, 0.05f) << name;
    }
  }
}

TEST(StrategyTest, MedianOfEvenCountAveragesTheMiddleTwo) {
  StrategyConfig c;
  c.name = "median";
  auto s = Make(c);
  std::vector<float> global = {10.0f, 0.0f};
  s->BeginRound(2);
  for (float v : {4.0f, 1.0f, 100.0f, 2.0f}) {
    ASSERT_TRUE(s->AddDelta(std::vector<float>{v, -v}, 1.0).ok());
  }
  ASSERT_TRUE(s->Apply(global).ok());
  EXPECT_EQ(global[0], 13.0f);  // 10 + (2 + 4) / 2
  EXPECT_EQ(global[1], -3.0f);
}

TEST(StrategyTest, TrimmedMeanDropsFloorOfFractionAtEachEnd) {
  StrategyConfig c;
  c.name = "trimmed-mean";
  c.trim_fraction = 0.29;  // n = 7: ⌊2.03⌋ = 2 dropped at each end
  auto s = Make(c);
  std::vector<float> global = {0.0f};
  s->BeginRound(1);
  for (float v : {-100.0f, -50.0f, 1.0f, 2.0f, 6.0f, 70.0f, 90.0f}) {
    ASSERT_TRUE(s->AddDelta(std::vector<float>{v}, 3.0).ok());
  }
  ASSERT_TRUE(s->Apply(global).ok());
  EXPECT_EQ(global[0], 3.0f);  // (1 + 2 + 6) / 3
}

TEST(StrategyTest, FedAvgIsWeightedAndZeroTotalWeightFails) {
  StrategyConfig c;
  auto s = Make(c);
  std::vector<float> global = {1.0f};
  s->BeginRound(1);
  ASSERT_TRUE(s->AddDelta(std::vector<float>{1.0f}, 3.0).ok());
  ASSERT_TRUE(s->AddDelta(std::vector<float>{-1.0f}, 1.0).ok());
  ASSERT_TRUE(s->Apply(global).ok());
  EXPECT_EQ(global[0], 1.5f);  // 1 + (3 − 1) / 4
  s->BeginRound(1);
  ASSERT_TRUE(s->AddDelta(std::vector<float>{1.0f}, 0.0).ok());
  EXPECT_EQ(s->Apply(global).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(global[0], 1.5f);
}

// ---- Config ----

StatusOr<StrategyConfig> FromToml(const std::string& text) {
  auto config = Config::Parse(text, "s.toml");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return StrategyConfigFromConfig(*config);
}

void ExpectError(const std::string& toml, const std::vector<std::string>& needles) {
  auto c = FromToml(toml);
  ASSERT_FALSE(c.ok()) << toml;
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  for (const auto& needle : needles) {
    EXPECT_NE(c.status().message().find(needle), std::string::npos)
        << "'" << needle << "' not in: " << c.status().message();
  }
}

TEST(StrategyConfigTest, DefaultsAndReadsTheChosenStrategysKeys) {
  auto d = FromToml("");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->name, "fedavg");

  auto c = FromToml(
      "[strategy]\nname = \"fedadam\"\nserver_lr = 0.03\nbeta1 = 0.8\nbeta2 = 0.999\n"
      "tau = 1e-4\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->name, "fedadam");
  EXPECT_DOUBLE_EQ(c->server_lr, 0.03);
  EXPECT_DOUBLE_EQ(c->beta1, 0.8);
  EXPECT_DOUBLE_EQ(c->beta2, 0.999);
  EXPECT_DOUBLE_EQ(c->tau, 1e-4);
  EXPECT_TRUE(MakeStrategy(*c).ok());

  auto p = FromToml("[strategy]\nname = \"fedprox\"\nproximal_mu = 0.1\n");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_DOUBLE_EQ(p->proximal_mu, 0.1);
  auto m = FromToml("[strategy]\nname = \"fedavgm\"\nmomentum = 0\nserver_lr = 1\n");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->momentum, 0.0);
  auto t = FromToml("[strategy]\nname = \"trimmed-mean\"\ntrim_fraction = 0.25\n");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_DOUBLE_EQ(t->trim_fraction, 0.25);
}

TEST(StrategyConfigTest, OverridesApply) {
  auto config = Config::Parse("[strategy]\nname = \"fedadam\"\n", "o.toml");
  ASSERT_TRUE(config->ApplyOverride("strategy.name=fedyogi").ok());
  ASSERT_TRUE(config->ApplyOverride("strategy.tau=0.01").ok());
  auto c = StrategyConfigFromConfig(*config);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->name, "fedyogi");
  EXPECT_DOUBLE_EQ(c->tau, 0.01);
}

TEST(StrategyConfigTest, ValidationErrorsNameKeyAndRange) {
  ExpectError("[strategy]\nname = \"fedsgd\"\n", {"s.toml", "strategy.name", "fedavg, fedprox"});
  ExpectError("[strategy]\nname = \"fedprox\"\n", {"s.toml", "strategy.proximal_mu"});
  ExpectError("[strategy]\nname = \"fedprox\"\nproximal_mu = -1\n", {"strategy.proximal_mu"});
  ExpectError("[strategy]\nname = \"fedavgm\"\nmomentum = 1.0\n", {"strategy.momentum", "[0, 1)"});
  ExpectError("[strategy]\nname = \"fedadam\"\nbeta2 = 1.5\n", {"strategy.beta2", "[0, 1)"});
  ExpectError("[strategy]\nname = \"fedyogi\"\nbeta1 = -0.1\n", {"strategy.beta1"});
  ExpectError("[strategy]\nname = \"fedyogi\"\ntau = 0\n", {"strategy.tau", "(0, 10]"});
  ExpectError("[strategy]\nname = \"fedadam\"\nserver_lr = 0\n", {"strategy.server_lr"});
  ExpectError("[strategy]\nname = \"fedadam\"\nserver_lr = \"fast\"\n",
              {"s.toml:3", "strategy.server_lr", "expected a number"});
  ExpectError("[strategy]\nname = \"trimmed-mean\"\ntrim_fraction = 0.5\n",
              {"strategy.trim_fraction", "[0, 0.5)"});
}

TEST(StrategyConfigTest, KeysTheChosenStrategyIgnoresAreErrors) {
  ExpectError("[strategy]\nname = \"fedadam\"\nmomentum = 0.5\n",
              {"strategy.momentum", "fedadam", "fedavgm"});
  ExpectError("[strategy]\nserver_lr = 2.0\n", {"strategy.server_lr", "\"fedavg\""});
  ExpectError("[strategy]\nname = \"median\"\ntrim_fraction = 0.2\n",
              {"strategy.trim_fraction", "trimmed-mean"});
  ExpectError("[strategy]\nname = \"fedavg\"\nproximal_mu = 0.1\n",
              {"strategy.proximal_mu", "fedprox"});
}

TEST(StrategyConfigTest, TyposAreLeftForCheckAllKeysUsed) {
  auto config = Config::Parse("[strategy]\nname = \"fedavgm\"\nmomentun = 0.5\n", "t.toml");
  ASSERT_TRUE(StrategyConfigFromConfig(*config).ok());
  Status st = config->CheckAllKeysUsed();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("strategy.momentun"), std::string::npos) << st.message();
}

TEST(StrategyConfigTest, MakeStrategyValidatesToo) {
  StrategyConfig c;
  c.name = "krum";
  EXPECT_EQ(MakeStrategy(c).status().code(), StatusCode::kInvalidArgument);
  c.name = "fedadam";
  c.beta1 = 1.0;
  EXPECT_EQ(MakeStrategy(c).status().code(), StatusCode::kInvalidArgument);
  c.name = "fedprox";  // proximal_mu defaults to 0
  EXPECT_EQ(MakeStrategy(c).status().code(), StatusCode::kInvalidArgument);
  c.name = "fedavg";  // beta1 is not fedavg's: not checked
  EXPECT_TRUE(MakeStrategy(c).ok());
}

}  // namespace
}  // namespace tandem

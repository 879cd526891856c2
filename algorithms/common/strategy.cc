// Server strategies: FedAvg/FedProx, FedAvgM, FedAdam/FedYogi over an exact RunningSum, and the
// coordinate-wise median and trimmed mean over stored contributions. See strategy.h.
#include "algorithms/common/strategy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>

#include "coordinator/aggregator.h"
#include "coordinator/algorithm.h"

namespace tandem {
namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

bool Contains(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

std::string Join(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& s : list) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// Which strategies read each tunable [strategy] key ("name" is read by all).
struct KeyUse {
  const char* key;
  std::vector<std::string> used_by;
};
const std::vector<KeyUse>& KeyUses() {
  static const std::vector<KeyUse> uses = {
      {"server_lr", {"fedavgm", "fedadam", "fedyogi"}},
      {"momentum", {"fedavgm"}},
      {"beta1", {"fedadam", "fedyogi"}},
      {"beta2", {"fedadam", "fedyogi"}},
      {"tau", {"fedadam", "fedyogi"}},
      {"proximal_mu", {"fedprox"}},
      {"trim_fraction", {"trimmed-mean"}},
  };
  return uses;
}

bool Uses(const std::string& name, const std::string& key) {
  for (const auto& u : KeyUses()) {
    if (key == u.key) return Contains(u.used_by, name);
  }
  return false;
}

using StateMap = std::map<std::string, std::vector<float>>;

// Checks that `state` holds exactly `keys`, each of `length` finite values (a key ending in
// ".step" holds 1 value).
Status CheckStateShape(const std::string& strategy, const StateMap& state,
                       const std::vector<std::string>& keys, size_t length) {
  for (const auto& [key, values] : state) {
    if (!Contains(keys, key)) {
      return Status::InvalidArgument("server state '" + key + "' does not belong to strategy " +
                                     strategy + (keys.empty() ? " (it keeps no state)" : "") +
                                     ": was the checkpoint written with another strategy?");
    }
  }
  for (const auto& key : keys) {
    auto it = state.find(key);
    if (it == state.end()) {
      return Status::InvalidArgument("server state of strategy " + strategy + " lacks '" + key +
                                     "'");
    }
    const bool is_step = key.size() >= 5 && key.compare(key.size() - 5, 5, ".step") == 0;
    const size_t want = is_step ? 1 : length;
    if (it->second.size() != want) {
      return Status::InvalidArgument("server state '" + key + "' has " +
                                     std::to_string(it->second.size()) + " values, expected " +
                                     std::to_string(want));
    }
    for (float v : it->second) {
      if (!std::isfinite(v)) {
        return Status::InvalidArgument("server state '" + key + "' holds a non-finite value");
      }
    }
  }
  return Status::Ok();
}

// ---- Mean-based strategies: Δ is the exact weighted mean of a RunningSum. ----

class MeanStrategy : public Strategy {
 public:
  explicit MeanStrategy(StrategyConfig config) : config_(std::move(config)) {}

  bool NeedsIndividualContributions() const override { return false; }

  // The running sum (2x the model: 64 bits per parameter) exists only from a round's first delta
  // to its Apply, so it is not held while the model goes out to the cohort.
  void BeginRound(size_t length) override {
    length_ = length;
    sum_.reset();
  }

  Status AddDelta(std::span<const float> delta, double weight) override {
    if (!length_) return Status::FailedPrecondition("AddDelta before BeginRound");
    if (!sum_) sum_.emplace(*length_);
    return sum_->Add(delta, weight);
  }

  StatusOr<std::unique_ptr<RunningSum::Part>> StreamDelta(double weight) override {
    if (!length_) return Status::FailedPrecondition("StreamDelta before BeginRound");
    if (!sum_) sum_.emplace(*length_);
    return sum_->StartPart(weight);
  }

  size_t count() const override { return sum_ ? sum_->count() : 0; }

  Status Apply(std::span<float> global) override {
    if (!sum_ || sum_->count() == 0) {
      return Status::FailedPrecondition("strategy " + config_.name +
                                        ": no delta was added this round");
    }
    if (global.size() != sum_->length()) {
      return Status::InvalidArgument("strategy " + config_.name + ": global model has " +
                                     std::to_string(global.size()) + " parameters, the round's " +
                                     "deltas have " + std::to_string(sum_->length()));
    }
    // (length) Δ, over the sum's own storage: no second model-sized buffer at the peak.
    TANDEM_ASSIGN_OR_RETURN(std::span<float> mean, sum_->MeanInPlace());
    TANDEM_RETURN_IF_ERROR(Step(mean, global));
    sum_.reset();
    return Status::Ok();
  }

  Status ApplyAggregate(std::span<const float> mean, std::span<float> global) override {
    if (mean.size() != global.size()) {
      return Status::InvalidArgument("strategy " + config_.name + ": aggregate has " +
                                     std::to_string(mean.size()) + " values, the model " +
                                     std::to_string(global.size()));
    }
    for (size_t i = 0; i < mean.size(); ++i) {
      if (!std::isfinite(mean[i])) {
        return Status::InvalidArgument("strategy " + config_.name + ": aggregate value " +
                                       std::to_string(i) + " is not finite");
      }
    }
    TANDEM_RETURN_IF_ERROR(Step(mean, global));
    sum_.reset();
    return Status::Ok();
  }

  std::string name() const override { return config_.name; }

 protected:
  // x ← update(x, Δ) and the optimizer state; must fail before changing anything.
  virtual Status Step(std::span<const float> delta, std::span<float> global) = 0;

  StrategyConfig config_;

 private:
  std::optional<size_t> length_;  // set by BeginRound
  std::optional<RunningSum> sum_;
};

// FedAvg and FedProx: x ← x + Δ (FedProx differs only on the client, by μ/2‖w − w_global‖²).
class FedAvg final : public MeanStrategy {
 public:
  using MeanStrategy::MeanStrategy;
  StateMap SaveState() const override { return {}; }
  Status LoadState(const StateMap& state, size_t length) override {
    return CheckStateShape(config_.name, state, {}, length);
  }

 protected:
  Status Step(std::span<const float> delta, std::span<float> global) override {
    for (size_t i = 0; i < global.size(); ++i) global[i] += delta[i];
    return Status::Ok();
  }
};

// FedAvgM (Hsu et al. 2019): v ← β v + Δ; x ← x + η v. v starts at zero.
class FedAvgM final : public MeanStrategy {
 public:
  using MeanStrategy::MeanStrategy;

  StateMap SaveState() const override {
    if (velocity_.empty()) return {};
    return {{"fedavgm.velocity", velocity_}};
  }
  Status LoadState(const StateMap& state, size_t length) override {
    if (state.empty()) {
      velocity_.clear();
      return Status::Ok();
    }
    TANDEM_RETURN_IF_ERROR(CheckStateShape(config_.name, state, {"fedavgm.velocity"}, length));
    velocity_ = state.at("fedavgm.velocity");
    return Status::Ok();
  }

 protected:
  Status Step(std::span<const float> delta, std::span<float> global) override {
    if (velocity_.empty()) {
      velocity_.assign(global.size(), 0.0f);
    } else if (velocity_.size() != global.size()) {
      return Status::InvalidArgument("fedavgm: loaded velocity has " +
                                     std::to_string(velocity_.size()) + " values, the model " +
                                     std::to_string(global.size()));
    }
    const double beta = config_.momentum, lr = config_.server_lr;
    for (size_t i = 0; i < global.size(); ++i) {
      velocity_[i] = static_cast<float>(beta * velocity_[i] + delta[i]);
      global[i] = static_cast<float>(global[i] + lr * velocity_[i]);
    }
    return Status::Ok();
  }

 private:
  std::vector<float> velocity_;  // (length) empty until the first step
};

// FedAdam and FedYogi, Reddi et al. 2021 Algorithm 2, without bias correction:
//   m ← β1 m + (1−β1) Δ
//   v ← β2 v + (1−β2) Δ²                  (FedAdam)
//   v ← v − (1−β2) Δ² sign(v − Δ²)         (FedYogi)
//   x ← x + η m / (√v + τ)
// Initial state as in the paper's Algorithm 2: m = 0 and v = τ² (its "v_{−1} ≥ τ²"), so Yogi's
// sign(v − Δ²) is taken against a positive v from the first round. (Flower starts v at 0.)
// State is float; each update is computed in double and rounded once.
class FedAdaptive final : public MeanStrategy {
 public:
  FedAdaptive(StrategyConfig config, bool yogi)
      : MeanStrategy(std::move(config)), yogi_(yogi) {}

  StateMap SaveState() const override {
    if (m_.empty()) return {};
    return {{Key("m"), m_}, {Key("v"), v_}, {Key("step"), {static_cast<float>(step_)}}};
  }

  Status LoadState(const StateMap& state, size_t length) override {
    if (state.empty()) {
      m_.clear();
      v_.clear();
      step_ = 0;
      return Status::Ok();
    }
    TANDEM_RETURN_IF_ERROR(
        CheckStateShape(config_.name, state, {Key("m"), Key("v"), Key("step")}, length));
    const float step = state.at(Key("step"))[0];
    // A float counts rounds exactly up to 2^24.
    if (step < 1.0f || step != std::floor(step) || step > 16777216.0f) {
      return Status::InvalidArgument("server state '" + Key("step") + "' is " + Num(step) +
                                     ", expected a positive whole number of rounds");
    }
    for (float v : state.at(Key("v"))) {
      if (v < 0.0f) {
        return Status::InvalidArgument("server state '" + Key("v") + "' holds a negative value");
      }
    }
    m_ = state.at(Key("m"));
    v_ = state.at(Key("v"));
    step_ = static_cast<uint64_t>(step);
    return Status::Ok();
  }

 protected:
  Status Step(std::span<const float> delta, std::span<float> global) override {
    if (m_.empty()) {
      m_.assign(global.size(), 0.0f);
      v_.assign(global.size(), static_cast<float>(config_.tau * config_.tau));
    } else if (m_.size() != global.size()) {
      return Status::InvalidArgument(config_.name + ": loaded state has " +
                                     std::to_string(m_.size()) + " values, the model " +
                                     std::to_string(global.size()));
    }
    const double b1 = config_.beta1, b2 = config_.beta2, tau = config_.tau;
    const double lr = config_.server_lr;
    for (size_t i = 0; i < global.size(); ++i) {
      const double d = delta[i];
      const double d2 = d * d;
      m_[i] = static_cast<float>(b1 * m_[i] + (1.0 - b1) * d);
      const double v = v_[i];
      if (yogi_) {
        const double diff = v - d2;
        const double sign = diff > 0.0 ? 1.0 : (diff < 0.0 ? -1.0 : 0.0);
        v_[i] = static_cast<float>(v - (1.0 - b2) * d2 * sign);
      } else {
        v_[i] = static_cast<float>(b2 * v + (1.0 - b2) * d2);
      }
      global[i] = static_cast<float>(global[i] + lr * m_[i] / (std::sqrt(double{v_[i]}) + tau));
    }
    ++step_;
    return Status::Ok();
  }

 private:
  std::string Key(const char* field) const { return config_.name + "." + field; }

  bool yogi_;
  std::vector<float> m_;  // (length) first moment; empty until the first step
  std::vector<float> v_;  // (length) second moment
  uint64_t step_ = 0;     // rounds applied
};

// ---- Coordinate-wise robust strategies (Yin et al. 2018): unweighted, every delta kept. ----
// Per coordinate the values are sorted, so the result is a function of the multiset of deltas,
// not of their arrival order; -0 is stored as +0 so the multiset has one representation.
class CoordinateWise final : public Strategy {
 public:
  explicit CoordinateWise(StrategyConfig config) : config_(std::move(config)) {}

  bool NeedsIndividualContributions() const override { return true; }

  void BeginRound(size_t length) override {
    length_ = length;
    begun_ = true;
    deltas_.clear();
  }

  // The weight is validated like any contribution's, then ignored: both statistics are unweighted.
  Status AddDelta(std::span<const float> delta, double weight) override {
    if (!begun_) return Status::FailedPrecondition("AddDelta before BeginRound");
    TANDEM_RETURN_IF_ERROR(ValidateContribution(delta, weight, length_));
    std::vector<float>& copy = deltas_.emplace_back(delta.begin(), delta.end());
    for (float& v : copy) v += 0.0f;  // -0 + +0 = +0 under round-to-nearest
    return Status::Ok();
  }

  StatusOr<std::unique_ptr<RunningSum::Part>> StreamDelta(double weight) override {
    return std::unique_ptr<RunningSum::Part>();  // every delta is kept whole
  }

  size_t count() const override { return deltas_.size(); }

  Status ApplyAggregate(std::span<const float> mean, std::span<float> global) override {
    return Status::FailedPrecondition("strategy " + config_.name +
                                      " needs every contribution, not their mean");
  }

  Status Apply(std::span<float> global) override {
    const size_t n = deltas_.size();
    if (n == 0) {
      return Status::FailedPrecondition("strategy " + config_.name +
                                        ": no delta was added this round");
    }
    if (global.size() != length_) {
      return Status::InvalidArgument("strategy " + config_.name + ": global model has " +
                                     std::to_string(global.size()) + " parameters, the round's " +
                                     "deltas have " + std::to_string(length_));
    }
    const bool median = config_.name == "median";
    // ⌊f·n⌋ per end; the 1e-9 keeps e.g. 0.29·100 = 28.999999999999996 from trimming 28.
    const size_t trim =
        median ? 0 : static_cast<size_t>(std::floor(config_.trim_fraction * n + 1e-9));
    std::vector<float> column(n);
    for (size_t j = 0; j < length_; ++j) {
      for (size_t k = 0; k < n; ++k) column[k] = deltas_[k][j];
      double agg;
      if (median) {
        auto mid = column.begin() + n / 2;
        std::nth_element(column.begin(), mid, column.end());
        if (n % 2 == 1) {
          agg = *mid;
        } else {
          const float below = *std::max_element(column.begin(), mid);
          agg = (double{below} + double{*mid}) / 2.0;
        }
      } else {
        std::sort(column.begin(), column.end());
        double sum = 0.0;  // in ascending order: a fixed order for a given multiset
        for (size_t k = trim; k < n - trim; ++k) sum += column[k];
        agg = sum / static_cast<double>(n - 2 * trim);
      }
      global[j] += static_cast<float>(agg);
    }
    deltas_.clear();
    return Status::Ok();
  }

  StateMap SaveState() const override { return {}; }
  Status LoadState(const StateMap& state, size_t length) override {
    return CheckStateShape(config_.name, state, {}, length);
  }
  std::string name() const override { return config_.name; }

 private:
  StrategyConfig config_;
  size_t length_ = 0;
  bool begun_ = false;
  std::vector<std::vector<float>> deltas_;  // (count, length)
};

}  // namespace

Strategy::~Strategy() = default;

const std::vector<std::string>& StrategyNames() {
  static const std::vector<std::string> names = {"fedavg",  "fedprox", "fedavgm",     "fedadam",
                                                 "fedyogi", "median",  "trimmed-mean"};
  return names;
}

Status ValidateStrategyConfig(const StrategyConfig& c) {
  if (!Contains(StrategyNames(), c.name)) {
    return Status::InvalidArgument("strategy.name: expected one of {" + Join(StrategyNames()) +
                                   "}, got '" + c.name + "'");
  }
  auto out_of = [](const char* key, const char* range, double v) {
    return Status::InvalidArgument(std::string("strategy.") + key + ": expected a number in " +
                                   range + ", got " + Num(v));
  };
  if (Uses(c.name, "server_lr") && !(c.server_lr > 0.0 && c.server_lr <= 1000.0)) {
    return out_of("server_lr", "(0, 1000]", c.server_lr);
  }
  if (Uses(c.name, "momentum") && !(c.momentum >= 0.0 && c.momentum < 1.0)) {
    return out_of("momentum", "[0, 1)", c.momentum);
  }
  if (Uses(c.name, "beta1") && !(c.beta1 >= 0.0 && c.beta1 < 1.0)) {
    return out_of("beta1", "[0, 1)", c.beta1);
  }
  if (Uses(c.name, "beta2") && !(c.beta2 >= 0.0 && c.beta2 < 1.0)) {
    return out_of("beta2", "[0, 1)", c.beta2);
  }
  if (Uses(c.name, "tau") && !(c.tau > 0.0 && c.tau <= 10.0)) {
    return out_of("tau", "(0, 10]", c.tau);
  }
  if (Uses(c.name, "proximal_mu") && !(c.proximal_mu > 0.0 && c.proximal_mu <= 1000.0)) {
    return Status::InvalidArgument(
        "strategy.proximal_mu: fedprox needs a proximal term μ in (0, 1000] (Li et al. use "
        "0.001 to 1), got " + Num(c.proximal_mu) + "; with μ = 0 it is fedavg");
  }
  if (Uses(c.name, "trim_fraction") && !(c.trim_fraction >= 0.0 && c.trim_fraction < 0.5)) {
    return out_of("trim_fraction", "[0, 0.5) (the fraction trimmed at each end)",
                  c.trim_fraction);
  }
  return Status::Ok();
}

StatusOr<StrategyConfig> StrategyConfigFromConfig(const Config& config) {
  StrategyConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.name, config.GetChoice("strategy.name", c.name, StrategyNames()));
  for (const auto& use : KeyUses()) {
    const std::string key = std::string("strategy.") + use.key;
    if (config.Has(key) && !Contains(use.used_by, c.name)) {
      return Status::InvalidArgument(config.source() + ": " + key +
                                     " has no effect with strategy.name = \"" + c.name +
                                     "\" (it is used by " + Join(use.used_by) + "); remove it");
    }
  }
  auto read = [&](const char* key, double* field) -> Status {
    if (!Uses(c.name, key)) return Status::Ok();
    TANDEM_ASSIGN_OR_RETURN(*field, config.GetDouble(std::string("strategy.") + key, *field));
    return Status::Ok();
  };
  TANDEM_RETURN_IF_ERROR(read("server_lr", &c.server_lr));
  TANDEM_RETURN_IF_ERROR(read("momentum", &c.momentum));
  TANDEM_RETURN_IF_ERROR(read("beta1", &c.beta1));
  TANDEM_RETURN_IF_ERROR(read("beta2", &c.beta2));
  TANDEM_RETURN_IF_ERROR(read("tau", &c.tau));
  TANDEM_RETURN_IF_ERROR(read("proximal_mu", &c.proximal_mu));
  TANDEM_RETURN_IF_ERROR(read("trim_fraction", &c.trim_fraction));
  Status valid = ValidateStrategyConfig(c);
  if (!valid.ok()) return Status::InvalidArgument(config.source() + ": " + valid.message());
  return c;
}

StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyConfig& config) {
  TANDEM_RETURN_IF_ERROR(ValidateStrategyConfig(config));
  const std::string& n = config.name;
  if (n == "fedavg" || n == "fedprox") return std::unique_ptr<Strategy>(new FedAvg(config));
  if (n == "fedavgm") return std::unique_ptr<Strategy>(new FedAvgM(config));
  if (n == "fedadam") return std::unique_ptr<Strategy>(new FedAdaptive(config, false));
  if (n == "fedyogi") return std::unique_ptr<Strategy>(new FedAdaptive(config, true));
  return std::unique_ptr<Strategy>(new CoordinateWise(config));
}

void SaveStrategyState(const Strategy& strategy,
                       std::map<std::string, std::vector<float>>* tensors) {
  for (auto& [name, values] : strategy.SaveState()) {
    (*tensors)["strategy." + name] = std::move(values);
  }
}

Status LoadStrategyState(const std::map<std::string, std::vector<float>>& tensors, size_t length,
                         Strategy* strategy) {
  std::map<std::string, std::vector<float>> state;
  for (const auto& [key, values] : tensors) {
    if (key.rfind("strategy.", 0) == 0) state[key.substr(9)] = values;
  }
  return strategy->LoadState(state, length);
}

void SaveModelWithStrategy(const Gpt& model, const Strategy& strategy,
                           std::map<std::string, std::vector<float>>* tensors,
                           std::map<std::string, std::string>* metadata) {
  const auto p = model.params();
  (*tensors)["model.params"] = std::vector<float>(p.begin(), p.end());
  SaveStrategyState(strategy, tensors);
  (*metadata)["model"] = model.config().ToString();
  (*metadata)["strategy"] = strategy.name();
}

Status LoadModelWithStrategy(const std::map<std::string, std::vector<float>>& tensors,
                             const std::map<std::string, std::string>& metadata, Gpt* model,
                             Strategy* strategy) {
  TANDEM_RETURN_IF_ERROR(ExpectSavedValue(metadata, "model", model->config().ToString(), "model"));
  TANDEM_RETURN_IF_ERROR(ExpectSavedValue(metadata, "strategy", strategy->name(), "strategy"));
  TANDEM_ASSIGN_OR_RETURN(const std::vector<float>* params,
                          SavedTensor(tensors, "model.params", model->params().size()));
  TANDEM_RETURN_IF_ERROR(LoadStrategyState(tensors, model->params().size(), strategy));
  std::memcpy(model->params().data(), params->data(), params->size() * sizeof(float));
  return Status::Ok();
}

}  // namespace tandem

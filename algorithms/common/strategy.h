// Server strategies: how the coordinator turns a round's client deltas into the next global model.
// FedAvg (McMahan et al. 2017), FedProx (Li et al. 2020), FedAvgM (Hsu et al. 2019), FedAdam and
// FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2), and the robust
// coordinate-wise median and trimmed mean (Yin et al. 2018).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "coordinator/aggregator.h"
#include "core/config.h"
#include "core/status.h"
#include "models/gpt.h"

namespace tandem {

// Convention: a client's contribution is its delta = local_weights - global_weights, with a
// weight (its example count, say). Δ below is the weighted mean delta.
struct StrategyConfig {
  std::string name = "fedavg";  // fedavg, fedprox, fedavgm, fedadam, fedyogi, median, trimmed-mean
  double server_lr = 1.0;       // η: fedavgm, fedadam, fedyogi (the others use 1)
  double momentum = 0.9;        // fedavgm β
  double beta1 = 0.9, beta2 = 0.99, tau = 1e-3;  // fedadam/fedyogi (τ = adaptivity, paper's ε)
  double proximal_mu = 0.0;     // fedprox μ, sent to clients; > 0 required for fedprox
  double trim_fraction = 0.1;   // trimmed-mean: fraction trimmed at EACH end, in [0, 0.5)
};

// Every valid StrategyConfig::name.
const std::vector<std::string>& StrategyNames();

// Ranges: server_lr in (0, 1000]; momentum, beta1, beta2 in [0, 1); tau in (0, 10];
// proximal_mu in [0, 1000] and > 0 for fedprox; trim_fraction in [0, 0.5). InvalidArgument naming
// the field otherwise. Fields that the chosen name does not use are not checked.
Status ValidateStrategyConfig(const StrategyConfig& config);

// Reads the [strategy] section: name, server_lr, momentum, beta1, beta2, tau, proximal_mu,
// trim_fraction, then ValidateStrategyConfig. A key that the chosen name does not use is an
// error (e.g. strategy.momentum with name = "fedadam"), not silently ignored: a researcher who
// sets it believes it acts. Keys other than these under [strategy] are left unread, so the
// caller's Config::CheckAllKeysUsed() reports typos.
StatusOr<StrategyConfig> StrategyConfigFromConfig(const Config& config);

// One server strategy. Life cycle per round: BeginRound(length), AddDelta() per client result
// (in any order: the aggregate is bit-identical for every arrival order), Apply(global).
// Not thread-safe.
class Strategy {
 public:
  virtual ~Strategy();

  // True for median/trimmed-mean: they keep every contribution (memory O(clients × model)) and
  // cannot work under secure aggregation, which reveals only the sum.
  virtual bool NeedsIndividualContributions() const = 0;
  // Starts collecting a round's deltas for a model of `length` parameters, dropping any deltas
  // of an unfinished round. Server optimizer state is kept.
  virtual void BeginRound(size_t length) = 0;
  // Folds one client's delta in. Rejected (InvalidArgument, nothing changes) when its length is
  // not the round's, a value is not finite, or the weight is negative, non-finite or >= 2^30;
  // mean-based strategies also reject any |weight·value| >= 2^30 (see RunningSum).
  // FailedPrecondition before the first BeginRound().
  virtual Status AddDelta(std::span<const float> delta, double weight) = 0;
  // Starts folding one client's delta in piece by piece, in order, as its upload arrives
  // (RunningSum::Part): bit-identical to AddDelta of the whole delta once the part is finished.
  // Returns nullptr for strategies that keep every delta (they need it whole). The part must be
  // finished or abandoned before Apply(), BeginRound() or ApplyAggregate(); one abandoned after
  // folding values makes Apply() fail for this round (FailedPrecondition). InvalidArgument for a
  // bad weight; FailedPrecondition before BeginRound().
  virtual StatusOr<std::unique_ptr<RunningSum::Part>> StreamDelta(double weight) = 0;
  // Deltas accepted since BeginRound().
  virtual size_t count() const = 0;
  // Applies the round's aggregate to `global` in place (global.size() must be the round's
  // length) and updates the server optimizer state; the round's deltas are then consumed
  // (count() becomes 0). FailedPrecondition when no delta was added or their total weight is 0
  // (mean-based strategies); on any error neither `global` nor the state changes.
  virtual Status Apply(std::span<float> global) = 0;
  // The same step from a mean delta computed elsewhere: the privacy pipeline's unmasked, noised
  // and divided sum (DESIGN.md "contributions"). Deltas added since BeginRound() are dropped.
  // FailedPrecondition for strategies that need individual contributions; InvalidArgument for a
  // wrong length or a non-finite value, changing nothing.
  virtual Status ApplyAggregate(std::span<const float> mean, std::span<float> global) = 0;

  // Server-optimizer state for checkpoints, as named float tensors: "fedavgm.velocity";
  // "<name>.m", "<name>.v", "<name>.step" for fedadam/fedyogi (step: rounds applied, 1 value).
  // Empty for stateless strategies and before the first Apply(). Float state is the working
  // state itself, so a run resumed from it continues bit-for-bit.
  virtual std::map<std::string, std::vector<float>> SaveState() const = 0;
  // Restores what SaveState() returned (an empty map resets to the initial state). Every tensor
  // must have `length` values (1 for a step); missing, extra or foreign keys (another strategy's
  // checkpoint), wrong sizes and non-finite values are InvalidArgument and change nothing.
  virtual Status LoadState(const std::map<std::string, std::vector<float>>& state,
                           size_t length) = 0;
  virtual std::string name() const = 0;
};

// InvalidArgument when ValidateStrategyConfig fails.
StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyConfig& config);

// A strategy's state inside a coordinator half's checkpoint: each tensor as "strategy.<name>".
void SaveStrategyState(const Strategy& strategy,
                       std::map<std::string, std::vector<float>>* tensors);
// Restores the checkpoint's "strategy.*" tensors into `strategy` (Strategy::LoadState: every
// tensor of `length` values; InvalidArgument and no change otherwise).
Status LoadStrategyState(const std::map<std::string, std::vector<float>>& tensors, size_t length,
                         Strategy* strategy);

// The checkpointed state of a coordinator half that steps one model with a strategy (fedavg,
// submodel): the model's parameters as "model.params", the strategy's state as
// "strategy.<name>", and metadata "model" and "strategy" that a resume must match.
void SaveModelWithStrategy(const Gpt& model, const Strategy& strategy,
                           std::map<std::string, std::vector<float>>* tensors,
                           std::map<std::string, std::string>* metadata);
// Checks everything, then restores both: FailedPrecondition when the checkpoint is of another
// model or strategy, Corruption when model.params is missing or of another size, the strategy's
// InvalidArgument for its state. Nothing changes on an error.
Status LoadModelWithStrategy(const std::map<std::string, std::vector<float>>& tensors,
                             const std::map<std::string, std::string>& metadata, Gpt* model,
                             Strategy* strategy);

}  // namespace tandem

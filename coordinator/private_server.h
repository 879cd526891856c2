// The coordinator's half of the privacy pipeline (DESIGN.md "contributions", docs/privacy.md):
// a ServerAlgorithm that wraps any other and protects every task its inner algorithm marks as a
// contribution task. Results of such a task never reach the inner algorithm one by one; it gets
// their mean through OnAggregate():
//
//   clients:     clip (L2) -> distributed noise -> fixed point -> secure-aggregation masks
//   this class:  add up as they arrive -> remove survivors' masks -> decode -> central noise
//                -> divide by the expected cohort size (DP) or the total weight (SecAgg alone)
//
// With secure aggregation, a contribution task is followed by the four steps of Bonawitz et al.
// as tasks of the same round: secagg.advertise, secagg.share, secagg.mask (the client masks the
// contribution it kept from the training task) and secagg.unmask, each going to the previous
// step's survivors. With DP, ε is accounted after every round (RDP of the sampled Gaussian
// mechanism), written to the metrics line, and the run stops before a round would exceed its
// budget. The inner algorithm needs no privacy code.
//
// Restarts (docs/privacy.md, "Restarts"): the run's noise id and the central noise key are kept in
// the checkpoint, and central noise is drawn from a stream derived from (key, noise id, round,
// digest of the sum), so a round redone after --resume releases exactly what it released before.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/aggregator.h"
#include "coordinator/engine.h"
#include "privacy/accountant.h"
#include "privacy/noise_stream.h"
#include "privacy/privacy_config.h"
#include "privacy/secagg.h"
#include "privacy/secure_rng.h"

namespace tandem {

// Task kinds of secure aggregation's steps; a client offers all of them or none.
inline constexpr const char* kSecAggAdvertise = "secagg.advertise";
inline constexpr const char* kSecAggShare = "secagg.share";
inline constexpr const char* kSecAggMask = "secagg.mask";
inline constexpr const char* kSecAggUnmask = "secagg.unmask";

struct PrivateServerOptions {
  privacy::PrivacyConfig privacy;
  privacy::FederationShape shape;
  uint64_t run_id = 0;
  uint64_t seed = 1;
  // Keyed noise for tests (it also fixes the noise run id); a real run draws its key and its
  // noise run id from the operating system when it starts afresh, and keeps both in its
  // checkpoint.
  std::optional<privacy::SecureRng::Key> noise_key;
};

class PrivateServer : public ServerAlgorithm {
 public:
  // Fails when the privacy settings do not fit (e.g. adaptive clipping whose bit noise would
  // take the whole budget once σ is calibrated).
  static StatusOr<std::unique_ptr<PrivateServer>> Create(std::unique_ptr<ServerAlgorithm> inner,
                                                         PrivateServerOptions options);
  ~PrivateServer() override;  // wipes the noise key

  std::string name() const override { return inner_->name(); }
  std::vector<std::string> RequiredCapabilities() const override;
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override;
  bool CustomizesTasks() const override;
  void Customize(const ClientInfo& client, wire::TaskAssign* assign) override;
  Status OnResult(const ClientInfo& client, const wire::TaskResult& result) override;
  StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) override;
  void AbortRound() override;
  Status EndRound(uint64_t round, std::map<std::string, double>* metrics) override;
  void AddRoundMetrics(std::map<std::string, double>* metrics) override;
  std::optional<std::string> StopBeforeRound(uint64_t round) override;
  void SaveState(std::map<std::string, std::vector<float>>* tensors,
                 std::map<std::string, std::string>* metadata) const override;
  Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                   const std::map<std::string, std::string>& metadata) override;

  std::vector<RunModel> Models() const override { return inner_->Models(); }

  // σ of the sampled Gaussian mechanism each round (calibrated when target_epsilon is set), the
  // update noise multiplier after adaptive clipping's share, and the current clip norm.
  double noise_multiplier() const { return sigma_; }
  double update_noise_multiplier() const { return update_sigma_; }
  double clip_norm() const { return clip_norm_; }
  // q of the accountant: cohort / clients.
  double sampling_rate() const;
  // ε spent so far at the config's δ (0 before the first round; DP off: NaN).
  double epsilon() const;
  // The identity of this run's noise, stable across --resume; clients bind their noise to it.
  const privacy::NoiseRunId& noise_run() const { return noise_run_; }

 private:
  enum class Stage { kInner, kContribution, kAdvertise, kShare, kMask, kUnmask };

  PrivateServer(std::unique_ptr<ServerAlgorithm> inner, PrivateServerOptions options);
  // The task parameters that tell clients how to protect a contribution.
  void AddPipelineParams(TaskSpec* spec) const;
  // Coordinates each client uploads: the contribution, its weight, and the adaptive-clipping bit.
  size_t EncodedLength() const;
  // From the summed contributions (values, weight, bit) to the inner algorithm's aggregate and its
  // OnTaskClosed for the contribution task.
  StatusOr<std::optional<TaskSpec>> Deliver(std::vector<double> sum,
                                            const std::vector<std::string>& contributors);
  TaskSpec SecAggTask(const char* kind, const std::vector<std::string>& members) const;
  void ResetRound();
  void ResetRoundMetrics();
  // Marks a contribution task for the pipeline (one per round under DP) and adds its parameters.
  Status Prepare(TaskSpec* spec);

  std::unique_ptr<ServerAlgorithm> inner_;
  PrivateServerOptions options_;
  privacy::DpConfig dp_;
  privacy::SecAggConfig secagg_;
  privacy::RdpAccountant accountant_;
  privacy::SecureRng::Key noise_key_{};  // central noise; a secret, kept in the checkpoint
  privacy::NoiseRunId noise_run_;
  double sigma_ = 0.0, update_sigma_ = 0.0, bit_sigma_ = 0.0;
  double clip_norm_ = 1.0;

  // The round in progress.
  uint64_t round_ = 0;
  Stage stage_ = Stage::kInner;
  std::optional<ContributionSpec> contribution_;
  TaskReport contribution_report_;         // the contribution task's report, for the inner
  std::optional<RunningSum> sum_;          // DP without secure aggregation: clipped deltas
  double bits_ = 0.0;                      // DP without secure aggregation: Σ unclipped bits
  std::optional<privacy::SecAggServer> secagg_server_;
  std::map<std::string, std::vector<uint8_t>> outgoing_;  // per-member secagg payload of a step
  // Numbers for the round's line.
  double clipped_fraction_ = -1.0, round_clip_norm_ = 0.0;
  size_t survivors_ = 0;
  double secagg_s_ = 0.0;
  int contributions_ = 0;  // delivered this round
};

}  // namespace tandem

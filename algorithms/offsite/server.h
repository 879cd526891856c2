// The coordinator's half of `offsite` (Offsite-Tuning, Xiao et al. 2023) and `fedbiot` (FedBiOT,
// Wu et al. 2024). The LLM of [model] is split: its bottom `bottom` and top `top` blocks are the
// adapters; the blocks between are compressed into an emulator by uniform layer drop
// (`<section>.emulator_keep` of them kept, spread evenly), optionally distilled to the full LLM on
// public windows. The emulator (adapters included) goes to each client once per version; the
// adapters go down every round, are trained on the clients with the emulator frozen, come back as
// deltas (contributions: averaged by the strategy, and protected by the privacy pipeline like any
// other), and are plugged back into the LLM, whose held-out loss is the run's headline.
//
// fedbiot differs in two ways: before every round the coordinator re-aligns the emulator's middle
// blocks to the full LLM with the current adapters plugged in (distillation over public windows,
// `fedbiot.server_steps` steps, one AdamW kept across rounds), so the emulator follows the
// adapters it is used with; and the
// clients' adapter loss carries a proximal term towards the adapters they were sent.
//
// Adapters (`<section>.adapters`): "full" — the adapter blocks' weights train, move and are
// plugged back, as above — or "lora" — LoRA factors (`<section>.lora.rank/alpha/targets`) on
// the adapter blocks alone train, on the clients, with the blocks' own weights, the emulator's
// middle and everything else frozen. Only the factors go down and up every round and are averaged
// as contributions; the emulator carries them unmerged (emulator.safetensors is its frozen base,
// emulator.lora.safetensors the factors, a file `tandem eval --lora` takes), and they are plugged
// into the LLM merged (its adapter blocks = their original weights + scale · A @ B, recomputed
// from the original every round), so the LLM file a run writes is standalone. fedbiot's
// re-alignment then distils the middle with the factors in both models, and its proximal term
// is on the factors.
//
// The emulator's distillation, as in both papers, is KD on logits (α·CE + (1 − α)·T²·KL) plus
// hidden-state matching (distill/kd_terms.h HiddenMatch): the output of the emulator's middle —
// what its top adapters read — is pulled toward the LLM's at the same place, by the squared error
// normalized by the LLM's own, weighted by `<section>.hidden_weight`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/common/local_train.h"
#include "algorithms/common/server_distill.h"
#include "algorithms/common/strategy.h"
#include "coordinator/algorithm.h"
#include "data/batcher.h"
#include "data/corpus.h"
#include "models/gpt.h"
#include "models/lora.h"
#include "prune/alignment_map.h"

namespace tandem {

class Config;

struct OffsiteServerConfig {
  std::string section = "offsite";  // "offsite" or "fedbiot": where its keys live
  LocalTrainConfig local;
  StrategyConfig strategy;
  int bottom = 1;               // <section>.bottom: adapter blocks at the bottom
  int top = 1;                  // <section>.top: and at the top
  double emulator_keep = 0.5;   // <section>.emulator_keep: share of the middle blocks kept
  // <section>.temperature, .alpha, .windows, .server_steps, .server_batch, .server_lr: the
  // emulator's distillation to the LLM — once before round 1 (offsite; 0 steps = the plain
  // uniform-drop emulator) or before every round (fedbiot).
  ServerDistillConfig align;
  double hidden_weight = 1.0;        // <section>.hidden_weight: the hidden-state term; 0 = off
  std::string adapters = "full";     // <section>.adapters: "full" blocks or "lora" factors on them
  LoraConfig lora;                   // <section>.lora.rank / .alpha / .targets (adapters = "lora")
  bool realign_every_round = false;  // fedbiot
  double proximal_mu = 0.0;          // fedbiot.proximal_mu: the clients' term to the sent adapters
  int64_t eval_tokens = 32768;       // eval.tokens
  uint64_t seed = 1;
};

// Reads [<section>] (offsite or fedbiot), [client], [strategy] and [eval]. `<section>.lora.*`
// keys with adapters = "full" are an error.
StatusOr<OffsiteServerConfig> OffsiteServerConfigFromConfig(const Config& config,
                                                           const std::string& section);

class OffsiteServer : public ServerAlgorithm {
 public:
  // `llm` is the full model; `validation` its held-out records; `public_records` the text the
  // emulator is distilled on.
  static StatusOr<std::unique_ptr<OffsiteServer>> Create(OffsiteServerConfig config,
                                                         std::unique_ptr<Gpt> llm,
                                                         std::unique_ptr<Strategy> strategy,
                                                         std::vector<Record> validation,
                                                         std::vector<Record> public_records);

  std::string name() const override { return config_.section; }
  std::vector<std::string> RequiredCapabilities() const override;
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override;
  bool CustomizesTasks() const override { return true; }
  void Customize(const ClientInfo& client, wire::TaskAssign* assign) override;
  Status OnResult(const ClientInfo& client, const wire::TaskResult& result) override;
  Status OnAggregate(const Aggregate& aggregate) override;
  StatusOr<std::optional<TaskSpec>> OnTaskClosed(const TaskReport& report) override;
  void AbortRound() override;
  Status EndRound(uint64_t round, std::map<std::string, double>* metrics) override;
  void SaveState(std::map<std::string, std::vector<float>>* tensors,
                 std::map<std::string, std::string>* metadata) const override;
  Status LoadState(const std::map<std::string, std::vector<float>>& tensors,
                   const std::map<std::string, std::string>& metadata) override;
  std::vector<RunModel> Models() const override;
  std::optional<std::string> PrivacyConflict() const override { return std::nullopt; }

  Gpt& llm() { return *llm_; }
  Gpt& emulator() { return *emulator_; }
  const AlignmentMap& emulator_map() const { return map_; }
  int64_t emulator_version() const { return version_; }

 private:
  OffsiteServer(OffsiteServerConfig config, std::unique_ptr<Gpt> llm,
                std::unique_ptr<Strategy> strategy, std::vector<Record> validation,
                std::vector<Record> public_records);
  // Distils the emulator's middle blocks to the LLM (adapters plugged into both) for
  // align.server_steps steps on the round's public windows; a new version when it trained.
  Status Align(uint64_t round);
  // adapters_ into the LLM and the emulator (LoRA: into the emulator's factors, and merged into
  // the LLM's adapter blocks from their original weights llm_base_).
  void PlugAdapters();
  bool lora() const { return config_.adapters == "lora"; }

  OffsiteServerConfig config_;
  std::unique_ptr<Gpt> llm_;
  std::unique_ptr<Gpt> emulator_;
  std::unique_ptr<Strategy> strategy_;
  std::vector<Record> validation_;
  TokenDataset public_tokens_;
  AlignmentMap map_;
  std::vector<ParamRange> llm_ranges_, emulator_ranges_;  // the adapters in each
  // The adapters' current values: the blocks' weights, or (LoRA) the emulator's factors.
  std::vector<float> adapters_;
  std::vector<float> llm_base_;  // LoRA: the LLM's adapter blocks as loaded (llm_ranges_), frozen
  int64_t version_ = 0;            // the emulator's; 0: as cut, not distilled
  std::map<std::string, int64_t> client_version_;  // the version each client was sent
  std::optional<wire::Tensor> emulator_tensor_;    // the current version's weights, encoded
  bool aggregated_ = false;
  double train_loss_sum_ = 0.0, train_weight_ = 0.0;
  std::map<std::string, double> align_metrics_;
  // The emulator's middle blocks' AdamW, kept across re-alignments and checkpointed (as every
  // model the coordinator trains: algorithms/common/server_distill.h).
  std::unique_ptr<ServerOptimizer> align_optimizer_;
};

}  // namespace tandem

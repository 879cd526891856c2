// The coordinator's half of `fedcollm` (DESIGN.md "Algorithms"; FedCoLLM, Fan et al. 2024): the
// clients train LoRA adapters on the shared SLM (parameter-efficient, so little moves) and the
// coordinator averages them; then, on windows of the public split, it distils both ways between
// the SLM with the averaged adapters and its LLM — LLM → SLM trains the adapters, SLM → LLM the
// LLM — and sends the SLM adapters back with the next round's task.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/common/local_train.h"
#include "algorithms/common/server_distill.h"
#include "coordinator/algorithm.h"
#include "algorithms/common/strategy.h"
#include "data/batcher.h"
#include "models/gpt.h"
#include "models/lora.h"

namespace tandem {

class Config;

// The [fedcollm] section, and [model.lora] for the adapters.
struct FedCoLLMConfig : ServerDistillConfig {  // server_lr: the LLM's (SLM → LLM)
  std::string llm;       // fedcollm.llm: the cloud LLM's checkpoint; required
  LoraConfig lora;       // model.lora.rank / alpha / targets
  double slm_lr = 1e-3;  // fedcollm.slm_lr: the adapters' AdamW (LLM → SLM)
  // eval.clients: after the server's step, a "fedcollm.eval" task has the cohort score the new
  // SLM (base + adapters) on its own held-out records: client_val_loss.
  bool client_eval = false;
};

StatusOr<FedCoLLMConfig> FedCoLLMConfigFromConfig(const Config& config);

class FedCoLLMServer : public ServerAlgorithm {
 public:
  // `slm` is the shared base SLM (its adapters are created here), `llm` the cloud model. A
  // grouped run (coordinator/grouped_server.h) gives one LLM to the servers of all its SLM
  // architectures; they step it one after another, never at once.
  static StatusOr<std::unique_ptr<FedCoLLMServer>> Create(
      FedCoLLMConfig config, LocalTrainConfig local, StrategyConfig strategy,
      std::unique_ptr<Gpt> slm, std::shared_ptr<Gpt> llm, const std::vector<Record>& public_records,
      std::vector<Record> validation, int64_t eval_tokens, uint64_t seed,
      std::vector<Record> english = {});

  std::string name() const override { return "fedcollm"; }
  std::vector<std::string> RequiredCapabilities() const override;
  StatusOr<TaskSpec> BeginRound(uint64_t round, const std::vector<ClientInfo>& cohort) override;
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
  std::optional<std::string> PrivacyConflict() const override;

  Gpt& slm() { return *slm_; }
  Gpt& llm() { return *llm_; }
  // When the LLM is shared with other servers, whoever shares it saves, loads and evaluates it
  // once (GroupShared): this server's state is then its adapters and strategy only, and its
  // EndRound reports no llm_val_loss.
  void set_llm_shared(bool shared) { llm_shared_ = shared; }
  // Held-out loss of the SLM with its adapters, and of the LLM.
  StatusOr<double> SlmValidationLoss();
  StatusOr<double> LlmValidationLoss();

 private:
  FedCoLLMServer(FedCoLLMConfig config, LocalTrainConfig local, std::unique_ptr<Strategy> strategy,
                 std::unique_ptr<Gpt> slm, std::shared_ptr<Gpt> llm, TokenDataset public_tokens,
                 std::vector<Record> validation, int64_t eval_tokens, uint64_t seed);
  // `steps` of KD from `teacher` into `student` on the round's windows with `optimizer` (the
  // student's: its adapters when student == slm, all its weights for the LLM), plus `extra`
  // (the LLM's English term) when given; returns the student's KD loss on all the windows before
  // and after. fedcollm.confidence_* apply to the teacher of either direction.
  StatusOr<std::pair<double, double>> Distil(Gpt& teacher, Gpt& student,
                                             ServerOptimizer& optimizer, double lr,
                                             LossTerm* extra = nullptr);
  // A task carrying the SLM: its base weights, its adapters and their shape.
  TaskSpec SlmTask(const std::string& kind) const;

  FedCoLLMConfig config_;
  LocalTrainConfig local_;
  std::unique_ptr<Strategy> strategy_;
  std::unique_ptr<Gpt> slm_;
  std::shared_ptr<Gpt> llm_;
  bool llm_shared_ = false;
  TokenDataset public_tokens_;
  std::vector<Record> validation_;
  int64_t eval_tokens_;
  uint64_t seed_;
  // AdamW across rounds: the SLM's adapters (LLM -> SLM) and the LLM (SLM -> LLM).
  ServerOptimizer slm_optimizer_, llm_optimizer_;
  std::unique_ptr<PublicTextTerm> english_;  // fedcollm.english_weight > 0: the LLM's English CE
  uint64_t round_ = 0;
  std::vector<uint32_t> windows_;
  bool aggregated_ = false;
  bool evaluating_ = false;  // the round's open task is the "fedcollm.eval"
  double train_loss_sum_ = 0.0, train_weight_ = 0.0;
  double client_val_sum_ = 0.0, client_val_weight_ = 0.0;
  std::pair<double, double> down_{0, 0}, up_{0, 0};  // KD loss before / after, each direction
  double english_ce_ = 0.0;   // the LLM's mean English CE over the round's SLM → LLM steps
  double up_masked_ = 0.0;    // positions the confidence threshold masked, SLM → LLM
  double server_s_ = 0.0;
};

}  // namespace tandem

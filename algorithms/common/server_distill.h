// What the coordinator halves that train a model on the coordinator share (distill-up, fedmkt,
// fedcollm): their distillation settings, read from each algorithm's own section, and the
// optimiser of each model they train, kept across rounds and in their checkpoints.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "data/corpus.h"
#include "distill/kd_terms.h"
#include "train/local_trainer.h"

namespace tandem {

class Config;

// What the coordinator's own distillation steps read from their section (distill-up, fedmkt and
// fedcollm train a model on the coordinator against the round's public windows).
struct ServerDistillConfig {
  double temperature = 2.0;  // <section>.temperature
  double alpha = 0.5;        // <section>.alpha: weight of the trained model's CE on the public text
  int windows = 8;           // <section>.windows: public windows per round
  int server_steps = 8;      // <section>.server_steps: the coordinator's steps per round
  int server_batch = 4;      // <section>.server_batch: windows per step
  double server_lr = 3e-4;   // <section>.server_lr: the LLM's AdamW (kept across rounds)
  // The upward algorithms only (ReadLlmObjectiveConfig):
  // <section>.confidence_threshold and .confidence_weighting: distil only on positions whose
  // teacher (the clients' ensemble; in fedcollm, the model teaching in each direction) is
  // confident enough, or weight each position by that confidence (distill/kd_terms.h).
  KdConfidence confidence;
  // <section>.english_weight: the LLM's own CE on windows of the public corpus (English: in the
  // cross-lingual setup, the public categories the LLM was trained on, never the transfer pool),
  // added to its server steps with this weight so that it does not forget English; 0 = off.
  double english_weight = 0.0;
};

// Reads the keys above into *out (its values are the defaults), checking their ranges:
// <section>.temperature, .alpha, .windows, .server_steps, .server_batch, .server_lr.
Status ReadServerDistillConfig(const Config& config, const std::string& section,
                               ServerDistillConfig* out);
// And the keys of the LLM's objective in the upward algorithms (distill-up, fedmkt, fedcollm):
// <section>.confidence_threshold, .confidence_weighting, .english_weight.
Status ReadLlmObjectiveConfig(const Config& config, const std::string& section,
                              ServerDistillConfig* out);

// The LLM's own loss on the public corpus as a term of its server steps (<section>.english_weight):
// `weight` · CE of next-token prediction on random (batch, context) windows of `text`, drawn from
// the trainer's rng.
class PublicTextTerm : public LossTerm {
 public:
  PublicTextTerm(Batcher batcher, float weight);
  std::string name() const override { return "english"; }
  StatusOr<TermLoss> Accumulate(Gpt& model, int64_t step, Rng& rng) override;

 private:
  Batcher batcher_;
  float weight_;
  std::vector<int32_t> tokens_, targets_;  // (B,T)
  std::vector<float> probs_, losses_;      // (B·T,V), (B·T)
};

// The PublicTextTerm of a server's steps when config.english_weight > 0 (else null): windows of
// `context` tokens, config.server_batch at a time, from `english`. Errors: a corpus shorter than
// one window (the message names the key).
StatusOr<std::unique_ptr<PublicTextTerm>> MakeEnglishTerm(const ServerDistillConfig& config,
                                                          const std::string& section,
                                                          const std::vector<Record>& english,
                                                          int context);

// The trainer of a model the coordinator trains (distill-up's and fedmkt's LLM, both directions of
// fedcollm), kept for the whole run: AdamW's moments and step count carry on from one round's
// server steps to the next, as they would in one long training run, instead of restarting (whose
// first steps are full-sized, a jolt to a trained model every round). They are part of the
// coordinator's checkpoint, so a resumed run continues bit for bit.
class ServerOptimizer {
 public:
  // `model` (borrowed, outlives this) with `options` (what trains, AdamW, clipping); `name`
  // prefixes its checkpoint entries ("llm_optimizer": llm_optimizer.adam_m, .adam_v (each the
  // size of what trains) and the metadata llm_optimizer.adam_step).
  ServerOptimizer(std::string name, Gpt* model, TrainerOptions options = {});

  // The trainer for this round's steps: its own step count (which walks the round's windows)
  // starts at 0, the optimiser's state carries on.
  LocalTrainer& BeginRound();

  void Save(std::map<std::string, std::vector<float>>* tensors,
            std::map<std::string, std::string>* metadata) const;
  // Checks that `tensors` and `metadata` hold this optimiser's state (every entry present, the
  // sizes right, the step a non-negative integer) without changing anything; Load applies it.
  // A checkpoint from before the state was kept has no entries and is refused.
  Status Check(const std::map<std::string, std::vector<float>>& tensors,
               const std::map<std::string, std::string>& metadata) const;
  // Check, then the state restored.
  Status Load(const std::map<std::string, std::vector<float>>& tensors,
              const std::map<std::string, std::string>& metadata);

 private:
  std::string name_;
  Gpt* model_;
  TrainerOptions options_;
  std::unique_ptr<LocalTrainer> trainer_;
};

}  // namespace tandem

// The one local trainer (DESIGN.md "Modules", train/): a training step is the sum of several loss
// terms' gradients — cross-entropy on text, distillation to a teacher (distill/kd_terms.h), the
// FedProx proximal term, and whatever an algorithm adds — then global-norm clipping and one AdamW
// step on the parameters that train. Clients, the coordinator's distillation steps and
// centralized training all step through it, so a loss term written once works in all three.
//
// A step, in this order: zero the gradients; each term in the order given adds its gradient (a
// term that runs a forward pass does its backward right after, so terms need no activations of
// one another); clip; AdamW. The order is part of the contract: the same terms, seed and model
// give the same bits.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "data/batcher.h"
#include "models/adamw.h"
#include "models/gpt.h"
#include "models/trainable.h"

namespace tandem {

// What one term reports for one step. `loss` is what the term minimises (its gradient's loss);
// `kl` and `ce` are its parts where it has them (NaN otherwise).
struct TermLoss {
  double loss = 0.0;
  double kl = std::numeric_limits<double>::quiet_NaN();
  double ce = std::numeric_limits<double>::quiet_NaN();
};

class LossTerm {
 public:
  virtual ~LossTerm() = default;
  // Prefix of the term's metrics ("train" for the text's loss: train_loss; "kd": kd_loss, kd_kl).
  virtual std::string name() const = 0;
  // Adds d(term)/d(params) into the model's gradients for step `step` (0-based, counted by the
  // trainer). `rng` is the trainer's, shared by every term of the step in order. A term whose loss
  // is not finite returns it as is: the trainer reports the divergence.
  virtual StatusOr<TermLoss> Accumulate(Gpt& model, int64_t step, Rng& rng) = 0;
  // Called by the trainer before each step with the parameters it trains and their gradients,
  // for terms that act on them directly rather than through a forward pass.
  virtual void Bind(std::span<const float> params, std::span<float> grads) {}
};

// Cross-entropy of next-token prediction on random (B,T) windows of a token stream. Draws one
// batch per step from the trainer's rng.
class TextTerm : public LossTerm {
 public:
  explicit TextTerm(Batcher batcher, std::string name = "train");
  std::string name() const override { return name_; }
  StatusOr<TermLoss> Accumulate(Gpt& model, int64_t step, Rng& rng) override;

 private:
  Batcher batcher_;
  std::string name_;
  std::vector<int32_t> tokens_, targets_;  // (B,T)
};

// FedProx (Li et al. 2020): μ/2·‖w − w_anchor‖² over the trained parameters; its gradient
// μ·(w − w_anchor) is added to theirs.
class ProximalTerm : public LossTerm {
 public:
  // `anchor` is copied; it has the size of the trained parameters.
  ProximalTerm(double mu, std::span<const float> anchor);
  std::string name() const override { return "proximal"; }
  StatusOr<TermLoss> Accumulate(Gpt& model, int64_t step, Rng& rng) override;
  void Bind(std::span<const float> params, std::span<float> grads) override;

 private:
  float mu_;
  std::vector<float> anchor_;
  std::span<const float> params_;
  std::span<float> grads_;
};

struct TrainerOptions {
  // What trains (models/trainable.h), set on the model for the trainer's steps: nullopt is every
  // base parameter; Trainable::AdaptersOnly() the LoRA adapters alone; a set of base tensors
  // (Trainable::Blocks, Trainable::Tensors) only those, the others frozen — no gradient, and
  // neither they nor their optimizer moments move. Base ranges and adapters together are not
  // supported (they live in two buffers).
  std::optional<Trainable> trainable;
  AdamWConfig adamw;
  double grad_clip = 1.0;  // global L2 norm; 0 = off
};

// The mean of each term's losses over the steps taken, by metric name: "<name>_loss" and, where
// the term has them, "<name>_kl" and "<name>_ce".
struct TrainReport {
  int64_t steps = 0;
  std::vector<std::pair<std::string, double>> means;
  // The mean of the named metric; NaN when absent.
  double Mean(const std::string& key) const;
};

class LocalTrainer {
 public:
  // `model` must outlive the trainer. The optimiser's moments live as long as the trainer, so a
  // trainer kept across rounds keeps them (a new one per round starts them afresh).
  LocalTrainer(Gpt* model, TrainerOptions options);

  // One step at learning rate `lr` over `terms` in order. Returns each term's loss. An error
  // (a term's error, or a loss that is not finite: the step is then not taken) leaves the
  // parameters as they were before the step.
  StatusOr<std::vector<TermLoss>> Step(const std::vector<LossTerm*>& terms, float lr, Rng& rng);
  // `steps` steps at a constant learning rate; the report holds the terms' mean losses.
  StatusOr<TrainReport> Run(const std::vector<LossTerm*>& terms, int64_t steps, float lr,
                            Rng& rng);

  std::span<float> params() { return params_; }
  std::span<float> grads() { return grads_; }
  AdamW& optimizer() { return opt_; }
  int64_t steps_taken() const { return step_; }
  // A resumed run continues its count (terms see the step number; errors name it).
  void set_steps_taken(int64_t steps) { step_ = steps; }
  // The trained gradients' global L2 norm at the last step, before clipping.
  double last_grad_norm() const { return last_grad_norm_; }

 private:
  Gpt* model_;
  TrainerOptions options_;
  std::span<float> params_, grads_;
  AdamW opt_;
  std::vector<ParamRange> ranges_;  // of params_ that step; empty: all of them
  int64_t step_ = 0;
  double last_grad_norm_ = 0.0;
};

}  // namespace tandem

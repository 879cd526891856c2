// Distillation as loss terms of the local trainer (train/local_trainer.h): the student learns on
// windows of the public split from a teacher's predictions there — the sparse top-k targets that
// travel down to clients, or dense logits (the clients' ensemble on the coordinator, or a model
// that runs beside the student). The windows are walked in order, a batch at a time, wrapping.
#pragma once

#include <functional>
#include <utility>
#include <string>
#include <vector>

#include "data/public_windows.h"
#include "distill/kd_loss.h"
#include "distill/topk.h"
#include "train/local_trainer.h"

namespace tandem {

// KD to sparse top-k targets (distill/kd_loss.h, KdTopKForward): step s trains on windows
// s·batch .. s·batch + batch − 1 (mod count), their loss scaled by `weight` against the step's
// other terms.
class TopKDistillTerm : public LossTerm {
 public:
  // `targets` holds windows.count() · windows.context() rows, window by window, at
  // options.temperature.
  TopKDistillTerm(PublicWindows windows, TopKTargets targets, KdOptions options, int batch,
                  float weight = 1.0f);
  std::string name() const override { return "kd"; }
  StatusOr<TermLoss> Accumulate(Gpt& model, int64_t step, Rng& rng) override;

 private:
  PublicWindows windows_;
  TopKTargets targets_;
  KdOptions options_;
  int batch_;
  float weight_;
  std::vector<int32_t> tokens_, targets_rows_;  // (batch,T)
  std::vector<int> chosen_;
  std::vector<float> dlogits_;
};

// Writes dense teacher logits (n,T,V) for the n windows first, first + 1, ... (mod count), whose
// tokens (n,T) are given.
using DenseTeacher =
    std::function<void(int first, int n, int T, const int32_t* tokens, float* logits)>;

// The teacher's logits are fixed per window: `logits` holds count · T · V values, window by window.
DenseTeacher FixedTeacher(std::vector<float> logits, int context, int vocab);
// A model beside the student computes them (it must outlive the term and share the vocabulary).
DenseTeacher ModelTeacher(Gpt* teacher);

// Hidden-state matching beside the KD on logits, for a student cut from its teacher model (an
// emulator and its LLM: Offsite-Tuning's and FedBiOT's alignment). The outputs of chosen student
// blocks are pulled toward those of the teacher blocks they stand for, by the normalized squared
// error
//   weight · (1/P) Σ_pairs Σ‖h_s − h_t‖² / Σ‖h_t‖²     (inner sums over the batch's positions),
// whose gradient enters the student at those blocks' outputs (GptWorkspace::HiddenGrad).
// Normalizing by the teacher's own energy makes the term scale-free: 1 is as far as a student
// that outputs zeros.
struct HiddenMatch {
  std::vector<std::pair<int, int>> layers;  // (student block, teacher block); P pairs
  float weight = 0.0f;                      // 0: off
};

// KD to dense teacher logits (KdForward): step s trains on windows s·batch .. (mod count).
class DenseDistillTerm : public LossTerm {
 public:
  DenseDistillTerm(PublicWindows windows, DenseTeacher teacher, KdOptions options, int batch,
                   int vocab);
  // The teacher is a model beside the student (ModelTeacher), whose block outputs `hidden`
  // matches as well. Requires the blocks to exist in both and the same d_model.
  DenseDistillTerm(PublicWindows windows, Gpt* teacher, KdOptions options, int batch,
                   HiddenMatch hidden);
  std::string name() const override { return "kd"; }
  // The loss is the KD loss plus the hidden-state term; kl and ce are the KD loss's parts.
  StatusOr<TermLoss> Accumulate(Gpt& model, int64_t step, Rng& rng) override;
  // The student's loss over all the windows once, batch by batch, without training (the mean of
  // the batches' losses): measured before and after a round's steps on the same data. *hidden,
  // when given, receives the hidden-state term's share of it.
  double MeanLoss(Gpt& student, double* hidden = nullptr);

 private:
  void Fill(int first);  // tokens_, targets_rows_ and teacher_logits_ for a batch from `first`
  // The hidden-state term of the student's last Forward; with grads, its gradient per pair.
  double HiddenLoss(const Gpt& student, std::vector<std::vector<float>>* grads) const;

  PublicWindows windows_;
  DenseTeacher teacher_;
  KdOptions options_;
  int batch_;
  int vocab_;
  std::vector<int32_t> tokens_, targets_rows_;  // (batch,T)
  std::vector<float> teacher_logits_, dlogits_;  // (batch,T,V)
  const Gpt* teacher_model_ = nullptr;           // with hidden-state matching
  HiddenMatch hidden_;
  std::vector<std::vector<float>> teacher_hidden_, hidden_grads_;  // per pair, (batch,T,C)
};

}  // namespace tandem

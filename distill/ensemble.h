// Ensemble teacher targets from several members' (N,V) logits on the same positions (the public
// split, token-aligned exactly by the shared byte vocabulary): the mean of their probabilities
// at temperature T, or the mean of their logits.
//
// Which one, and why tandem defaults to probabilities:
//  - FedDF (Lin et al. 2020, "Ensemble Distillation for Robust Model Fusion in Federated
//    Learning") distils the server model from the AVERAGE OF THE CLIENTS' LOGITS.
//  - FedMKT (Fan et al. 2024) does not average on the way up: per public sample it selects the
//    client whose logits have the lowest cross-entropy to the label (with the LLM's own as the
//    other side of its "dual minimum CE"). That needs each client's logits individually, so it
//    exists only with secure aggregation off; with it on, only a sum reaches the coordinator, and
//    either mean below is what that sum can give.
//  - tandem defaults to the mean of probabilities: it is the mixture of the members' predictive
//    distributions, so a token that any confident member predicts keeps real mass. The mean of
//    logits is a normalised geometric mean of the distributions, which over-sharpens where
//    members disagree: a token that one member rules out is ruled out by the ensemble.
//
// Secure aggregation and DP see only what clients upload and its sum: a client uploads
// EnsembleContribution(mode) of its logits (probabilities at T, or logits), the coordinator
// divides the (noised) sum by the number of members and turns it into teacher logits with
// EnsembleTeacherLogits. EnsembleAccumulator does the same in one process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

// What each client uploads for the round's ensemble, and so how the coordinator forms it
// (<section>.ensemble of distill-up and fedmkt):
//   kMean        its probabilities at T; the ensemble is their plain mean (this file)
//   kConfidence  w·p and w per position; Σw·p / Σw (distill/confidence.h)
//   kVotes       a vote for its top-1 (or top-k) token; the noisy vote histogram (distill/votes.h)
enum class EnsembleUpload { kMean, kConfidence, kVotes };

// "mean", "confidence", "votes": the config's words.
const char* EnsembleUploadName(EnsembleUpload upload);
// Values one client uploads for N positions of V tokens.
size_t EnsembleUploadLength(EnsembleUpload upload, size_t N, size_t V);

enum class EnsembleMode {
  kMeanProbabilities,  // mean of softmax(z/T): a mixture (default)
  kMeanLogits,         // mean of z: a normalised geometric mean of softmax(z/T)
};

// Floor put under mean probabilities before their log: DP noise can push entries to 0 or below.
constexpr double kEnsembleProbFloor = 1e-30;

// out (N,V) = softmax(logits/T) per row (kMeanProbabilities) or a copy of logits (kMeanLogits):
// what one member adds to the sum. Requires T > 0.
void EnsembleContribution(float* out, const float* logits, int N, int V, float temperature,
                          EnsembleMode mode);

// teacher_logits (N,V) from a mean contribution (N,V), such that softmax(teacher_logits / T) is
// the ensemble's distribution at T — so the result feeds KdForward or TopKFromLogits at the same
// T. For probabilities: T·log(p̄), with p̄ clamped at kEnsembleProbFloor and renormalised per row
// (a noisy sum need not lie on the simplex). For logits: a copy. teacher_logits may alias mean.
void EnsembleTeacherLogits(float* teacher_logits, const float* mean, int N, int V,
                           float temperature, EnsembleMode mode);

// A running weighted sum of members' contributions, in double: O(N·V) memory whatever the number
// of members, which are added one at a time. The result does not depend on the order members are
// added in beyond the rounding of the double sums (far below float precision). Not thread-safe.
class EnsembleAccumulator {
 public:
  // Requires N >= 0, V >= 1, T > 0.
  EnsembleAccumulator(int rows, int vocab, float temperature,
                      EnsembleMode mode = EnsembleMode::kMeanProbabilities);

  // Adds one member's logits (N,V) with weight w > 0 (e.g. its example count; 1 for a plain mean).
  void Add(const float* logits, double weight = 1.0);

  int members() const { return members_; }
  double total_weight() const { return total_weight_; }
  int rows() const { return rows_; }
  int vocab() const { return vocab_; }
  float temperature() const { return temperature_; }
  EnsembleMode mode() const { return mode_; }

  // (N,V) weighted mean of the contributions: probabilities at T, or logits. Requires a member.
  std::vector<float> Mean() const;
  // (N,V) teacher logits (see EnsembleTeacherLogits). Requires a member.
  std::vector<float> TeacherLogits() const;

 private:
  int rows_, vocab_;
  float temperature_;
  EnsembleMode mode_;
  std::vector<double> sum_;  // (N,V)
  std::vector<float> scratch_;  // (N,V) one member's contribution
  double total_weight_ = 0.0;
  int members_ = 0;
};

}  // namespace tandem

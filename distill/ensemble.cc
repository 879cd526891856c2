#include "distill/ensemble.h"

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "core/status.h"

namespace tandem {
namespace {

// Mean (N,V) in float or double -> teacher logits; see EnsembleTeacherLogits.
template <typename T>
void TeacherLogitsFromMean(float* out, const T* mean, int N, int V, float temperature,
                           EnsembleMode mode) {
  TANDEM_CHECK(N >= 0 && V >= 1 && std::isfinite(temperature) && temperature > 0.0f);
  if (mode == EnsembleMode::kMeanLogits) {
    for (size_t j = 0; j < static_cast<size_t>(N) * V; ++j) out[j] = static_cast<float>(mean[j]);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const T* p = mean + static_cast<size_t>(i) * V;  // (V)
    float* z = out + static_cast<size_t>(i) * V;     // (V)
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += std::max(static_cast<double>(p[v]), kEnsembleProbFloor);
    const double log_sum = std::log(sum);
    for (int v = 0; v < V; ++v) {
      const double pv = std::max(static_cast<double>(p[v]), kEnsembleProbFloor);
      z[v] = static_cast<float>(temperature * (std::log(pv) - log_sum));
    }
  }
}

}  // namespace

const char* EnsembleUploadName(EnsembleUpload upload) {
  switch (upload) {
    case EnsembleUpload::kMean: return "mean";
    case EnsembleUpload::kConfidence: return "confidence";
    case EnsembleUpload::kVotes: return "votes";
  }
  return "?";
}

size_t EnsembleUploadLength(EnsembleUpload upload, size_t N, size_t V) {
  return upload == EnsembleUpload::kConfidence ? N * V + N : N * V;
}

void EnsembleContribution(float* out, const float* logits, int N, int V, float temperature,
                          EnsembleMode mode) {
  TANDEM_CHECK(N >= 0 && V >= 1 && std::isfinite(temperature) && temperature > 0.0f);
  if (mode == EnsembleMode::kMeanLogits) {
    std::copy(logits, logits + static_cast<size_t>(N) * V, out);
    return;
  }
  const double inv_t = 1.0 / temperature;
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* z = logits + static_cast<size_t>(i) * V;  // (V)
    float* p = out + static_cast<size_t>(i) * V;           // (V)
    const double mx = *std::max_element(z, z + V);
    double sum = 0.0;
    for (int v = 0; v < V; ++v) sum += std::exp((z[v] - mx) * inv_t);
    for (int v = 0; v < V; ++v) p[v] = static_cast<float>(std::exp((z[v] - mx) * inv_t) / sum);
  }
}

void EnsembleTeacherLogits(float* teacher_logits, const float* mean, int N, int V,
                           float temperature, EnsembleMode mode) {
  TeacherLogitsFromMean(teacher_logits, mean, N, V, temperature, mode);
}

EnsembleAccumulator::EnsembleAccumulator(int rows, int vocab, float temperature,
                                         EnsembleMode mode)
    : rows_(rows), vocab_(vocab), temperature_(temperature), mode_(mode) {
  TANDEM_CHECK(rows >= 0 && vocab >= 1 && std::isfinite(temperature) && temperature > 0.0f);
  sum_.assign(static_cast<size_t>(rows) * vocab, 0.0);
  scratch_.resize(sum_.size());
}

void EnsembleAccumulator::Add(const float* logits, double weight) {
  TANDEM_CHECK(std::isfinite(weight) && weight > 0.0);
  EnsembleContribution(scratch_.data(), logits, rows_, vocab_, temperature_, mode_);
  const size_t n = sum_.size();
#pragma omp parallel for schedule(static)
  for (size_t j = 0; j < n; ++j) sum_[j] += weight * scratch_[j];
  total_weight_ += weight;
  ++members_;
}

std::vector<float> EnsembleAccumulator::Mean() const {
  TANDEM_CHECK(members_ > 0);
  std::vector<float> mean(sum_.size());
  for (size_t j = 0; j < sum_.size(); ++j) mean[j] = static_cast<float>(sum_[j] / total_weight_);
  return mean;
}

std::vector<float> EnsembleAccumulator::TeacherLogits() const {
  TANDEM_CHECK(members_ > 0);
  std::vector<double> mean(sum_.size());
  for (size_t j = 0; j < sum_.size(); ++j) mean[j] = sum_[j] / total_weight_;
  std::vector<float> out(sum_.size());
  TeacherLogitsFromMean(out.data(), mean.data(), rows_, vocab_, temperature_, mode_);
  return out;
}

}  // namespace tandem

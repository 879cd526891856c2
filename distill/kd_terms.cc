// Distillation loss terms; see distill/kd_terms.h.
#include "distill/kd_terms.h"

#include <algorithm>
#include <cmath>

namespace tandem {

TopKDistillTerm::TopKDistillTerm(PublicWindows windows, TopKTargets targets, KdOptions options,
                                 int batch, float weight)
    : windows_(std::move(windows)), targets_(std::move(targets)), options_(options),
      batch_(batch), weight_(weight),
      tokens_(static_cast<size_t>(batch) * windows_.context()), targets_rows_(tokens_.size()),
      chosen_(batch) {
  TANDEM_CHECK(batch >= 1);
  TANDEM_CHECK(targets_.rows == windows_.count() * windows_.context());
}

StatusOr<TermLoss> TopKDistillTerm::Accumulate(Gpt& model, int64_t step, Rng&) {
  const int T = windows_.context(), W = windows_.count(), V = model.config().vocab;
  const int first = static_cast<int>((step * batch_) % W);
  for (int b = 0; b < batch_; ++b) chosen_[b] = (first + b) % W;
  windows_.GatherRun(first, batch_, tokens_.data(), targets_rows_.data());
  // The chosen windows' rows of the targets, in batch order.
  TopKTargets teacher;
  teacher.k = targets_.k;
  teacher.vocab = targets_.vocab;
  teacher.temperature = targets_.temperature;
  teacher.rows = batch_ * T;
  for (int w : chosen_) {
    const TopKTargets part = SliceTopK(targets_, w * T, T);
    teacher.indices.insert(teacher.indices.end(), part.indices.begin(), part.indices.end());
    teacher.probs.insert(teacher.probs.end(), part.probs.begin(), part.probs.end());
    teacher.tail.insert(teacher.tail.end(), part.tail.begin(), part.tail.end());
  }
  const int N = batch_ * T;
  model.Forward(tokens_.data(), nullptr, batch_, T);
  const KdLoss l = KdTopKForward(model.logits(), teacher, targets_rows_.data(), N, V, options_);
  TermLoss out{l.loss, l.kl, l.ce};
  if (!std::isfinite(l.loss)) return out;
  dlogits_.resize(static_cast<size_t>(N) * V);
  KdTopKBackward(dlogits_.data(), model.logits(), teacher, targets_rows_.data(), N, V, options_,
                 l.count, weight_);
  model.BackwardFromLogits(dlogits_.data());
  return out;
}

DenseTeacher FixedTeacher(std::vector<float> logits, int context, int vocab) {
  const size_t per_window = static_cast<size_t>(context) * vocab;
  TANDEM_CHECK(per_window > 0 && logits.size() % per_window == 0);
  const int count = static_cast<int>(logits.size() / per_window);
  return [logits = std::move(logits), per_window, count, context](int first, int n, int T,
                                                                  const int32_t*, float* out) {
    TANDEM_CHECK(T == context);
    for (int b = 0; b < n; ++b) {
      const size_t w = static_cast<size_t>((first + b) % count);
      std::copy(logits.begin() + w * per_window, logits.begin() + (w + 1) * per_window,
                out + b * per_window);
    }
  };
}

DenseTeacher ModelTeacher(Gpt* teacher) {
  return [teacher](int, int n, int T, const int32_t* tokens, float* out) {
    teacher->Forward(tokens, nullptr, n, T);
    const size_t size = static_cast<size_t>(n) * T * teacher->config().vocab;
    std::copy(teacher->logits(), teacher->logits() + size, out);
  };
}

DenseDistillTerm::DenseDistillTerm(PublicWindows windows, DenseTeacher teacher,
                                   KdOptions options, int batch, int vocab)
    : windows_(std::move(windows)), teacher_(std::move(teacher)), options_(options),
      batch_(batch), vocab_(vocab),
      tokens_(static_cast<size_t>(batch) * windows_.context()), targets_rows_(tokens_.size()),
      teacher_logits_(tokens_.size() * vocab), dlogits_(teacher_logits_.size()) {
  TANDEM_CHECK(batch >= 1);
}

DenseDistillTerm::DenseDistillTerm(PublicWindows windows, Gpt* teacher, KdOptions options,
                                   int batch, HiddenMatch hidden)
    : DenseDistillTerm(std::move(windows), ModelTeacher(teacher), options, batch,
                       teacher->config().vocab) {
  teacher_model_ = teacher;
  hidden_ = std::move(hidden);
  if (hidden_.weight == 0.0f) hidden_.layers.clear();
  const size_t rows = tokens_.size(), C = static_cast<size_t>(teacher->config().d_model);
  for (const auto& [s, t] : hidden_.layers) {
    TANDEM_CHECK(t >= 0 && t < teacher->config().n_layer && s >= 0);
    teacher_hidden_.emplace_back(rows * C);
    hidden_grads_.emplace_back(rows * C);
  }
}

void DenseDistillTerm::Fill(int first) {
  windows_.GatherRun(first, batch_, tokens_.data(), targets_rows_.data());
  teacher_(first, batch_, windows_.context(), tokens_.data(), teacher_logits_.data());
  // The teacher model has just run on these windows: keep its block outputs.
  for (size_t k = 0; k < hidden_.layers.size(); ++k) {
    const float* h = teacher_model_->workspace().block_activations(hidden_.layers[k].second).output;
    std::copy(h, h + teacher_hidden_[k].size(), teacher_hidden_[k].begin());
  }
}

double DenseDistillTerm::HiddenLoss(const Gpt& student,
                                    std::vector<std::vector<float>>* grads) const {
  const size_t P = hidden_.layers.size();
  if (P == 0) return 0.0;
  TANDEM_CHECK(student.config().d_model == teacher_model_->config().d_model);
  double loss = 0.0;
  for (size_t k = 0; k < P; ++k) {
    const int layer = hidden_.layers[k].first;
    TANDEM_CHECK(layer < student.config().n_layer);
    const float* hs = student.workspace().block_activations(layer).output;
    const std::vector<float>& ht = teacher_hidden_[k];
    double diff = 0.0, energy = 0.0;
    for (size_t i = 0; i < ht.size(); ++i) {
      const double d = static_cast<double>(hs[i]) - ht[i];
      diff += d * d;
      energy += static_cast<double>(ht[i]) * ht[i];
    }
    energy = std::max(energy, 1e-30);
    loss += hidden_.weight * diff / energy / static_cast<double>(P);
    if (grads != nullptr) {
      const double scale = 2.0 * hidden_.weight / energy / static_cast<double>(P);
      std::vector<float>& g = (*grads)[k];
      for (size_t i = 0; i < ht.size(); ++i) {
        g[i] = static_cast<float>(scale * (static_cast<double>(hs[i]) - ht[i]));
      }
    }
  }
  return loss;
}

StatusOr<TermLoss> DenseDistillTerm::Accumulate(Gpt& model, int64_t step, Rng&) {
  const int T = windows_.context(), N = batch_ * T;
  Fill(static_cast<int>((step * batch_) % windows_.count()));
  model.Forward(tokens_.data(), nullptr, batch_, T);
  const KdLoss l = KdForward(model.logits(), teacher_logits_.data(), targets_rows_.data(), N,
                             vocab_, options_);
  TermLoss out{l.loss, l.kl, l.ce};
  if (hidden_.layers.empty()) {
    if (!std::isfinite(l.loss)) return out;
    KdBackward(dlogits_.data(), model.logits(), teacher_logits_.data(), targets_rows_.data(), N,
               vocab_, options_, l.count);
    model.BackwardFromLogits(dlogits_.data());
    return out;
  }
  out.loss += HiddenLoss(model, &hidden_grads_);
  if (!std::isfinite(out.loss)) return out;
  KdBackward(dlogits_.data(), model.logits(), teacher_logits_.data(), targets_rows_.data(), N,
             vocab_, options_, l.count);
  std::vector<GptWorkspace::HiddenGrad> at_blocks;
  for (size_t k = 0; k < hidden_.layers.size(); ++k) {
    at_blocks.push_back({hidden_.layers[k].first, hidden_grads_[k].data()});
  }
  model.BackwardFromLogits(dlogits_.data(), at_blocks);
  return out;
}

double DenseDistillTerm::MeanLoss(Gpt& student, double* hidden) {
  const int T = windows_.context(), N = batch_ * T, W = windows_.count();
  double sum = 0.0, hidden_sum = 0.0;
  int batches = 0;
  for (int first = 0; first < W; first += batch_, ++batches) {
    Fill(first);
    student.Forward(tokens_.data(), nullptr, batch_, T);
    const double h = HiddenLoss(student, nullptr);
    hidden_sum += h;
    sum += KdForward(student.logits(), teacher_logits_.data(), targets_rows_.data(), N, vocab_,
                     options_).loss + h;
  }
  if (hidden != nullptr) *hidden = hidden_sum / batches;
  return sum / batches;
}

}  // namespace tandem

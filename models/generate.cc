#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "models/cross_entropy.h"
#include "models/layernorm.h"
#include "models/tensor_map.h"
#include "models/tokenizer.h"

namespace tandem {
namespace {

void LayerNormRow(float* out, const float* x, const float* w, const float* b, int C) {
  float m = 0.0f, v = 0.0f;
  for (int c = 0; c < C; ++c) m += x[c];
  m /= C;
  for (int c = 0; c < C; ++c) v += (x[c] - m) * (x[c] - m);
  const float s = 1.0f / std::sqrt(v / C + kLayerNormEps);
  for (int c = 0; c < C; ++c) out[c] = (x[c] - m) * s * w[c] + b[c];
}

// out (OC) = x (C) @ w (C,OC) + b (OC)
void RowTimes(float* out, const float* x, const float* w, const float* b, int C, int OC) {
  detail::RowVecMap(out, OC).noalias() =
      detail::ConstRowVecMap(x, C) * detail::ConstMatMap(w, C, OC) + detail::ConstRowVecMap(b, OC);
}

}  // namespace

Status SamplingConfig::Validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    return Status::InvalidArgument("temperature must be >= 0");
  }
  if (top_k < 0) return Status::InvalidArgument("top_k must be >= 0");
  return Status::Ok();
}

int32_t SampleToken(const float* logits, int V, const SamplingConfig& sampling, Rng& rng) {
  if (sampling.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  }
  std::vector<int32_t> ids(V);
  for (int i = 0; i < V; ++i) ids[i] = i;
  int k = V;
  if (sampling.top_k > 0 && sampling.top_k < V) {
    k = sampling.top_k;
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  }
  float mx = -INFINITY;
  for (int i = 0; i < k; ++i) mx = std::max(mx, logits[ids[i]]);
  std::vector<double> p(k);
  double sum = 0.0;
  for (int i = 0; i < k; ++i) {
    p[i] = std::exp((logits[ids[i]] - mx) / sampling.temperature);
    sum += p[i];
  }
  double u = rng.Uniform() * sum;
  for (int i = 0; i < k; ++i) {
    u -= p[i];
    if (u <= 0.0) return ids[i];
  }
  return ids[k - 1];
}

Generator::Generator(const Gpt& model) : model_(model) {
  TANDEM_CHECK(!model.has_lora() || model.lora_merged());
  const ModelConfig& c = model.config();
  const size_t C = c.d_model;
  k_cache_.assign(static_cast<size_t>(c.n_layer) * c.context * C, 0.0f);
  v_cache_.assign(k_cache_.size(), 0.0f);
  x_.resize(C);
  ln_.resize(C);
  qkv_.resize(3 * C);
  atty_.resize(C);
  fch_.resize(4 * C);
  scores_.resize(c.context);
  logits_.resize(c.vocab);
}

void Generator::Reset() {
  pos_ = 0;
  history_.clear();
}

const float* Generator::Feed(int32_t token) {
  const int context = model_.config().context;
  if (pos_ == context) {
    // Full: keep the most recent half and rebuild the cache for it.
    // Keep the most recent half, leaving at least one free position for the new token.
    const int keep = std::min(context / 2, context - 1);
    std::vector<int32_t> recent(history_.end() - keep, history_.end());
    Reset();
    for (int32_t t : recent) {
      Step(t, pos_);
      history_.push_back(t);
      ++pos_;
    }
  }
  const float* out = Step(token, pos_);
  history_.push_back(token);
  ++pos_;
  return out;
}

const float* Generator::Step(int32_t token, int pos) {
  const ModelConfig& c = model_.config();
  const int C = c.d_model, NH = c.n_head, hd = C / NH, V = c.vocab;
  TANDEM_CHECK(token >= 0 && token < V && pos < c.context);
  const float* wte = model_.param("wte.weight");
  const float* wpe = model_.param("wpe.weight");
  for (int i = 0; i < C; ++i) x_[i] = wte[static_cast<size_t>(token) * C + i] + wpe[static_cast<size_t>(pos) * C + i];
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int l = 0; l < c.n_layer; ++l) {
    const BlockWeights w = model_.block(l);
    float* kc = k_cache_.data() + static_cast<size_t>(l) * c.context * C;
    float* vc = v_cache_.data() + static_cast<size_t>(l) * c.context * C;
    LayerNormRow(ln_.data(), x_.data(), w.ln1_w, w.ln1_b, C);
    RowTimes(qkv_.data(), ln_.data(), w.qkv_w, w.qkv_b, C, 3 * C);
    std::memcpy(kc + static_cast<size_t>(pos) * C, qkv_.data() + C, sizeof(float) * C);
    std::memcpy(vc + static_cast<size_t>(pos) * C, qkv_.data() + 2 * C, sizeof(float) * C);
    for (int h = 0; h < NH; ++h) {
      const float* q = qkv_.data() + h * hd;
      float mx = -INFINITY;
      for (int j = 0; j <= pos; ++j) {
        const float* k = kc + static_cast<size_t>(j) * C + h * hd;
        float s = 0.0f;
        for (int d = 0; d < hd; ++d) s += q[d] * k[d];
        scores_[j] = s * scale;
        mx = std::max(mx, scores_[j]);
      }
      float sum = 0.0f;
      for (int j = 0; j <= pos; ++j) {
        scores_[j] = std::exp(scores_[j] - mx);
        sum += scores_[j];
      }
      float* y = atty_.data() + h * hd;
      std::fill(y, y + hd, 0.0f);
      for (int j = 0; j <= pos; ++j) {
        const float a = scores_[j] / sum;
        const float* v = vc + static_cast<size_t>(j) * C + h * hd;
        for (int d = 0; d < hd; ++d) y[d] += a * v[d];
      }
    }
    RowTimes(ln_.data(), atty_.data(), w.proj_w, w.proj_b, C, C);
    for (int i = 0; i < C; ++i) x_[i] += ln_[i];
    LayerNormRow(ln_.data(), x_.data(), w.ln2_w, w.ln2_b, C);
    RowTimes(fch_.data(), ln_.data(), w.fc_w, w.fc_b, C, 4 * C);
    for (auto& f : fch_) {
      f = 0.5f * f * (1.0f + std::tanh(0.7978845608028654f * (f + 0.044715f * f * f * f)));
    }
    RowTimes(ln_.data(), fch_.data(), w.fcproj_w, w.fcproj_b, 4 * C, C);
    for (int i = 0; i < C; ++i) x_[i] += ln_[i];
  }
  LayerNormRow(ln_.data(), x_.data(), model_.param("ln_f.weight"), model_.param("ln_f.bias"), C);
  detail::VecMap(logits_.data(), V).noalias() =
      detail::ConstMatMap(wte, V, C) * detail::ConstVecMap(ln_.data(), C);
  return logits_.data();
}

std::vector<int32_t> Generator::Generate(const std::vector<int32_t>& prompt, int max_new_tokens,
                                         const SamplingConfig& sampling, Rng& rng,
                                         int32_t stop_token) {
  TANDEM_CHECK(!prompt.empty());
  Reset();
  const float* logits = nullptr;
  for (int32_t t : prompt) logits = Feed(t);
  std::vector<int32_t> out;
  for (int i = 0; i < max_new_tokens; ++i) {
    const int32_t next = SampleToken(logits, model_.config().vocab, sampling, rng);
    out.push_back(next);
    if (next == ByteTokenizer::kEndOfText || next == stop_token) break;
    logits = Feed(next);
  }
  return out;
}

}  // namespace tandem

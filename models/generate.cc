#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "models/cross_entropy.h"
#include "models/tokenizer.h"

namespace tandem {

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

Generator::Generator(const Gpt& model) : Generator(model.shared_weights()) {}

Generator::Generator(std::shared_ptr<const GptWeights> weights) : workspace_(std::move(weights)) {}

void Generator::Reset() {
  workspace_.Truncate(0);
  history_.clear();
}

void Generator::Truncate(int position) {
  workspace_.Truncate(position);
  history_.resize(position);
}

const float* Generator::Feed(int32_t token) { return FeedMany(&token, 1); }

const float* Generator::FeedMany(const int32_t* tokens, int k) {
  const int context = workspace_.config().context;
  TANDEM_CHECK(k >= 1 && k <= context);
  if (position() + k > context) {
    // Full: keep the most recent tokens (half the context, leaving room for the new ones) and
    // rebuild the cache for them in one pass.
    const int keep = std::min({context / 2, context - k, position()});
    std::vector<int32_t> recent(history_.end() - keep, history_.end());
    Reset();
    if (keep > 0) {
      workspace_.Decode(recent.data(), keep);
      history_ = recent;
    }
  }
  const float* out = workspace_.Decode(tokens, k);
  history_.insert(history_.end(), tokens, tokens + k);
  return out;
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
    const int32_t next = SampleToken(logits, workspace_.config().vocab, sampling, rng);
    out.push_back(next);
    if (next == ByteTokenizer::kEndOfText || next == stop_token) break;
    logits = Feed(next);
  }
  return out;
}

}  // namespace tandem

#include "route/speculative.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "models/tokenizer.h"

namespace tandem {

Verdict SpeculativeAccept(std::span<const int32_t> draft, std::span<const float> q,
                          std::span<const float> p, int V, Rng& rng) {
  const int gamma = static_cast<int>(draft.size());
  TANDEM_CHECK(q.size() == static_cast<size_t>(gamma) * V);
  TANDEM_CHECK(p.size() == static_cast<size_t>(gamma + 1) * V);
  std::vector<float> residual(V);
  for (int i = 0; i < gamma; ++i) {
    const float* qi = q.data() + static_cast<size_t>(i) * V;
    const float* pi = p.data() + static_cast<size_t>(i) * V;
    const int32_t x = draft[i];
    // Accept with probability min(1, p/q), written without the division: u·q < p.
    if (rng.Uniform() * qi[x] < pi[x]) continue;
    double mass = 0.0;
    for (int v = 0; v < V; ++v) {
      residual[v] = std::max(0.0f, pi[v] - qi[v]);
      mass += residual[v];
    }
    // A rejection means p(x) < q(x), so p ≠ q and the residual has mass; rounding can still
    // leave none, and then p itself is the closest distribution to draw from.
    const std::span<const float> from =
        mass > 0.0 ? std::span<const float>(residual) : std::span<const float>(pi, V);
    return Verdict{i, SampleFromProbs(from, rng)};
  }
  return Verdict{gamma, SampleFromProbs(p.subspan(static_cast<size_t>(gamma) * V, V), rng)};
}

Status ValidateDraft(std::span<const int32_t> context, std::span<const int32_t> draft,
                     std::span<const float> q, int vocab, int context_length) {
  if (context.empty()) return Status::InvalidArgument("verify: the context is empty");
  if (context.size() + draft.size() > static_cast<size_t>(context_length)) {
    return Status::InvalidArgument("verify: context of " + std::to_string(context.size()) +
                                   " tokens and a draft of " + std::to_string(draft.size()) +
                                   " exceed the verifier's context of " +
                                   std::to_string(context_length));
  }
  if (q.size() != draft.size() * static_cast<size_t>(vocab)) {
    return Status::InvalidArgument("verify: q holds " + std::to_string(q.size()) +
                                   " values, expected draft length " +
                                   std::to_string(draft.size()) + " x vocab " +
                                   std::to_string(vocab));
  }
  for (int32_t t : context) {
    if (t < 0 || t >= vocab) {
      return Status::InvalidArgument("verify: context token " + std::to_string(t) +
                                     " outside [0, " + std::to_string(vocab) + ")");
    }
  }
  for (size_t i = 0; i < draft.size(); ++i) {
    const int32_t t = draft[i];
    if (t < 0 || t >= vocab) {
      return Status::InvalidArgument("verify: draft token " + std::to_string(t) + " outside [0, " +
                                     std::to_string(vocab) + ")");
    }
    const float* row = q.data() + i * vocab;
    double sum = 0.0;
    for (int v = 0; v < vocab; ++v) {
      if (!std::isfinite(row[v]) || row[v] < 0.0f) {
        return Status::InvalidArgument("verify: q row " + std::to_string(i) +
                                       " holds a value that is negative or not finite");
      }
      sum += row[v];
    }
    if (std::abs(sum - 1.0) > 1e-3) {
      return Status::InvalidArgument("verify: q row " + std::to_string(i) + " sums to " +
                                     std::to_string(sum) + ", not 1");
    }
    if (!(row[t] > 0.0f)) {
      return Status::InvalidArgument("verify: draft token " + std::to_string(i) +
                                     " has probability 0 under its q row");
    }
  }
  return Status::Ok();
}

LocalVerifier::LocalVerifier(std::shared_ptr<const GptWeights> weights, SamplingOptions sampling,
                             uint64_t seed)
    : workspace_(std::move(weights)), sampling_(sampling), rng_(seed) {
  TANDEM_CHECK(sampling_.Validate().ok());
}

void LocalVerifier::Reseed(const SamplingOptions& sampling, uint64_t seed) {
  TANDEM_CHECK(sampling.Validate().ok());
  sampling_ = sampling;
  rng_ = Rng(seed);
}

StatusOr<Verdict> LocalVerifier::Verify(std::span<const int32_t> context,
                                        std::span<const int32_t> draft, std::span<const float> q) {
  const int V = vocab();
  TANDEM_RETURN_IF_ERROR(ValidateDraft(context, draft, q, V, context_length()));
  const int len = static_cast<int>(context.size()), gamma = static_cast<int>(draft.size());
  // Keep the cached prefix this sequence shares, but re-feed at least the context's last token:
  // its logits row is p's first.
  int keep = 0;
  while (keep < len - 1 && keep < static_cast<int>(history_.size()) &&
         history_[keep] == context[keep]) {
    ++keep;
  }
  workspace_.Truncate(keep);
  history_.assign(context.begin(), context.end());
  history_.insert(history_.end(), draft.begin(), draft.end());
  const int k = len - keep + gamma;
  const float* logits = workspace_.Decode(history_.data() + keep, k);  // (k,V)
  // Row len-1-keep predicts the token after the context, i.e. draft[0].
  const float* first = logits + static_cast<size_t>(len - 1 - keep) * V;
  p_.resize(static_cast<size_t>(gamma + 1) * V);
  for (int i = 0; i <= gamma; ++i) {
    SamplingProbs(first + static_cast<size_t>(i) * V, V, sampling_,
                  p_.data() + static_cast<size_t>(i) * V);
  }
  const Verdict verdict = SpeculativeAccept(draft, q, p_, V, rng_);
  // Roll the cache back to the accepted prefix; `next` is fed with the next call's context.
  workspace_.Truncate(len + verdict.accepted);
  history_.resize(len + verdict.accepted);
  return verdict;
}

Status SpeculativeOptions::Validate() const {
  if (gamma < 1) return Status::InvalidArgument("speculative gamma must be >= 1");
  return sampling.Validate();
}

double SpeculativeStats::acceptance_rate() const {
  return drafted > 0 ? static_cast<double>(accepted) / drafted
                     : std::numeric_limits<double>::quiet_NaN();
}

double SpeculativeStats::tokens_per_call() const {
  return verifier_calls > 0 ? static_cast<double>(generated) / verifier_calls
                            : std::numeric_limits<double>::quiet_NaN();
}

SpeculativeDecoder::SpeculativeDecoder(std::shared_ptr<const GptWeights> device,
                                       Verifier* verifier, SpeculativeOptions options)
    : workspace_(std::move(device)), verifier_(verifier), options_(options) {
  TANDEM_CHECK(verifier_ != nullptr);
}

StatusOr<std::vector<int32_t>> SpeculativeDecoder::Generate(std::span<const int32_t> prompt,
                                                            int max_new_tokens, Rng& rng,
                                                            int32_t stop_token) {
  TANDEM_RETURN_IF_ERROR(options_.Validate());
  const int V = workspace_.config().vocab;
  if (verifier_->vocab() != V) {
    return Status::InvalidArgument("speculative decoding: the device's vocabulary (" +
                                   std::to_string(V) + ") differs from the verifier's (" +
                                   std::to_string(verifier_->vocab()) + ")");
  }
  const int cloud_ctx = verifier_->context_length(), device_ctx = workspace_.config().context;
  if (prompt.empty() || prompt.size() > static_cast<size_t>(cloud_ctx)) {
    return Status::InvalidArgument("speculative decoding: the prompt has " +
                                   std::to_string(prompt.size()) +
                                   " tokens; it needs 1 to the verifier's context of " +
                                   std::to_string(cloud_ctx));
  }
  for (int32_t t : prompt) {
    if (t < 0 || t >= V) {
      return Status::InvalidArgument("speculative decoding: prompt token " + std::to_string(t) +
                                     " outside [0, " + std::to_string(V) + ")");
    }
  }
  std::vector<int32_t> seq(prompt.begin(), prompt.end());
  const size_t start = seq.size();
  workspace_.Truncate(0);
  std::vector<int32_t> draft;
  while (static_cast<int>(seq.size() - start) < max_new_tokens &&
         static_cast<int>(seq.size()) < cloud_ctx) {
    const int len = static_cast<int>(seq.size());
    const int remaining = max_new_tokens - static_cast<int>(seq.size() - start);
    // The verifier holds context + draft; the device context + all drafts but the last. A draft
    // never outruns max_new_tokens: the verdict adds one token of its own.
    const int gamma = std::max(
        0, std::min({options_.gamma, remaining - 1, cloud_ctx - len, device_ctx - len + 1}));
    draft.resize(gamma);
    q_.resize(static_cast<size_t>(gamma) * V);
    if (gamma > 0) {
      const int cached = std::min(workspace_.position(), len - 1);
      workspace_.Truncate(cached);
      const float* logits = workspace_.Decode(seq.data() + cached, len - cached);
      logits += static_cast<size_t>(len - cached - 1) * V;
      for (int i = 0; i < gamma; ++i) {
        float* qi = q_.data() + static_cast<size_t>(i) * V;
        SamplingProbs(logits, V, options_.sampling, qi);
        draft[i] = SampleFromProbs(std::span<const float>(qi, V), rng);
        if (i + 1 < gamma) logits = workspace_.Decode(&draft[i], 1);
      }
    }
    TANDEM_ASSIGN_OR_RETURN(Verdict verdict, verifier_->Verify(seq, draft, q_));
    if (verdict.accepted < 0 || verdict.accepted > gamma || verdict.next < 0 ||
        verdict.next >= V) {
      return Status::Internal("speculative decoding: the verifier answered " +
                              std::to_string(verdict.accepted) + " accepted of " +
                              std::to_string(gamma) + " and next token " +
                              std::to_string(verdict.next));
    }
    ++stats_.verifier_calls;
    stats_.drafted += gamma;
    stats_.accepted += verdict.accepted;
    // The device keeps the context and the accepted drafts it has fed.
    workspace_.Truncate(std::min(workspace_.position(), len + verdict.accepted));
    seq.insert(seq.end(), draft.begin(), draft.begin() + verdict.accepted);
    seq.push_back(verdict.next);
    for (size_t i = len; i < seq.size(); ++i) {
      if (seq[i] == ByteTokenizer::kEndOfText || seq[i] == stop_token) {
        seq.resize(i + 1);
        stats_.generated += static_cast<int64_t>(seq.size()) - len;
        return std::vector<int32_t>(seq.begin() + start, seq.end());
      }
    }
    stats_.generated += static_cast<int64_t>(seq.size()) - len;
  }
  return std::vector<int32_t>(seq.begin() + start, seq.end());
}

}  // namespace tandem

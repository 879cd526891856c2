// Language-modelling batches over a token stream: the records of a split, byte-tokenized and
// joined with an end-of-text token after each, cut into (B,T) windows whose targets are the
// tokens shifted by one — random windows for training, a deterministic walk for held-out loss.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "models/cross_entropy.h"  // kIgnoreTarget
#include "data/corpus.h"

namespace tandem {


// An immutable token stream. Copies share the tokens, so a TokenDataset is cheap to pass around
// and safe to read from many threads.
class TokenDataset {
 public:
  TokenDataset() : TokenDataset(std::vector<int32_t>{}) {}
  explicit TokenDataset(std::vector<int32_t> tokens);

  // Each record's text as bytes (ByteTokenizer), followed by ByteTokenizer::kEndOfText.
  static TokenDataset FromRecords(const std::vector<Record>& records);

  const std::vector<int32_t>& tokens() const { return *tokens_; }
  size_t size() const { return tokens_->size(); }

 private:
  std::shared_ptr<const std::vector<int32_t>> tokens_;
};

// Random training windows. Each row is tokens[s .. s+T) with targets tokens[s+1 .. s+T], s drawn
// uniformly from the N-T possible starts. Stateless apart from the caller's Rng, so the same Rng
// state gives the same batch; thread-safe for distinct Rngs.
class Batcher {
 public:
  // Errors: batch or context < 1, or a stream shorter than context + 1 tokens.
  static StatusOr<Batcher> Create(TokenDataset data, int batch, int context);

  // Fills tokens and targets, each (B,T) row-major, from `rng`.
  void Next(Rng* rng, int32_t* tokens, int32_t* targets) const;

  int batch() const { return batch_; }
  int context() const { return context_; }
  const TokenDataset& data() const { return data_; }

 private:
  Batcher(TokenDataset data, int batch, int context)
      : data_(std::move(data)), batch_(batch), context_(context) {}
  TokenDataset data_;
  int batch_;
  int context_;
};

// The whole stream once, for held-out loss: window w holds tokens [wT, wT+T) and targets
// [wT+1, wT+T+1), so every one of the N-1 predictable positions is a target exactly once. The
// last window is padded (token kEndOfText, target kIgnoreTarget). Windows are handed out B at a
// time; rows past the last window are all padding. The loss over the stream is the sum of the
// per-batch summed losses divided by num_targets().
class EvalWindows {
 public:
  // Errors: batch or context < 1, or a stream with fewer than 2 tokens (nothing to predict).
  static StatusOr<EvalWindows> Create(TokenDataset data, int batch, int context);

  // Fills tokens and targets (each (B,T) row-major) with the next B windows and returns how many
  // rows hold real windows; 0 when the stream is exhausted (the arrays are then all padding).
  int Next(int32_t* tokens, int32_t* targets);
  // Back to the first window.
  void Reset() { next_window_ = 0; }

  size_t num_windows() const { return num_windows_; }
  // Number of non-ignored targets over the whole walk: size() - 1.
  size_t num_targets() const { return data_.size() - 1; }
  int batch() const { return batch_; }
  int context() const { return context_; }

 private:
  EvalWindows(TokenDataset data, int batch, int context);
  TokenDataset data_;
  int batch_;
  int context_;
  size_t num_windows_;
  size_t next_window_ = 0;
};

}  // namespace tandem

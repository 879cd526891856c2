// Token streams, random training windows and the evaluation walk (see batcher.h).

#include "data/batcher.h"

#include <algorithm>
#include <string>

#include "models/tokenizer.h"

namespace tandem {
namespace {

Status CheckShape(int batch, int context) {
  if (batch < 1 || context < 1) {
    return Status::InvalidArgument("batch size " + std::to_string(batch) + " and context " +
                                   std::to_string(context) + " must both be at least 1");
  }
  return Status::Ok();
}

}  // namespace

TokenDataset::TokenDataset(std::vector<int32_t> tokens)
    : tokens_(std::make_shared<const std::vector<int32_t>>(std::move(tokens))) {}

TokenDataset TokenDataset::FromRecords(const std::vector<Record>& records) {
  size_t total = 0;
  for (const Record& r : records) total += r.text.size() + 1;
  std::vector<int32_t> tokens;
  tokens.reserve(total);
  for (const Record& r : records) {
    ByteTokenizer::EncodeAppend(r.text, &tokens);
    tokens.push_back(ByteTokenizer::kEndOfText);
  }
  return TokenDataset(std::move(tokens));
}

StatusOr<Batcher> Batcher::Create(TokenDataset data, int batch, int context) {
  TANDEM_RETURN_IF_ERROR(CheckShape(batch, context));
  if (data.size() < static_cast<size_t>(context) + 1) {
    return Status::InvalidArgument(
        "token stream of " + std::to_string(data.size()) + " tokens is too short for context " +
        std::to_string(context) + " (a training window needs context + 1 = " +
        std::to_string(context + 1) + " tokens); use a smaller context or more records");
  }
  return Batcher(std::move(data), batch, context);
}

void Batcher::Next(Rng* rng, int32_t* tokens, int32_t* targets) const {
  const std::vector<int32_t>& s = data_.tokens();
  const size_t t = static_cast<size_t>(context_);
  const uint64_t starts = s.size() - t;  // >= 1 by Create
  for (int b = 0; b < batch_; ++b) {
    const size_t start = rng->Below(starts);
    std::copy_n(s.data() + start, t, tokens + b * t);
    std::copy_n(s.data() + start + 1, t, targets + b * t);
  }
}

EvalWindows::EvalWindows(TokenDataset data, int batch, int context)
    : data_(std::move(data)), batch_(batch), context_(context) {
  const size_t t = static_cast<size_t>(context_);
  num_windows_ = (data_.size() - 1 + t - 1) / t;
}

StatusOr<EvalWindows> EvalWindows::Create(TokenDataset data, int batch, int context) {
  TANDEM_RETURN_IF_ERROR(CheckShape(batch, context));
  if (data.size() < 2) {
    return Status::InvalidArgument("token stream of " + std::to_string(data.size()) +
                                   " tokens has nothing to evaluate (need at least 2)");
  }
  return EvalWindows(std::move(data), batch, context);
}

int EvalWindows::Next(int32_t* tokens, int32_t* targets) {
  const std::vector<int32_t>& s = data_.tokens();
  const size_t t = static_cast<size_t>(context_);
  const size_t n = s.size();
  int rows = 0;
  for (int b = 0; b < batch_; ++b) {
    int32_t* tok = tokens + b * t;
    int32_t* tgt = targets + b * t;
    std::fill_n(tok, t, ByteTokenizer::kEndOfText);
    std::fill_n(tgt, t, kIgnoreTarget);
    if (next_window_ >= num_windows_) continue;
    const size_t start = next_window_ * t;
    const size_t len = std::min(t, n - 1 - start);  // targets available from this start
    std::copy_n(s.data() + start, len, tok);
    std::copy_n(s.data() + start + 1, len, tgt);
    ++next_window_;
    ++rows;
  }
  return rows;
}

}  // namespace tandem

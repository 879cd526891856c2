// Windows of the public split: the text both sides of a distillation look at. The coordinator
// draws window offsets from (seed, round) alone, so a resumed round draws the same ones; they
// travel as offsets (every process derives the same public split from the shared config), and
// both sides gather the same (T) tokens and next-token targets from them. Drawn, checked and
// gathered here only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/status.h"
#include "data/batcher.h"

namespace tandem {

class PublicWindows {
 public:
  // `count` offsets into a stream of `stream_tokens` tokens, each leaving room for `context`
  // tokens and their targets. Requires stream_tokens > context.
  static std::vector<uint32_t> Draw(size_t stream_tokens, int context, int count, uint64_t seed,
                                    uint64_t round);

  // Checks that `starts` is not empty and that every window fits in `stream` (the offsets come
  // from a peer: an error names the first that does not fit).
  static StatusOr<PublicWindows> Create(TokenDataset stream, std::vector<uint32_t> starts,
                                        int context);

  int count() const { return static_cast<int>(starts_.size()); }
  int context() const { return context_; }
  const std::vector<uint32_t>& starts() const { return starts_; }
  const TokenDataset& stream() const { return stream_; }

  // Window `w`'s tokens (T) and targets (T), written to tokens and targets.
  void Gather(int w, int32_t* tokens, int32_t* targets) const;
  // Windows first, first + 1, ... (mod count()), n of them, as (n,T) rows: the batches that walk
  // the round's windows in order and wrap around.
  void GatherRun(int first, int n, int32_t* tokens, int32_t* targets) const;

 private:
  PublicWindows(TokenDataset stream, std::vector<uint32_t> starts, int context)
      : stream_(std::move(stream)), starts_(std::move(starts)), context_(context) {}
  TokenDataset stream_;
  std::vector<uint32_t> starts_;
  int context_;
};

}  // namespace tandem

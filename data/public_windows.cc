// Public windows; see data/public_windows.h.
#include "data/public_windows.h"

#include <algorithm>
#include <string>

#include "core/rng.h"

namespace tandem {

std::vector<uint32_t> PublicWindows::Draw(size_t stream_tokens, int context, int count,
                                          uint64_t seed, uint64_t round) {
  TANDEM_CHECK(stream_tokens > static_cast<size_t>(context));
  const uint64_t starts = stream_tokens - static_cast<uint64_t>(context);  // s in [0, N−T−1]
  Rng rng = Rng(seed).Fork(0x64697374ULL ^ round);
  std::vector<uint32_t> out(count);
  for (auto& s : out) s = static_cast<uint32_t>(rng.Below(starts));
  return out;
}

StatusOr<PublicWindows> PublicWindows::Create(TokenDataset stream, std::vector<uint32_t> starts,
                                              int context) {
  if (context < 1) return Status::InvalidArgument("public windows need a context of at least 1");
  if (starts.empty()) return Status::InvalidArgument("no public windows");
  if (stream.size() < static_cast<size_t>(context) + 1) {
    return Status::FailedPrecondition("the public split has fewer than " +
                                      std::to_string(context + 1) + " tokens");
  }
  const size_t last = stream.size() - static_cast<size_t>(context) - 1;
  for (uint32_t s : starts) {
    if (s > last) {
      return Status::InvalidArgument("public window start " + std::to_string(s) +
                                     " is past the public split's last window " +
                                     std::to_string(last));
    }
  }
  return PublicWindows(std::move(stream), std::move(starts), context);
}

void PublicWindows::Gather(int w, int32_t* tokens, int32_t* targets) const {
  const auto& pub = stream_.tokens();
  const size_t s = starts_[w];
  std::copy(pub.begin() + s, pub.begin() + s + context_, tokens);
  std::copy(pub.begin() + s + 1, pub.begin() + s + context_ + 1, targets);
}

void PublicWindows::GatherRun(int first, int n, int32_t* tokens, int32_t* targets) const {
  const size_t T = static_cast<size_t>(context_);
  for (int b = 0; b < n; ++b) Gather((first + b) % count(), tokens + b * T, targets + b * T);
}

}  // namespace tandem

// Vote uploads; see distill/votes.h.
#include "distill/votes.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace tandem {

void VoteContribution(float* out, const float* logits, int N, int V, int top_k) {
  TANDEM_CHECK(N >= 0 && V >= 1 && top_k >= 1 && top_k <= V);
  const float share = 1.0f / static_cast<float>(top_k);
#pragma omp parallel
  {
    std::vector<int> order(V);
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      const float* z = logits + static_cast<size_t>(i) * V;  // (V)
      float* vote = out + static_cast<size_t>(i) * V;        // (V)
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [z](int a, int b) {
        return z[a] > z[b] || (z[a] == z[b] && a < b);
      });
      std::fill(vote, vote + V, 0.0f);
      for (int j = 0; j < top_k; ++j) vote[order[j]] = share;
    }
  }
}

double VoteSensitivity(int N, int top_k) {
  TANDEM_CHECK(N >= 0 && top_k >= 1);
  return std::sqrt(static_cast<double>(N) / top_k);
}

Status CheckVoteContribution(std::span<const float> values, int N, int V, int top_k) {
  if (values.size() != static_cast<size_t>(N) * V) {
    return Status::InvalidArgument("a vote upload needs " + std::to_string(static_cast<size_t>(N) * V) +
                                   " values, it has " + std::to_string(values.size()));
  }
  const float share = 1.0f / static_cast<float>(top_k);
  for (int i = 0; i < N; ++i) {
    int votes = 0;
    for (int v = 0; v < V; ++v) {
      const float x = values[static_cast<size_t>(i) * V + v];
      if (x == share) {
        ++votes;
      } else if (x != 0.0f) {
        return Status::InvalidArgument("row " + std::to_string(i) + " of the votes holds a value "
                                       "other than 0 and 1/top_k");
      }
    }
    if (votes != top_k) {
      return Status::InvalidArgument("row " + std::to_string(i) + " casts " +
                                     std::to_string(votes) + " votes, not " +
                                     std::to_string(top_k));
    }
  }
  return Status::Ok();
}

}  // namespace tandem

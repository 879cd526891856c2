// Vote uploads (distill/votes.h): a vote is 1 on the top-1 token or 1/k on the top-k; adding or
// removing one client moves the histogram by exactly its stated L2 sensitivity √(N/k), and by at
// most C once votes are clipped to C; malformed votes are refused; the softened teacher is the
// normalised histogram.
#include "distill/votes.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "distill/ensemble.h"

namespace tandem {
namespace {

std::vector<float> Random(size_t n, Rng& rng) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal());
  return v;
}

double L2(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t j = 0; j < a.size(); ++j) s += (a[j] - b[j]) * (a[j] - b[j]);
  return std::sqrt(s);
}

TEST(VotesTest, AVoteIsOneOnTheTopTokenOrASharedOneOnTheTopK) {
  const int V = 5;
  const std::vector<float> z = {0.1f, 2.0f, -1.0f, 2.0f, 1.5f};  // a tie at the top
  std::vector<float> vote(V);
  VoteContribution(vote.data(), z.data(), 1, V, 1);
  EXPECT_EQ(vote, (std::vector<float>{0, 1, 0, 0, 0})) << "ties go to the lower token";
  VoteContribution(vote.data(), z.data(), 1, V, 3);
  const float third = 1.0f / 3.0f;
  EXPECT_EQ(vote, (std::vector<float>{0, third, 0, third, third}));
  EXPECT_TRUE(CheckVoteContribution(vote, 1, V, 3).ok());
  EXPECT_FALSE(CheckVoteContribution(vote, 1, V, 1).ok());
}

// The histogram with and without one client differs by that client's votes: L2 √(N/k) exactly,
// whoever the client and whatever the others; clipped to C < √(N/k) it differs by C.
TEST(VotesTest, OneClientMovesTheHistogramByItsStatedSensitivity) {
  const int N = 40, V = 16, K = 6;
  Rng rng(2);
  for (int top_k : {1, 2, 4}) {
    std::vector<std::vector<float>> votes(K, std::vector<float>(N * V));
    for (auto& v : votes) {
      const auto z = Random(N * V, rng);
      VoteContribution(v.data(), z.data(), N, V, top_k);
    }
    const double bound = VoteSensitivity(N, top_k);
    EXPECT_DOUBLE_EQ(bound, std::sqrt(N / static_cast<double>(top_k)));
    for (double clip : {1e9, 0.5 * bound}) {
      auto histogram = [&](int without) {
        std::vector<double> h(N * V, 0.0);
        for (int k = 0; k < K; ++k) {
          if (k == without) continue;
          double norm = 0.0;
          for (float x : votes[k]) norm += double(x) * x;
          const double scale = std::min(1.0, clip / std::sqrt(norm));
          for (int j = 0; j < N * V; ++j) h[j] += scale * votes[k][j];
        }
        return h;
      };
      const auto all = histogram(-1);
      for (int k = 0; k < K; ++k) {
        const double moved = L2(all, histogram(k));
        EXPECT_NEAR(moved, std::min(bound, clip), 1e-9) << "top_k " << top_k << " client " << k;
      }
    }
  }
}

TEST(VotesTest, MalformedVotesAreRefused) {
  const int N = 3, V = 6;
  Rng rng(8);
  const auto z = Random(N * V, rng);
  std::vector<float> good(N * V);
  VoteContribution(good.data(), z.data(), N, V, 2);
  ASSERT_TRUE(CheckVoteContribution(good, N, V, 2).ok());
  EXPECT_FALSE(CheckVoteContribution(std::vector<float>(N * V - 1, 0.0f), N, V, 2).ok());
  auto bad = good;
  for (int v = 0; v < V; ++v) bad[V + v] = bad[V + v] * 4.0f;  // a client voting 4 times
  EXPECT_FALSE(CheckVoteContribution(bad, N, V, 2).ok());
  bad = good;
  std::fill(bad.begin() + 2 * V, bad.end(), 0.0f);  // abstaining
  EXPECT_FALSE(CheckVoteContribution(bad, N, V, 2).ok());
  bad = good;
  bad[0] = 0.5f;
  bad[1] = 0.5f;
  bad[2] = 0.5f;
  EXPECT_FALSE(CheckVoteContribution(bad, N, V, 2).ok());
}

// The teacher a noisy histogram gives: counts clamped at 0 and normalised (the softened
// distribution), at the distillation temperature.
TEST(VotesTest, TheTeacherIsTheClampedNormalisedHistogram) {
  const int V = 4;
  const std::vector<float> mean = {0.6f, 0.45f, -0.1f, 0.15f};  // a noisy mean of 1-per-row votes
  std::vector<float> teacher(V);
  EnsembleTeacherLogits(teacher.data(), mean.data(), 1, V, 2.0f, EnsembleMode::kMeanProbabilities);
  double sum = 0.0;
  std::vector<double> p(V);
  for (int v = 0; v < V; ++v) sum += (p[v] = std::exp(teacher[v] / 2.0));
  EXPECT_NEAR(p[0] / sum, 0.5, 1e-6);
  EXPECT_NEAR(p[1] / sum, 0.375, 1e-6);
  EXPECT_LT(p[2] / sum, 1e-20);
  EXPECT_NEAR(p[3] / sum, 0.125, 1e-6);
}

}  // namespace
}  // namespace tandem

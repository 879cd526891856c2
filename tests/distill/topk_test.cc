// Top-k teacher targets (distill/topk.h): selection and ties, densify, slicing, the wire
// encoding's round trip, rejection of every malformed field, and its size against dense logits.
#include "distill/topk.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "core/rng.h"

namespace tandem {
namespace {

std::vector<float> Random(size_t n, Rng& rng, float scale) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.Normal()) * scale;
  return v;
}

TEST(TopKTest, PicksLargestWithTiesToLowerIndex) {
  const int V = 6;
  // Row 0: ties at 2.0 (tokens 1, 4) and 1.0 (tokens 0, 3, 5). Row 1: all equal.
  const std::vector<float> z = {1.0f, 2.0f, -1.0f, 1.0f, 2.0f, 1.0f,
                                0.5f, 0.5f, 0.5f,  0.5f, 0.5f, 0.5f};
  const float T = 2.0f;
  const TopKTargets t = TopKFromLogits(z.data(), 2, V, 4, T);
  ASSERT_TRUE(ValidateTopK(t).ok());
  EXPECT_EQ(std::vector<int32_t>(t.indices.begin(), t.indices.begin() + 4),
            (std::vector<int32_t>{1, 4, 0, 3}));
  EXPECT_EQ(std::vector<int32_t>(t.indices.begin() + 4, t.indices.end()),
            (std::vector<int32_t>{0, 1, 2, 3}));
  double denom = 0.0;
  for (int v = 0; v < V; ++v) denom += std::exp(z[v] / T);
  for (int j = 0; j < 4; ++j) {
    EXPECT_NEAR(t.probs[j], std::exp(z[t.indices[j]] / T) / denom, 1e-7);
  }
  EXPECT_NEAR(t.tail[0], (std::exp(-1.0 / T) + std::exp(1.0 / T)) / denom, 1e-7);
  for (int j = 4; j < 8; ++j) EXPECT_NEAR(t.probs[j], 1.0 / 6, 1e-7);
  EXPECT_NEAR(t.tail[1], 2.0 / 6, 1e-7);
}

TEST(TopKTest, MatchesFullSortOnRandomLogits) {
  const int N = 40, V = 256, k = 16;
  Rng rng(2);
  auto z = Random(N * V, rng, 3.0f);
  const TopKTargets t = TopKFromLogits(z.data(), N, V, k, 1.0f);
  ASSERT_TRUE(ValidateTopK(t).ok());
  for (int i = 0; i < N; ++i) {
    std::vector<int32_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    const float* row = z.data() + i * V;
    std::stable_sort(order.begin(), order.end(), [row](int a, int b) { return row[a] > row[b]; });
    for (int j = 0; j < k; ++j) ASSERT_EQ(t.row_indices(i)[j], order[j]) << "row " << i;
    double sum = t.tail[i];
    for (int j = 0; j < k; ++j) sum += t.row_probs(i)[j];
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
}

TEST(TopKTest, DensifySumsToOneAndKeepsTopK) {
  const int N = 10, V = 32;
  Rng rng(3);
  auto z = Random(N * V, rng, 2.0f);
  for (int k : {1, 5, 31, 32}) {
    const TopKTargets t = TopKFromLogits(z.data(), N, V, k, 1.3f);
    std::vector<float> p(N * V);
    DensifyTopK(p.data(), t);
    for (int i = 0; i < N; ++i) {
      double sum = 0.0;
      for (int v = 0; v < V; ++v) {
        EXPECT_GE(p[i * V + v], 0.0f);
        sum += p[i * V + v];
      }
      EXPECT_NEAR(sum, 1.0, 1e-6) << "k=" << k << " row " << i;
      for (int j = 0; j < k; ++j) EXPECT_EQ(p[i * V + t.row_indices(i)[j]], t.row_probs(i)[j]);
    }
  }
}

TEST(TopKTest, SliceKeepsRows) {
  Rng rng(4);
  auto z = Random(6 * 20, rng, 1.0f);
  const TopKTargets t = TopKFromLogits(z.data(), 6, 20, 3, 1.0f);
  const TopKTargets s = SliceTopK(t, 2, 3);
  const TopKTargets direct = TopKFromLogits(z.data() + 2 * 20, 3, 20, 3, 1.0f);
  EXPECT_EQ(s.rows, 3);
  EXPECT_EQ(s.indices, direct.indices);
  EXPECT_EQ(s.probs, direct.probs);
  EXPECT_EQ(s.tail, direct.tail);
}

void ExpectSame(const TopKTargets& a, const TopKTargets& b) {
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.vocab, b.vocab);
  EXPECT_EQ(std::bit_cast<uint32_t>(a.temperature), std::bit_cast<uint32_t>(b.temperature));
  EXPECT_EQ(a.indices, b.indices);
  EXPECT_EQ(a.probs, b.probs);
  EXPECT_EQ(a.tail, b.tail);
}

TEST(TopKTest, EncodeDecodeRoundTrip) {
  Rng rng(5);
  // Packed 16-bit indices with an odd count (padding), one per word for a vocabulary > 65536,
  // k = V, and no rows at all.
  struct Shape { int N, V, k; };
  for (const Shape& sh : {Shape{7, 256, 3}, Shape{8, 256, 16}, Shape{3, 70000, 5}, Shape{4, 9, 9},
                          Shape{0, 256, 16}}) {
    SCOPED_TRACE(::testing::Message() << "N=" << sh.N << " V=" << sh.V << " k=" << sh.k);
    auto z = Random(static_cast<size_t>(sh.N) * sh.V, rng, 2.0f);
    const TopKTargets t = TopKFromLogits(z.data(), sh.N, sh.V, sh.k, 0.8f);
    const TopKWire w = EncodeTopK(t);
    EXPECT_EQ(w.words.size() * 4 + w.values.size() * 4, TopKWireBytes(sh.N, sh.k, sh.V));
    auto decoded = DecodeTopK(w.words, w.values);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    ExpectSame(*decoded, t);
  }
}

TEST(TopKTest, DecodeRejectsEachMalformedField) {
  const int N = 3, V = 256, k = 5;  // N·k = 15: the last packed word has a padding half
  Rng rng(6);
  auto z = Random(N * V, rng, 2.0f);
  const TopKWire good = EncodeTopK(TopKFromLogits(z.data(), N, V, k, 1.0f));
  ASSERT_TRUE(DecodeTopK(good.words, good.values).ok());
  const size_t hdr = kTopKHeaderWords;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Mutation {
    std::string name;
    std::function<void(TopKWire&)> apply;
  };
  const std::vector<Mutation> mutations = {
      {"empty", [](TopKWire& w) { w.words.clear(); }},
      {"short header", [](TopKWire& w) { w.words.resize(4); }},
      {"version", [](TopKWire& w) { w.words[0] = 2; }},
      {"rows too many", [](TopKWire& w) { w.words[1] += 1; }},
      {"rows too few", [](TopKWire& w) { w.words[1] -= 1; }},
      {"rows huge", [](TopKWire& w) { w.words[1] = 0xFFFFFFFFu; }},
      {"k zero", [](TopKWire& w) { w.words[2] = 0; }},
      {"k above vocab", [](TopKWire& w) { w.words[2] = 257; w.words[3] = 256; }},
      {"vocab zero", [](TopKWire& w) { w.words[3] = 0; }},
      {"vocab huge", [](TopKWire& w) { w.words[3] = 0xFFFFFFFFu; }},
      {"vocab too small for indices", [](TopKWire& w) { w.words[3] = 5; }},
      {"temperature zero", [](TopKWire& w) { w.words[4] = std::bit_cast<uint32_t>(0.0f); }},
      {"temperature negative", [](TopKWire& w) { w.words[4] = std::bit_cast<uint32_t>(-1.0f); }},
      {"temperature nan", [nan](TopKWire& w) { w.words[4] = std::bit_cast<uint32_t>(nan); }},
      {"temperature inf", [inf](TopKWire& w) { w.words[4] = std::bit_cast<uint32_t>(inf); }},
      {"index word missing", [](TopKWire& w) { w.words.pop_back(); }},
      {"index word extra", [](TopKWire& w) { w.words.push_back(0); }},
      {"index out of range", [hdr](TopKWire& w) { w.words[hdr + 1] = (w.words[hdr + 1] & 0xFFFF0000u) | 300u; }},
      {"duplicate index", [hdr](TopKWire& w) { w.words[hdr] = (w.words[hdr] & 0xFFFFu) * 0x10001u; }},
      {"padding not zero", [](TopKWire& w) { w.words.back() |= 7u << 16; }},
      {"value missing", [](TopKWire& w) { w.values.pop_back(); }},
      {"value extra", [](TopKWire& w) { w.values.push_back(0.0f); }},
      {"probability nan", [nan](TopKWire& w) { w.values[2] = nan; }},
      {"probability inf", [inf](TopKWire& w) { w.values[2] = inf; }},
      {"probability negative", [](TopKWire& w) { w.values[6] = -0.01f; }},
      {"probability above one", [](TopKWire& w) { w.values[0] = 1.5f; }},
      {"probabilities sum above one", [](TopKWire& w) {
         for (int j = 0; j < 5; ++j) w.values[j] = 0.25f;
         w.values[15] = 0.0f;
       }},
      {"tail inconsistent", [](TopKWire& w) { w.values[15] += 0.01f; }},
      {"tail negative", [](TopKWire& w) { w.values[16] = -0.1f; }},
      {"tail above one", [](TopKWire& w) { w.values[17] = 1.5f; }},
      {"tail nan", [nan](TopKWire& w) { w.values[17] = nan; }},
  };
  for (const Mutation& m : mutations) {
    TopKWire w = good;
    m.apply(w);
    auto decoded = DecodeTopK(w.words, w.values);
    ASSERT_FALSE(decoded.ok()) << m.name;
    EXPECT_EQ(decoded.status().code(), StatusCode::kCorruption) << m.name;
  }
  // Unpacked indices (V > 65536): out of range and duplicates are caught there too.
  auto big = Random(2 * 70000, rng, 1.0f);
  const TopKWire wide = EncodeTopK(TopKFromLogits(big.data(), 2, 70000, 3, 1.0f));
  ASSERT_TRUE(DecodeTopK(wide.words, wide.values).ok());
  TopKWire w = wide;
  w.words[hdr + 4] = 70000;
  EXPECT_FALSE(DecodeTopK(w.words, w.values).ok());
  w = wide;
  w.words[hdr + 4] = w.words[hdr + 3];
  EXPECT_FALSE(DecodeTopK(w.words, w.values).ok());
}

TEST(TopKTest, BytesPerRowAgainstDense) {
  const int N = 1000, k = 16, V = 256;
  const size_t sparse = TopKWireBytes(N, k, V) - kTopKHeaderWords * 4;
  const size_t dense = static_cast<size_t>(N) * V * sizeof(float);
  EXPECT_EQ(sparse / N, 100u);  // 16 packed 16-bit indices + 16 f32 probabilities + f32 tail
  EXPECT_EQ(dense / N, 1024u);
  std::printf("top-k wire: k=%d V=%d: %zu bytes/row vs %zu dense f32 (%.2fx smaller)\n", k, V,
              sparse / N, dense / N, static_cast<double>(dense) / sparse);
}

}  // namespace
}  // namespace tandem

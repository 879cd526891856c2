// Tests for token streams, random training batches and the evaluation walk.

#include "data/batcher.h"

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "models/tokenizer.h"

namespace tandem {
namespace {

TokenDataset Counting(size_t n) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(i % 1000) + 1000 * (i / 1000 % 7);
  return TokenDataset(std::move(t));
}

TEST(TokenDatasetTest, RecordsJoinedWithEndOfText) {
  const TokenDataset d = TokenDataset::FromRecords({{"ab", "x"}, {"", "x"}, {std::string("c\0d", 3), "y"}});
  const std::vector<int32_t> expected = {'a', 'b', ByteTokenizer::kEndOfText,
                                         ByteTokenizer::kEndOfText, 'c', 'd',
                                         ByteTokenizer::kEndOfText};
  EXPECT_EQ(d.tokens(), expected);
}

TEST(BatcherTest, TargetsAreTokensShiftedByOne) {
  const TokenDataset d = Counting(5000);
  auto b = Batcher::Create(d, 4, 16);
  ASSERT_TRUE(b.ok());
  std::vector<int32_t> tok(4 * 16), tgt(4 * 16);
  Rng rng(1);
  for (int step = 0; step < 50; ++step) {
    b->Next(&rng, tok.data(), tgt.data());
    for (int r = 0; r < 4; ++r) {
      // Find the window's start in the stream and check both rows against it.
      const int32_t* row = tok.data() + r * 16;
      size_t start = SIZE_MAX;
      for (size_t s = 0; s + 16 < d.size(); ++s) {
        if (std::equal(row, row + 16, d.tokens().begin() + s)) {
          start = s;
          break;
        }
      }
      ASSERT_NE(start, SIZE_MAX);
      for (int t = 0; t < 16; ++t) {
        EXPECT_EQ(tgt[r * 16 + t], d.tokens()[start + t + 1]);
        if (t + 1 < 16) {
          EXPECT_EQ(tgt[r * 16 + t], tok[r * 16 + t + 1]);
        }
      }
    }
  }
}

TEST(BatcherTest, DeterministicFromRngAndCoversEveryStart) {
  const TokenDataset d = Counting(22);  // context 20: starts 0 and 1 only
  auto b = Batcher::Create(d, 8, 20);
  ASSERT_TRUE(b.ok());
  std::vector<int32_t> t1(160), y1(160), t2(160), y2(160);
  Rng r1(9), r2(9);
  std::set<int32_t> first_tokens;
  for (int i = 0; i < 10; ++i) {
    b->Next(&r1, t1.data(), y1.data());
    b->Next(&r2, t2.data(), y2.data());
    EXPECT_EQ(t1, t2);
    EXPECT_EQ(y1, y2);
    for (int r = 0; r < 8; ++r) first_tokens.insert(t1[r * 20]);
  }
  EXPECT_EQ(first_tokens, (std::set<int32_t>{0, 1}));
  Rng r3(10);
  bool differs = false;
  for (int i = 0; i < 5 && !differs; ++i) {
    b->Next(&r1, t1.data(), y1.data());
    b->Next(&r3, t2.data(), y2.data());
    differs = t1 != t2;
  }
  EXPECT_TRUE(differs);
}

TEST(BatcherTest, ShortStreamIsAClearError) {
  auto b = Batcher::Create(Counting(16), 2, 16);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("16 tokens"), std::string::npos) << b.status().message();
  EXPECT_NE(b.status().message().find("context"), std::string::npos);
  EXPECT_TRUE(Batcher::Create(Counting(17), 2, 16).ok());
  EXPECT_FALSE(Batcher::Create(Counting(100), 0, 16).ok());
  EXPECT_FALSE(Batcher::Create(Counting(100), 2, 0).ok());
  EXPECT_FALSE(EvalWindows::Create(Counting(1), 2, 16).ok());
}

TEST(EvalWindowsTest, CoversEveryTargetExactlyOnce) {
  for (size_t n : {2u, 17u, 33u, 100u, 101u, 1000u}) {
    SCOPED_TRACE(n);
    const TokenDataset d = Counting(n);
    const int B = 3, T = 16;
    auto it = EvalWindows::Create(d, B, T);
    ASSERT_TRUE(it.ok());
    EXPECT_EQ(it->num_targets(), n - 1);
    std::vector<int32_t> tok(B * T), tgt(B * T);
    // The walk, reassembled: window w row r position t predicts stream position w*T + t + 1.
    std::vector<int> hits(n, 0);
    size_t window = 0, real_targets = 0;
    for (int pass = 0; pass < 2; ++pass) {
      int rows;
      while ((rows = it->Next(tok.data(), tgt.data())) > 0) {
        for (int r = 0; r < B; ++r, ++window) {
          for (int t = 0; t < T; ++t) {
            const int32_t y = tgt[r * T + t];
            if (r >= rows) {
              EXPECT_EQ(y, kIgnoreTarget);
              continue;
            }
            const size_t pos = window * T + t;
            if (y == kIgnoreTarget) {
              EXPECT_GE(pos + 1, n);
              continue;
            }
            ASSERT_LT(pos + 1, n);
            EXPECT_EQ(tok[r * T + t], d.tokens()[pos]);
            EXPECT_EQ(y, d.tokens()[pos + 1]);
            ++hits[pos + 1];
            ++real_targets;
          }
        }
      }
      EXPECT_EQ(it->Next(tok.data(), tgt.data()), 0);
      for (int32_t y : tgt) EXPECT_EQ(y, kIgnoreTarget);
      if (pass == 0) {
        EXPECT_EQ(real_targets, n - 1);
        for (size_t p = 1; p < n; ++p) EXPECT_EQ(hits[p], 1) << "position " << p;
        it->Reset();
        window = 0;
        real_targets = 0;
        std::fill(hits.begin(), hits.end(), 0);
      }
    }
    EXPECT_EQ(real_targets, n - 1);  // after Reset, the same walk again
    EXPECT_EQ(it->num_windows(), (n - 1 + T - 1) / T);
  }
}

}  // namespace
}  // namespace tandem

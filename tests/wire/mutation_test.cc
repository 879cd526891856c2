// Randomized corruption of valid frames: flipped bytes, truncation, insertion. Every decode must
// return an error or a message that passes validation and re-encodes; never crash, never read out
// of bounds (run under -fsanitize=address,undefined to see the latter).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/rng.h"
#include "tests/wire/test_messages.h"
#include "wire/chunk.h"
#include "wire/message.h"

namespace tandem::wire {
namespace {

std::vector<std::string> Corpus() {
  std::vector<std::string> corpus;
  for (const Message& m : testing::SampleMessages()) {
    StatusOr<std::string> bytes = EncodeMessage(m);
    TANDEM_CHECK(bytes.ok());
    corpus.push_back(*bytes);
  }
  for (const Chunk& c : SplitIntoChunks(std::string(9000, 'q'), 5, kMinChunkBytes)) {
    corpus.push_back(EncodeChunk(c));
  }
  return corpus;
}

// Decodes `bytes` every way a receiver would; checks that whatever is accepted is sound.
void DecodeEveryWay(const std::string& bytes, int* accepted) {
  StatusOr<Message> m = DecodeMessage(bytes);
  if (m.ok()) {
    ++*accepted;
    ASSERT_TRUE(ValidateMessage(*m).ok());
    StatusOr<std::string> again = EncodeMessage(*m);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    StatusOr<Message> twice = DecodeMessage(*again);
    ASSERT_TRUE(twice.ok());
    EXPECT_EQ(*twice, *m);
  }
  StatusOr<Chunk> c = DecodeChunk(bytes);
  if (c.ok()) {
    ++*accepted;
    ASSERT_TRUE(ValidateChunk(*c).ok());
    ChunkReassembler r;
    (void)r.Add(*c);
  }
  (void)PeekType(bytes);
}

TEST(MutationTest, CorruptedFramesFailCleanly) {
  const std::vector<std::string> corpus = Corpus();
  Rng rng(20240611);
  int accepted = 0;
  constexpr int kIterations = 10000;
  for (int iter = 0; iter < kIterations; ++iter) {
    std::string bytes = corpus[rng.Below(corpus.size())];
    const uint64_t kind = rng.Below(10);
    if (kind < 7) {  // flip 1..8 bytes
      const uint64_t flips = 1 + rng.Below(8);
      for (uint64_t f = 0; f < flips; ++f) {
        bytes[rng.Below(bytes.size())] ^= static_cast<char>(1 + rng.Below(255));
      }
    } else if (kind < 8) {  // truncate
      bytes.resize(rng.Below(bytes.size()));
    } else if (kind < 9) {  // insert random bytes
      const size_t at = rng.Below(bytes.size() + 1);
      std::string junk(1 + rng.Below(6), '\0');
      for (char& ch : junk) ch = static_cast<char>(rng.Below(256));
      bytes.insert(at, junk);
    } else {  // set one byte to an interesting value (msgpack length prefixes, 0xff)
      static const unsigned char kInteresting[] = {0x00, 0x7f, 0x80, 0xc0, 0xc1, 0xc4, 0xc6, 0xcf,
                                                   0xd3, 0xdb, 0xdd, 0xdf, 0xff};
      bytes[rng.Below(bytes.size())] = static_cast<char>(kInteresting[rng.Below(13)]);
    }
    // Exact-size copy, so a read past the end is a heap overflow that ASan reports.
    const std::string exact = bytes;
    DecodeEveryWay(exact, &accepted);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Most corruptions must be caught; some (a flipped bit inside tensor data or a string) are
  // legitimately still valid messages.
  EXPECT_LT(accepted, kIterations / 2);
  std::printf("%d of %d corrupted frames still decoded as valid\n", accepted, kIterations);
}

TEST(MutationTest, RandomBytesFailCleanly) {
  Rng rng(99);
  int accepted = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bytes(rng.Below(64), '\0');
    for (char& ch : bytes) ch = static_cast<char>(rng.Below(256));
    if (!bytes.empty() && rng.Below(2)) bytes[0] = '\x97';  // an array of 7, like a frame
    DecodeEveryWay(bytes, &accepted);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Random bytes are no message: a decoder that accepts them is not checking.
  EXPECT_EQ(accepted, 0);
}

}  // namespace
}  // namespace tandem::wire

// Chunking: a 16 MiB tensor through shuffled chunk frames, and the reassembler's refusals
// (duplicates, inconsistent totals, too many bytes, memory limits).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "tests/wire/test_messages.h"
#include "wire/chunk.h"
#include "wire/message.h"

namespace tandem::wire {
namespace {

using testing::SampleEnvelope;

Chunk MakeChunk(uint64_t id, uint32_t index, uint32_t count, uint64_t total, size_t size) {
  return Chunk{id, index, count, total, std::string(size, static_cast<char>('a' + index % 26))};
}

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

TEST(ChunkTest, SixteenMiBTensorRoundTripsThroughShuffledChunks) {
  const size_t n = 4 * kMiB;  // 4 Mi floats = 16 MiB
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = static_cast<float>(i % 1000) * 0.5f - 7.0f;
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("delta", {n / 1024, 1024}, values));
  r.weight = 3.0;
  r.metrics["loss"] = 1.5;
  const Message original{SampleEnvelope(), r};
  StatusOr<std::string> bytes = EncodeMessage(original);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  ASSERT_GT(bytes->size(), kChunkThresholdBytes);

  std::vector<Chunk> chunks = SplitIntoChunks(*bytes, /*message_id=*/42);
  ASSERT_EQ(chunks.size(), (bytes->size() + kChunkBytes - 1) / kChunkBytes);
  std::vector<std::string> frames;
  for (const Chunk& c : chunks) {
    frames.push_back(EncodeChunk(c));
    ASSERT_LE(frames.back().size(), kMaxFrameBytes);
  }
  std::mt19937 rng(7);
  std::shuffle(frames.begin(), frames.end(), rng);

  ChunkReassembler reassembler;
  std::optional<std::string> whole;
  for (size_t i = 0; i < frames.size(); ++i) {
    StatusOr<MessageType> type = PeekType(frames[i]);
    ASSERT_TRUE(type.ok());
    ASSERT_EQ(*type, MessageType::kChunk);
    StatusOr<Chunk> chunk = DecodeChunk(frames[i]);
    ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
    StatusOr<std::optional<std::string>> got = reassembler.Add(std::move(*chunk));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    if (i + 1 < frames.size()) {
      ASSERT_FALSE(got->has_value());
    } else {
      ASSERT_TRUE(got->has_value());
      whole = std::move(**got);
    }
  }
  EXPECT_EQ(reassembler.pending_messages(), 0u);
  EXPECT_EQ(reassembler.pending_bytes(), 0u);
  ASSERT_EQ(*whole, *bytes);
  StatusOr<Message> back = DecodeMessage(*whole);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, original);
}

TEST(ChunkTest, SmallMessageIsOneChunkAndInterleavedMessagesComplete) {
  const std::string a(10000, 'a');
  const std::string b(9000, 'b');
  std::vector<Chunk> ca = SplitIntoChunks(a, 1, kMinChunkBytes);
  std::vector<Chunk> cb = SplitIntoChunks(b, 2, kMinChunkBytes);
  ASSERT_EQ(ca.size(), 3u);
  ASSERT_EQ(SplitIntoChunks(a, 3).size(), 1u);
  ChunkReassembler r;
  ASSERT_FALSE(r.Add(ca[2]).value().has_value());
  ASSERT_FALSE(r.Add(cb[1]).value().has_value());
  ASSERT_FALSE(r.Add(ca[0]).value().has_value());
  ASSERT_FALSE(r.Add(cb[0]).value().has_value());
  EXPECT_EQ(r.pending_messages(), 2u);
  StatusOr<std::optional<std::string>> done_b = r.Add(cb[2]);
  ASSERT_TRUE(done_b.ok());
  EXPECT_EQ(done_b->value(), b);
  EXPECT_EQ(r.pending_messages(), 1u);
  StatusOr<std::optional<std::string>> done_a = r.Add(ca[1]);
  ASSERT_TRUE(done_a.ok());
  EXPECT_EQ(done_a->value(), a);
  EXPECT_EQ(r.pending_messages(), 0u);
}

TEST(ChunkTest, DuplicateChunkIsRejectedAndTheMessageStillCompletes) {
  const std::string msg(3 * kMinChunkBytes, 'x');
  std::vector<Chunk> chunks = SplitIntoChunks(msg, 9, kMinChunkBytes);
  ChunkReassembler r;
  ASSERT_TRUE(r.Add(chunks[0]).ok());
  StatusOr<std::optional<std::string>> dup = r.Add(chunks[0]);
  ASSERT_FALSE(dup.ok());
  EXPECT_TRUE(Contains(dup.status(), "duplicate chunk 0")) << dup.status().ToString();
  EXPECT_EQ(r.pending_bytes(), kMinChunkBytes);
  ASSERT_TRUE(r.Add(chunks[1]).ok());
  StatusOr<std::optional<std::string>> done = r.Add(chunks[2]);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->value(), msg);
}

TEST(ChunkTest, InconsistentTotalsDropTheMessage) {
  ChunkReassembler r;
  ASSERT_TRUE(r.Add(MakeChunk(5, 0, 3, 30000, 10000)).ok());
  StatusOr<std::optional<std::string>> bad = r.Add(MakeChunk(5, 1, 3, 31000, 10000));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status(), "inconsistent chunks")) << bad.status().ToString();
  EXPECT_EQ(r.pending_messages(), 0u);
  EXPECT_EQ(r.pending_bytes(), 0u);

  ASSERT_TRUE(r.Add(MakeChunk(6, 0, 3, 30000, 10000)).ok());
  bad = r.Add(MakeChunk(6, 1, 4, 30000, 10000));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status(), "inconsistent chunks"));
  EXPECT_EQ(r.pending_messages(), 0u);
}

TEST(ChunkTest, MoreBytesThanDeclaredAreRejected) {
  ChunkReassembler r;
  ASSERT_TRUE(r.Add(MakeChunk(1, 0, 2, 15000, 10000)).ok());
  StatusOr<std::optional<std::string>> bad = r.Add(MakeChunk(1, 1, 2, 15000, 10000));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status(), "more than the declared 15000 bytes"));
  EXPECT_EQ(r.pending_messages(), 0u);
  // All chunks in but fewer bytes than declared.
  ASSERT_TRUE(r.Add(MakeChunk(2, 0, 2, 15000, 5000)).ok());
  bad = r.Add(MakeChunk(2, 1, 2, 15000, 5000));
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status(), "carrying 10000 bytes, declared 15000"));
  EXPECT_EQ(r.pending_bytes(), 0u);
}

TEST(ChunkTest, DeclaredSizesOutsideTheLimitsAreRejected) {
  // A declared total above the maximum message size: refused before anything is buffered.
  Status s = ValidateChunk(MakeChunk(1, 0, 70000, kMaxMessageBytes + 1, 10));
  EXPECT_FALSE(s.ok());
  s = ValidateChunk(MakeChunk(1, 0, 1000, kMaxMessageBytes + 1, 10));
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s, "declared total")) << s.ToString();
  ChunkReassembler r;
  EXPECT_FALSE(r.Add(MakeChunk(1, 0, 1000, kMaxMessageBytes + 1, 10)).ok());
  EXPECT_EQ(r.pending_messages(), 0u);
  EXPECT_TRUE(Contains(ValidateChunk(MakeChunk(1, 3, 3, 100, 10)), "not below count"));
  EXPECT_TRUE(Contains(ValidateChunk(MakeChunk(1, 0, 0, 100, 10)), "chunk count 0"));
  EXPECT_TRUE(Contains(ValidateChunk(MakeChunk(1, 0, 2, 10 * kMaxChunkBytes, 10)),
                       "cannot carry"));
  EXPECT_FALSE(ValidateChunk(MakeChunk(1, 0, 2, 100, 0)).ok());  // empty chunk
  EXPECT_FALSE(ValidateChunk(MakeChunk(1, 0, 1, 100, 200)).ok());  // chunk above total
}

TEST(ChunkTest, BufferLimitsBoundMemory) {
  ChunkReassembler r(/*max_pending_bytes=*/25000, /*max_pending_messages=*/2);
  ASSERT_TRUE(r.Add(MakeChunk(1, 0, 2, 20000, 10000)).ok());
  ASSERT_TRUE(r.Add(MakeChunk(2, 0, 2, 20000, 10000)).ok());
  StatusOr<std::optional<std::string>> third = r.Add(MakeChunk(3, 0, 2, 20000, 10000));
  ASSERT_FALSE(third.ok());
  EXPECT_TRUE(Contains(third.status(), "incomplete messages"));
  StatusOr<std::optional<std::string>> over = r.Add(MakeChunk(1, 1, 2, 20000, 10000));
  ASSERT_FALSE(over.ok());
  EXPECT_TRUE(Contains(over.status(), "exceed the limit"));
  r.Discard(2);
  EXPECT_EQ(r.pending_bytes(), 10000u);
  StatusOr<std::optional<std::string>> done = r.Add(MakeChunk(1, 1, 2, 20000, 10000));
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(done->has_value());
  r.Clear();
  EXPECT_EQ(r.pending_messages(), 0u);
}

TEST(ChunkTest, FramesAreStrict) {
  const Chunk c = MakeChunk(77, 1, 3, 30000, 10000);
  const std::string frame = EncodeChunk(c);
  StatusOr<Chunk> back = DecodeChunk(frame);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, c);
  for (size_t n = 0; n < frame.size(); n += (n < 64 ? 1 : 997)) {
    const std::string prefix = frame.substr(0, n);
    EXPECT_FALSE(DecodeChunk(prefix).ok()) << n;
  }
  EXPECT_FALSE(DecodeChunk(frame + "x").ok());
  // A message frame is not a chunk, and a chunk frame is not a message.
  StatusOr<std::string> msg = EncodeMessage({SampleEnvelope(), Heartbeat{}});
  ASSERT_TRUE(msg.ok());
  EXPECT_FALSE(DecodeChunk(*msg).ok());
  StatusOr<Message> as_message = DecodeMessage(frame);
  ASSERT_FALSE(as_message.ok());
  EXPECT_TRUE(Contains(as_message.status(), "reassemble it first"));
  // Index beyond count, encoded by hand.
  testing::RawWriter w;
  w.pk().pack_array(7);
  w.pk().pack_uint8(kProtocolVersion);
  w.pk().pack_uint8(static_cast<uint8_t>(MessageType::kChunk));
  w.pk().pack_uint8(1);
  w.pk().pack_uint8(5);
  w.pk().pack_uint8(2);
  w.pk().pack_uint16(100);
  w.Bin(std::string(50, 'z'));
  StatusOr<Chunk> bad = DecodeChunk(w.bytes());
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status(), "not below count"));
}

}  // namespace
}  // namespace tandem::wire

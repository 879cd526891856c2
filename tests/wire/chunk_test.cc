// Chunking: a 16 MiB tensor through shuffled chunk frames, and the reassembler's refusals
// (duplicates, inconsistent totals, too many bytes, memory limits); the flow-control frames
// (ChunkOffer, ChunkGrant), strict and fuzzed; shared frames; the encoder's size announcement;
// the frame encoder and the in-place and detached decoding the transport relies on.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/rng.h"
#include "tests/wire/test_messages.h"
#include "wire/chunk.h"
#include "wire/message.h"

namespace tandem::wire {
namespace {

using testing::Encoded;
using testing::FloatBytes;
using testing::Make;
using testing::Patch;
using testing::ResultMessage;
using testing::SampleEnvelope;

constexpr uint64_t kRun = 0x7A11DE;

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

TEST(FlowControlTest, OfferAndGrantRoundTripAndArePeekable) {
  const ChunkOffer offer{0xFFFFFFFFFFFFFFFFull, 200, 200 * kChunkBytes - 3};
  const std::string frame = EncodeChunkOffer(offer);
  EXPECT_LE(frame.size(), 64u);
  StatusOr<ChunkOffer> back = DecodeChunkOffer(frame);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, offer);
  ASSERT_TRUE(PeekType(frame).ok());
  EXPECT_EQ(*PeekType(frame), MessageType::kChunkOffer);

  const std::string grant = EncodeChunkGrant({12345});
  StatusOr<ChunkGrant> g = DecodeChunkGrant(grant);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->message_id, 12345u);
  EXPECT_EQ(*PeekType(grant), MessageType::kChunkGrant);
  EXPECT_TRUE(ReceivedBy(MessageType::kChunkOffer, Role::kCoordinator));
  EXPECT_FALSE(ReceivedBy(MessageType::kChunkOffer, Role::kClient));
  EXPECT_TRUE(ReceivedBy(MessageType::kChunkGrant, Role::kClient));
  EXPECT_FALSE(ReceivedBy(MessageType::kChunkGrant, Role::kCoordinator));

  // Neither is a message or a chunk, and neither decodes as the other.
  EXPECT_FALSE(DecodeMessage(frame).ok());
  EXPECT_FALSE(DecodeMessage(grant).ok());
  EXPECT_FALSE(DecodeChunk(frame).ok());
  StatusOr<ChunkGrant> crossed = DecodeChunkGrant(frame);
  ASSERT_FALSE(crossed.ok());
  EXPECT_TRUE(Contains(crossed.status(), "expected a ChunkGrant, got a ChunkOffer"))
      << crossed.status().ToString();
  EXPECT_FALSE(DecodeChunkOffer(grant).ok());
  EXPECT_FALSE(DecodeChunkOffer(EncodeChunk(MakeChunk(1, 0, 1, 10, 10))).ok());
}

TEST(FlowControlTest, OfferSizesAreValidatedLikeChunks) {
  EXPECT_TRUE(ValidateChunkOffer({1, 1, 1}).ok());
  EXPECT_TRUE(ValidateChunkOffer({1, 2, 2 * kMaxChunkBytes}).ok());
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 0, 100}), "chunk count 0"));
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, kMaxChunksPerMessage + 1, kMaxMessageBytes}),
                       "chunk count"));
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 1, 0}), "declared total"));
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 1, kMaxMessageBytes + 1}), "declared total"));
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 5, 4}), "cannot carry"));  // a chunk is >= 1 byte
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 2, 2 * kMaxChunkBytes + 1}), "cannot carry"));
}

// An offer or grant frame written field by field, for what the encoders refuse to produce.
std::string RawFlowFrame(uint64_t version, uint64_t type, std::vector<uint64_t> fields,
                         int extra = 0) {
  testing::RawWriter w;
  w.pk().pack_array(static_cast<uint32_t>(2 + fields.size() + extra));
  w.pk().pack_uint64(version);
  w.pk().pack_uint64(type);
  for (uint64_t f : fields) w.pk().pack_uint64(f);
  for (int i = 0; i < extra; ++i) w.Str("x");
  return w.bytes();
}

TEST(FlowControlTest, MalformedOffersAndGrantsAreRejected) {
  const uint64_t offer = static_cast<uint64_t>(MessageType::kChunkOffer);
  const uint64_t grant = static_cast<uint64_t>(MessageType::kChunkGrant);
  ASSERT_TRUE(DecodeChunkOffer(RawFlowFrame(1, offer, {7, 3, 30000})).ok());
  ASSERT_TRUE(DecodeChunkGrant(RawFlowFrame(1, grant, {7})).ok());
  struct Case {
    std::string name, bytes, reason;
  };
  std::vector<Case> offers = {
      {"version 2", RawFlowFrame(2, offer, {7, 3, 30000}), "unsupported protocol version 2"},
      {"4 fields", RawFlowFrame(1, offer, {7, 3}), "4 fields, expected 5"},
      {"6 fields", RawFlowFrame(1, offer, {7, 3, 30000, 1}), "6 fields, expected 5"},
      {"count 0", RawFlowFrame(1, offer, {7, 0, 30000}), "chunk count 0"},
      {"count above the limit", RawFlowFrame(1, offer, {7, kMaxChunksPerMessage + 1, 30000}),
       "offer.count"},
      {"total above the limit", RawFlowFrame(1, offer, {7, 3, kMaxMessageBytes + 1}),
       "offer.total_bytes"},
      {"total 0", RawFlowFrame(1, offer, {7, 1, 0}), "declared total"},
      {"count cannot carry", RawFlowFrame(1, offer, {7, 1, kMaxChunkBytes + 1}), "cannot carry"},
      {"a string field", RawFlowFrame(1, offer, {7, 3}, 1), "offer.total_bytes"},
      {"trailing byte", RawFlowFrame(1, offer, {7, 3, 30000}) + '\0', "trailing"},
      {"oversized", RawFlowFrame(1, offer, {7, 3, 30000}) + std::string(100, 'x'), "at most 96"},
      {"a contribution of task 0", RawFlowFrame(1, offer, {7, 3, 30000, 1, 0, 1, 5}),
       "task_id is 0"},
      {"a contribution larger than the message", RawFlowFrame(1, offer, {7, 3, 30000, 1, 4, 1, 7501}),
       "does not fit"},
      {"8 fields", RawFlowFrame(1, offer, {7, 3, 30000, 1, 4, 1}), "8 fields, expected 5"},
      {"not an array", std::string("\x81\xa1x\x01", 4), "not a tandem frame"},
      {"empty", "", "empty"},
  };
  for (const Case& c : offers) {
    StatusOr<ChunkOffer> o = DecodeChunkOffer(c.bytes);
    ASSERT_FALSE(o.ok()) << c.name;
    EXPECT_TRUE(Contains(o.status(), c.reason)) << c.name << ": " << o.status().ToString();
  }
  std::vector<Case> grants = {
      {"version 0", RawFlowFrame(0, grant, {7}), "unsupported protocol version 0"},
      {"2 fields", RawFlowFrame(1, grant, {}), "2 fields, expected 3"},
      {"4 fields", RawFlowFrame(1, grant, {7, 8}), "4 fields, expected 3"},
      {"a string id", RawFlowFrame(1, grant, {}, 1), "grant.message_id"},
      {"unknown type", RawFlowFrame(1, 14, {7}), "unknown type 14"},
      {"a heartbeat type", RawFlowFrame(1, 3, {7}), "got a Heartbeat frame"},
  };
  for (const Case& c : grants) {
    StatusOr<ChunkGrant> g = DecodeChunkGrant(c.bytes);
    ASSERT_FALSE(g.ok()) << c.name;
    EXPECT_TRUE(Contains(g.status(), c.reason)) << c.name << ": " << g.status().ToString();
  }
  // Every proper prefix of a valid frame is refused.
  const std::string good = EncodeChunkOffer({99, 3, 30000});
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeChunkOffer(good.substr(0, n)).ok()) << n;
  }
  const std::string good_grant = EncodeChunkGrant({99});
  for (size_t n = 0; n < good_grant.size(); ++n) {
    EXPECT_FALSE(DecodeChunkGrant(good_grant.substr(0, n)).ok()) << n;
  }
}

TEST(FlowControlTest, CorruptedOffersAndGrantsFailCleanly) {
  // As tests/wire/mutation_test.cc does for messages: whatever still decodes must be valid and
  // survive a round trip.
  const std::vector<std::string> corpus = {EncodeChunkOffer({1, 1, 1}),
                                           EncodeChunkOffer({1ull << 40, 200, 200 * kChunkBytes}),
                                           EncodeChunkGrant({0}), EncodeChunkGrant({1ull << 50})};
  Rng rng(424242);
  int accepted = 0;
  constexpr int kIterations = 20000;
  for (int iter = 0; iter < kIterations; ++iter) {
    std::string bytes = corpus[rng.Below(corpus.size())];
    const uint64_t kind = rng.Below(4);
    if (kind < 2) {
      for (uint64_t f = 0, n = 1 + rng.Below(3); f < n; ++f) {
        bytes[rng.Below(bytes.size())] ^= static_cast<char>(1 + rng.Below(255));
      }
    } else if (kind == 2) {
      bytes.resize(rng.Below(bytes.size()));
    } else {
      std::string junk(1 + rng.Below(4), '\0');
      for (char& ch : junk) ch = static_cast<char>(rng.Below(256));
      bytes.insert(rng.Below(bytes.size() + 1), junk);
    }
    const std::string exact = bytes;  // exact size: a read past the end is an ASan error
    StatusOr<ChunkOffer> o = DecodeChunkOffer(exact);
    if (o.ok()) {
      ++accepted;
      ASSERT_TRUE(ValidateChunkOffer(*o).ok());
      EXPECT_EQ(*DecodeChunkOffer(EncodeChunkOffer(*o)), *o);
    }
    StatusOr<ChunkGrant> g = DecodeChunkGrant(exact);
    if (g.ok()) {
      ++accepted;
      EXPECT_EQ(*DecodeChunkGrant(EncodeChunkGrant(*g)), *g);
    }
    (void)PeekType(exact);
    EXPECT_FALSE(DecodeMessage(exact).ok());
  }
  EXPECT_LT(accepted, kIterations / 2);
}

TEST(FlowControlTest, SharedFramesLendTheSameBytes) {
  auto original = std::make_shared<const Frame>(std::string(100000, 'q'));
  Frame a(original);
  Frame b(original);
  EXPECT_EQ(a.bytes().data(), original->bytes().data());  // no copy
  EXPECT_EQ(b.bytes().data(), original->bytes().data());
  EXPECT_EQ(a.size(), 100000u);
  const char* storage = original->bytes().data();
  original.reset();
  Frame moved = std::move(a);
  EXPECT_EQ(moved.bytes().data(), storage);  // alive while a holder is
  EXPECT_EQ(b.bytes(), std::string(100000, 'q'));
}

TEST(FlowControlTest, EncoderAnnouncesSizeAndChunkCountFirst) {
  for (size_t floats : {size_t{100}, size_t{1500000}}) {  // one frame; 6 MB in chunks
    TaskResult r;
    r.tensors.push_back(Tensor::Float32("delta", {floats}, std::vector<float>(floats, 0.5f)));
    r.weight = 1.0;
    const Message m{SampleEnvelope(), r};
    int starts = 0;
    uint64_t total = 0;
    bool chunked = false;
    uint32_t count = 0;
    std::vector<size_t> sizes;
    ASSERT_TRUE(EncodeMessageFrames(
                    m, 256 * 1024,
                    [&](uint64_t t, bool c, uint32_t n) {
                      EXPECT_TRUE(sizes.empty());  // before any frame
                      ++starts;
                      total = t;
                      chunked = c;
                      count = n;
                    },
                    [&](Frame f) { sizes.push_back(f.size()); })
                    .ok());
    EXPECT_EQ(starts, 1);
    EXPECT_EQ(total, EncodeMessage(m)->size());
    EXPECT_EQ(chunked, total > kChunkThresholdBytes);
    EXPECT_EQ(count, sizes.size());
    EXPECT_EQ(chunked, floats > 1000);
  }
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

// ---- The frame encoder and in-place decoding the transport relies on. ----

TEST(FrameEncodingTest, FramesEqualEncodeThenSplitByteForByte) {
  for (size_t floats : {size_t{10}, size_t{3 * kMiB}}) {  // one frame; 12 MiB in chunks
    std::vector<float> values(floats);
    for (size_t i = 0; i < floats; ++i) values[i] = static_cast<float>(i) * 0.5f;
    Message m = ResultMessage(2, 3, values);
    m.envelope.sequence = 77;
    const std::string whole = Encoded(m);
    std::vector<std::string> expected;
    if (whole.size() <= kChunkThresholdBytes) {
      expected.push_back(whole);
    } else {
      for (const Chunk& c : SplitIntoChunks(whole, 77, 64 * 1024)) expected.push_back(EncodeChunk(c));
    }
    std::vector<std::string> frames;
    ASSERT_TRUE(EncodeMessageFrames(m, 64 * 1024, [&](Frame f) {
                  frames.emplace_back(f.bytes());
                }).ok());
    ASSERT_EQ(frames.size(), expected.size());
    for (size_t i = 0; i < frames.size(); ++i) ASSERT_EQ(frames[i], expected[i]) << i;
  }
  Message invalid = ResultMessage(1, 1, {1.0f});
  std::get<TaskResult>(invalid.body).weight = -1;
  int emitted = 0;
  EXPECT_EQ(EncodeMessageFrames(invalid, kChunkBytes, [&](Frame) { ++emitted; }).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(emitted, 0);
}

TEST(FrameEncodingTest, InPlaceDecodeEqualsCopyingDecodeAndReassemblyKeepsOrder) {
  std::vector<float> values(300000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(static_cast<float>(i));
  Message m = ResultMessage(1, 2, values);
  std::get<TaskResult>(m.body).tensors.push_back(Tensor::Float32("small", {2}, std::vector<float>{1, 2}));
  const std::string bytes = Encoded(m);
  StatusOr<Message> copied = DecodeMessage(std::string_view(bytes));
  StatusOr<Message> in_place = DecodeMessage(std::string(bytes));
  ASSERT_TRUE(copied.ok());
  ASSERT_TRUE(in_place.ok());
  EXPECT_EQ(*copied, *in_place);
  EXPECT_EQ(*in_place, m);
  // A NaN is still caught on the in-place path.
  std::string poisoned = Patch(bytes, FloatBytes(values[5]), FloatBytes(std::nanf("")));
  EXPECT_FALSE(DecodeMessage(std::move(poisoned)).ok());

  // Chunks 0, 2, 1, 3: the early one waits, the rest go straight into place.
  std::vector<Chunk> chunks = SplitIntoChunks(bytes, 1, bytes.size() / 4 + 1);
  ASSERT_EQ(chunks.size(), 4u);
  ChunkReassembler r;
  std::vector<std::string> frames;
  for (const Chunk& c : chunks) frames.push_back(EncodeChunk(c));
  for (int i : {0, 2, 1}) {
    StatusOr<ChunkView> view = DecodeChunkView(frames[i]);
    ASSERT_TRUE(view.ok());
    ASSERT_FALSE(r.Add(*view).value().has_value());
  }
  EXPECT_FALSE(r.Add(*DecodeChunkView(frames[2])).ok());  // duplicate of an early chunk
  EXPECT_FALSE(r.Add(*DecodeChunkView(frames[1])).ok());  // duplicate of a placed chunk
  StatusOr<std::optional<std::string>> done = r.Add(*DecodeChunkView(frames[3]));
  ASSERT_TRUE(done.ok());
  ASSERT_TRUE(done->has_value());
  EXPECT_EQ(**done, bytes);
  EXPECT_EQ(r.pending_bytes(), 0u);
}

// Reassembles `frames` in order with a detaching reassembler and decodes the result.
StatusOr<Message> ReassembleDetached(const std::vector<std::string>& frames, bool* detached) {
  ChunkReassembler r(kMaxReassemblyBytes, kMaxPendingChunkedMessages, /*detach_large_bins=*/true);
  for (const std::string& frame : frames) {
    TANDEM_ASSIGN_OR_RETURN(const ChunkView view, DecodeChunkView(frame));
    TANDEM_ASSIGN_OR_RETURN(std::optional<AssembledMessage> done, r.AddAssembled(view));
    if (done) {
      if (detached) *detached = done->bin.has_value();
      return DecodeAssembled(std::move(*done));
    }
  }
  return Status::Internal("incomplete");
}

std::vector<std::string> ChunkFrames(const std::string& bytes, size_t chunk_bytes) {
  std::vector<std::string> frames;
  for (const Chunk& c : SplitIntoChunks(bytes, 1, chunk_bytes)) frames.push_back(EncodeChunk(c));
  return frames;
}

TEST(FrameEncodingTest, DetachedBinDecodesLikeTheWholeMessage) {
  std::vector<float> values(20000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.001f * static_cast<float>(i);
  Message m = ResultMessage(1, 2, values);
  m.envelope.run_id = kRun;
  const std::string bytes = Encoded(m);
  bool detached = false;
  StatusOr<Message> back = ReassembleDetached(ChunkFrames(bytes, kMinChunkBytes), &detached);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(detached);
  EXPECT_EQ(*back, m);

  // A NaN inside the detached bin is found (by the scan done while copying).
  const std::string poisoned = Patch(bytes, FloatBytes(values[12345]), FloatBytes(std::nanf("")));
  StatusOr<Message> nan = ReassembleDetached(ChunkFrames(poisoned, kMinChunkBytes), &detached);
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("element 12345 is NaN"), std::string::npos)
      << nan.status().ToString();
  // The same bit pattern in a u32 tensor is just a number.
  TaskResult masked;
  std::vector<uint32_t> words(20000, 0x7FC00000u);
  masked.tensors.push_back(Tensor::Uint32("masked", {words.size()}, words));
  Message u32 = Make(masked, 1, 2);
  StatusOr<Message> u32_back = ReassembleDetached(ChunkFrames(Encoded(u32), kMinChunkBytes), &detached);
  ASSERT_TRUE(u32_back.ok()) << u32_back.status().ToString();
  EXPECT_TRUE(detached);
  EXPECT_EQ(*u32_back, u32);
}

TEST(FrameEncodingTest, DetachedDecodingAgreesWithDecodeMessageOnCorruptedFrames) {
  // Whatever a corruption does to the headers (the bin's own length included), reassembling with
  // a detached bin must accept and reject exactly what decoding the whole message does.
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("small", {3}, std::vector<float>{1, 2, 3}));
  r.tensors.push_back(Tensor::Float32("big", {6000}, std::vector<float>(6000, 0.25f)));
  r.weight = 4.0;
  r.metrics["loss"] = 1.0;
  const std::string bytes = Encoded(Make(r, 1, 2));
  Rng rng(11);
  int accepted = 0;
  int detached_count = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string corrupted = bytes;
    const int flips = 1 + static_cast<int>(rng.Below(3));
    for (int f = 0; f < flips; ++f) {
      // Mostly the first bytes, where the structure is; sometimes anywhere.
      const size_t at = rng.Below(4) == 0 ? rng.Below(corrupted.size()) : rng.Below(160);
      corrupted[at] = static_cast<char>(rng.Below(256));
    }
    StatusOr<Message> whole = DecodeMessage(std::string_view(corrupted));
    bool detached = false;
    StatusOr<Message> pieces = ReassembleDetached(ChunkFrames(corrupted, kMinChunkBytes), &detached);
    ASSERT_EQ(whole.ok(), pieces.ok())
        << "trial " << trial << ": " << whole.status().ToString() << " vs "
        << pieces.status().ToString();
    if (whole.ok()) {
      ASSERT_EQ(*whole, *pieces) << "trial " << trial;
      ++accepted;
    }
    detached_count += detached ? 1 : 0;
  }
  EXPECT_GT(accepted, 100);         // the comparison covered accepted messages
  EXPECT_GT(detached_count, 1000);  // and the detached path
}

TEST(FlowControlTest, OfferDeclaringAContributionRoundTrips) {
  for (double weight : {1.0, 0.0, 2.5, 1e9}) {  // whole numbers travel as msgpack integers
    ChunkOffer offer{77, 9, 9 * kChunkBytes - 5, ContributionOffer{3, 12, weight, 2000000}};
    const std::string frame = EncodeChunkOffer(offer);
    EXPECT_LE(frame.size(), 96u);
    StatusOr<ChunkOffer> back = DecodeChunkOffer(frame);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, offer);
  }
  // Refused: a contribution larger than the message, task 0, a negative or NaN weight.
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 1, 100, ContributionOffer{1, 1, 1.0, 26}}),
                       "does not fit"));
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 1, 100, ContributionOffer{1, 0, 1.0, 5}}),
                       "task_id is 0"));
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 1, 100, ContributionOffer{1, 1, -1.0, 5}}),
                       "weight"));
  EXPECT_TRUE(Contains(ValidateChunkOffer({1, 1, 100, ContributionOffer{1, 1, std::nan(""), 5}}),
                       "weight"));
  // What a client declares: a TaskResult whose one f32 tensor is at least half the message.
  Message m;
  m.envelope = {kProtocolVersion, 5, 4, 9, 31};
  std::vector<float> delta(1000, 0.5f);
  m.body = TaskResult{{Tensor::Float32("delta", {1000}, delta)}, 3.0, {{"train_loss", 1.0}}};
  std::optional<ContributionOffer> c = ContributionOf(m, 4100);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(*c, (ContributionOffer{4, 9, 3.0, 1000}));
  EXPECT_FALSE(ContributionOf(m, 8100).has_value());  // less than half of the message
  m.body = TaskResult{{}, 1.0, {}};
  EXPECT_FALSE(ContributionOf(m, 100).has_value());
}

// The reassembler hands a streamed bin out as it arrives, in whole float words, and completes the
// message without it; the tensor keeps its shape and gets no data.
TEST(ReassemblerTest, StreamedBinIsTakenOutAsItArrives) {
  Message m;
  m.envelope = {kProtocolVersion, 5, 4, 9, 31};
  std::vector<float> delta(30001);
  for (size_t i = 0; i < delta.size(); ++i) delta[i] = static_cast<float>(i) * 0.25f;
  m.body = TaskResult{{Tensor::Float32("delta", {delta.size()}, delta)}, 3.0,
                      {{"train_loss", 1.0}}};
  StatusOr<std::string> bytes = EncodeMessage(m);
  ASSERT_TRUE(bytes.ok());
  const std::vector<Chunk> chunks = SplitIntoChunks(*bytes, 31, 4099);  // cuts words apart
  ChunkReassembler r(kMaxReassemblyBytes, kMaxPendingChunkedMessages, true);
  r.StreamBin(31);
  std::string streamed;
  std::optional<AssembledMessage> done;
  for (const Chunk& c : chunks) {
    StatusOr<std::optional<AssembledMessage>> got = r.AddAssembled(ChunkView{c.message_id, c.index, c.count, c.total_bytes, c.data});
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    if (got->has_value()) {
      done = std::move(**got);
      break;
    }
    EXPECT_TRUE(r.Streams(31));
    uint64_t offset = 0;
    const std::string piece = r.TakeBin(31, &offset);
    EXPECT_EQ(piece.size() % 4, 0u);
    if (!piece.empty()) EXPECT_EQ(offset, streamed.size());
    streamed += piece;
  }
  ASSERT_TRUE(done.has_value());
  ASSERT_TRUE(done->streamed);
  EXPECT_EQ(done->bin_offset, streamed.size());
  EXPECT_EQ(done->bin_bytes, delta.size() * 4);
  streamed += *done->bin;
  done->bin = std::string();
  ASSERT_EQ(streamed.size(), delta.size() * 4);
  EXPECT_EQ(std::memcmp(streamed.data(), delta.data(), streamed.size()), 0);
  StatusOr<Message> rest = DecodeAssembled(std::move(*done));
  ASSERT_TRUE(rest.ok()) << rest.status().ToString();
  const auto& result = std::get<TaskResult>(rest->body);
  ASSERT_EQ(result.tensors.size(), 1u);
  EXPECT_EQ(result.tensors[0].shape, std::vector<uint64_t>{delta.size()});
  EXPECT_TRUE(result.tensors[0].data.empty());
  EXPECT_EQ(result.weight, 3.0);
}

}  // namespace
}  // namespace tandem::wire

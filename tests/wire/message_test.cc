// The message codec: round trips of every type, and rejection of every kind of bad frame with a
// Status that names the reason (docs/protocol.md "Validation").
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "tests/wire/test_messages.h"
#include "wire/message.h"

namespace tandem::wire {
namespace {

using testing::RawWriter;
using testing::SampleEnvelope;
using testing::SampleMessages;

std::string MustEncode(const Message& m) {
  StatusOr<std::string> bytes = EncodeMessage(m);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return bytes.ok() ? *bytes : std::string();
}

// Expects decoding to fail with a message containing `reason`.
void ExpectRejected(std::string_view bytes, const std::string& reason) {
  StatusOr<Message> m = DecodeMessage(bytes);
  ASSERT_FALSE(m.ok()) << "decoded a frame that should fail with '" << reason << "'";
  EXPECT_NE(m.status().message().find(reason), std::string::npos) << m.status().ToString();
}

void ReplaceOnce(std::string& bytes, std::string_view from, std::string_view to) {
  ASSERT_EQ(from.size(), to.size());
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, from.size(), to);
}

TEST(MessageTest, EveryTypeRoundTrips) {
  for (const Message& m : SampleMessages()) {
    const std::string bytes = MustEncode(m);
    StatusOr<Message> back = DecodeMessage(bytes);
    ASSERT_TRUE(back.ok()) << MessageTypeName(m.type()) << ": " << back.status().ToString();
    EXPECT_EQ(*back, m) << MessageTypeName(m.type());
    EXPECT_EQ(back->type(), m.type());
    StatusOr<MessageType> peeked = PeekType(bytes);
    ASSERT_TRUE(peeked.ok());
    EXPECT_EQ(*peeked, m.type());
  }
}

TEST(MessageTest, TensorValuesSurviveBitExact) {
  const std::vector<float> values = {-0.0f, std::numeric_limits<float>::denorm_min(),
                                     std::numeric_limits<float>::max(),
                                     std::numeric_limits<float>::lowest(), 1.0f / 3.0f};
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("t", {5}, values));
  r.weight = 1.0;
  StatusOr<Message> back = DecodeMessage(MustEncode({SampleEnvelope(), r}));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  const std::vector<float> got = std::get<TaskResult>(back->body).tensors[0].ToFloat32();
  ASSERT_EQ(got.size(), values.size());
  EXPECT_EQ(std::memcmp(got.data(), values.data(), values.size() * 4), 0);
}

TEST(MessageTest, TensorsTravelAsBinNotFloatArrays) {
  std::vector<float> values(1000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.001f * static_cast<float>(i);
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("w", {10, 100}, values));
  const std::string bytes = MustEncode({SampleEnvelope(), r});
  // bin 16 (0xc5, length 4000 big-endian) then the little-endian floats verbatim.
  std::string raw(4000, '\0');
  std::memcpy(raw.data(), values.data(), 4000);  // tests run on little-endian hosts
  EXPECT_NE(bytes.find(std::string("\xc5\x0f\xa0", 3) + raw), std::string::npos);
  EXPECT_LT(bytes.size(), 4000u + 200u);
}

TEST(MessageTest, EveryPrefixIsRejected) {
  for (const Message& m : SampleMessages()) {
    const std::string bytes = MustEncode(m);
    for (size_t n = 0; n < bytes.size(); ++n) {
      StatusOr<Message> d = DecodeMessage(std::string_view(bytes.data(), n));
      ASSERT_FALSE(d.ok()) << MessageTypeName(m.type()) << " prefix " << n;
      // Copy into an exact-size buffer so ASan sees any read past the end.
      const std::string exact(bytes.data(), n);
      EXPECT_FALSE(DecodeMessage(exact).ok());
    }
  }
  ExpectRejected("", "empty frame");
  const std::string bytes = MustEncode(SampleMessages()[3]);
  ExpectRejected(bytes.substr(0, bytes.size() - 1), "truncated");
}

TEST(MessageTest, TrailingBytesAreRejected) {
  const std::string bytes = MustEncode(SampleMessages()[2]);
  ExpectRejected(bytes + '\0', "1 trailing bytes");
  ExpectRejected(bytes + bytes, "trailing bytes");
}

TEST(MessageTest, UnsupportedVersionAndUnknownTypeAreNamed) {
  for (uint64_t version : {uint64_t{0}, uint64_t{2}, uint64_t{1} << 40}) {
    RawWriter w;
    w.Envelope(static_cast<uint8_t>(MessageType::kHeartbeat), version);
    w.pk().pack_map(0);
    StatusOr<Message> m = DecodeMessage(w.bytes());
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find("unsupported protocol version"), std::string::npos);
    EXPECT_FALSE(PeekType(w.bytes()).ok());
  }
  for (uint8_t type : {0, 10, 11, 14, 200}) {
    RawWriter w;
    w.Envelope(type);
    w.pk().pack_map(0);
    ExpectRejected(w.bytes(), "unknown message type " + std::to_string(type));
  }
}

TEST(MessageTest, WrongMsgpackTypesAreRejected) {
  {
    RawWriter w;  // not an array at all
    w.pk().pack_map(0);
    ExpectRejected(w.bytes(), "not a tandem frame");
  }
  {
    RawWriter w;  // round as a string
    w.pk().pack_array(7);
    w.pk().pack_uint8(1);
    w.pk().pack_uint8(static_cast<uint8_t>(MessageType::kHeartbeat));
    w.pk().pack_uint8(1);
    w.Str("three");
    w.pk().pack_uint8(0);
    w.pk().pack_uint8(0);
    w.pk().pack_map(0);
    ExpectRejected(w.bytes(), "envelope.round: expected an unsigned integer, got str");
  }
  {
    RawWriter w;  // negative sequence
    w.pk().pack_array(7);
    for (int i = 0; i < 5; ++i) w.pk().pack_uint8(i == 1 ? 3 : 1);
    w.pk().pack_int8(-1);
    w.pk().pack_map(0);
    ExpectRejected(w.bytes(), "envelope.sequence: expected an unsigned integer, got negative");
  }
  {
    RawWriter w;  // body as an array
    w.Envelope(static_cast<uint8_t>(MessageType::kBye));
    w.pk().pack_array(1);
    w.Str("bye");
    ExpectRejected(w.bytes(), "Bye: expected a map, got array");
  }
  {
    RawWriter w;  // envelope with 6 fields
    w.Envelope(static_cast<uint8_t>(MessageType::kHeartbeat), kProtocolVersion, 6);
    ExpectRejected(w.bytes(), "envelope has 6 fields");
  }
  {
    RawWriter w;  // tensor data as an array of floats
    w.Envelope(static_cast<uint8_t>(MessageType::kTaskResult));
    w.pk().pack_map(3);
    w.Str("tensors");
    w.pk().pack_array(1);
    w.pk().pack_map(4);
    w.Str("name");
    w.Str("t");
    w.Str("dtype");
    w.Str("f32");
    w.Str("shape");
    w.pk().pack_array(1);
    w.pk().pack_uint8(2);
    w.Str("data");
    w.pk().pack_array(2);
    w.pk().pack_float(1.0f);
    w.pk().pack_float(2.0f);
    w.Str("weight");
    w.pk().pack_double(1.0);
    w.Str("metrics");
    w.pk().pack_map(0);
    ExpectRejected(w.bytes(), "TaskResult.tensors[0].data: expected bin, got array");
  }
  {
    RawWriter w;  // weight as a string
    w.Envelope(static_cast<uint8_t>(MessageType::kTaskResult));
    w.pk().pack_map(3);
    w.Str("tensors");
    w.pk().pack_array(0);
    w.Str("weight");
    w.Str("1.0");
    w.Str("metrics");
    w.pk().pack_map(0);
    ExpectRejected(w.bytes(), "TaskResult.weight: expected a number, got str");
  }
  {
    RawWriter w;  // ext values are not part of the protocol
    w.Envelope(static_cast<uint8_t>(MessageType::kBye));
    w.pk().pack_map(1);
    w.Str("reason");
    w.pk().pack_ext(1, 5);
    w.pk().pack_ext_body("x", 1);
    ExpectRejected(w.bytes(), "ext");
  }
}

TEST(MessageTest, UnknownMissingAndDuplicateFieldsAreRejected) {
  {
    RawWriter w;
    w.Envelope(static_cast<uint8_t>(MessageType::kBye));
    w.pk().pack_map(2);
    w.Str("reason");
    w.Str("x");
    w.Str("extra");
    w.Str("y");
    ExpectRejected(w.bytes(), "Bye: unknown field 'extra'");
  }
  {
    RawWriter w;
    w.Envelope(static_cast<uint8_t>(MessageType::kBye));
    w.pk().pack_map(0);
    ExpectRejected(w.bytes(), "Bye: missing field 'reason'");
  }
  {
    RawWriter w;
    w.Envelope(static_cast<uint8_t>(MessageType::kBye));
    w.pk().pack_map(2);
    w.Str("reason");
    w.Str("x");
    w.Str("reason");
    w.Str("y");
    ExpectRejected(w.bytes(), "Bye: duplicate field 'reason'");
  }
  {
    RawWriter w;  // a map key that is not a string
    w.Envelope(static_cast<uint8_t>(MessageType::kBye));
    w.pk().pack_map(1);
    w.pk().pack_uint8(1);
    w.Str("x");
    ExpectRejected(w.bytes(), "Bye key: expected a string");
  }
}

TEST(MessageTest, OversizedDeclaredLengthsAreRejectedWithoutAllocating) {
  const std::string env = [] {
    RawWriter w;
    w.Envelope(static_cast<uint8_t>(MessageType::kBye));
    return w.bytes();
  }();
  // bin 32 declaring ~4 GiB with 3 bytes present.
  ExpectRejected(env + std::string("\x81\xa6reason\xc6\xff\xff\xff\xf0" "abc", 16), "truncated");
  // str 32 declaring 1 GiB.
  ExpectRejected(env + std::string("\x81\xa6reason\xdb\x40\x00\x00\x00" "abc", 16), "truncated");
  // array 32 declaring 4 Gi elements: refused before the object tree is built.
  ExpectRejected(env + std::string("\xdd\xff\xff\xff\xff", 5), "more msgpack values");
  // map 32 declaring 2 Gi pairs.
  ExpectRejected(env + std::string("\xdf\x7f\xff\xff\xff", 5), "more msgpack values");
  // Deep nesting: 1000 nested one-element arrays.
  ExpectRejected(env + std::string(1000, '\x91') + '\x01', "nesting deeper");
  // A complete string above kMaxStringBytes.
  {
    RawWriter w;
    w.Envelope(static_cast<uint8_t>(MessageType::kBye));
    w.pk().pack_map(1);
    w.Str("reason");
    w.Str(std::string(kMaxStringBytes + 1, 'x'));
    ExpectRejected(w.bytes(), "longer than");
  }
  // Too many tensors, declared: refused by the array limit.
  {
    RawWriter w;
    w.Envelope(static_cast<uint8_t>(MessageType::kTaskResult));
    w.pk().pack_map(3);
    w.Str("tensors");
    w.pk().pack_array(kMaxTensorsPerMessage + 1);
    for (size_t i = 0; i <= kMaxTensorsPerMessage; ++i) w.pk().pack_nil();
    w.Str("weight");
    w.pk().pack_double(1);
    w.Str("metrics");
    w.pk().pack_map(0);
    ExpectRejected(w.bytes(), "entries exceed the limit of 1024");
  }
}

TEST(MessageTest, ShapeThatDisagreesWithByteLengthIsRejected) {
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("t", {2, 2}, std::vector<float>{1, 2, 3, 4}));
  r.weight = 1.0;
  Message m{SampleEnvelope(), r};
  std::string bytes = MustEncode(m);
  // Shape [2, 2] is encoded as 0x92 0x02 0x02; make it [2, 3].
  ReplaceOnce(bytes, std::string("\xa5shape\x92\x02\x02", 9),
              std::string("\xa5shape\x92\x02\x03", 9));
  ExpectRejected(bytes, "shape holds 6 elements but data has 16 bytes");

  // The encoder refuses to produce it in the first place.
  std::get<TaskResult>(m.body).tensors[0].shape = {3, 2};
  StatusOr<std::string> enc = EncodeMessage(m);
  ASSERT_FALSE(enc.ok());
  EXPECT_NE(enc.status().message().find("shape holds 6 elements"), std::string::npos);

  // A product that overflows, and a rank above the limit.
  std::get<TaskResult>(m.body).tensors[0].shape = {uint64_t{1} << 32, uint64_t{1} << 32};
  EXPECT_FALSE(EncodeMessage(m).ok());
  std::get<TaskResult>(m.body).tensors[0].shape = std::vector<uint64_t>(kMaxTensorRank + 1, 1);
  std::get<TaskResult>(m.body).tensors[0].data.resize(4);
  enc = EncodeMessage(m);
  ASSERT_FALSE(enc.ok());
  EXPECT_NE(enc.status().message().find("rank 9"), std::string::npos);
}

TEST(MessageTest, NonFiniteFloatsAreRejected) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    const std::vector<float> good = {1.0f, 2.0f, 3.0f};
    TaskResult r;
    r.tensors.push_back(Tensor::Float32("t", {3}, good));
    r.weight = 1.0;
    std::string bytes = MustEncode({SampleEnvelope(), r});
    const float two = 2.0f;
    ReplaceOnce(bytes, std::string_view(reinterpret_cast<const char*>(&two), 4),
                std::string_view(reinterpret_cast<const char*>(&bad), 4));
    ExpectRejected(bytes, std::isnan(bad) ? "element 1 is NaN" : "element 1 is infinite");

    const std::vector<float> with_bad = {1.0f, bad, 3.0f};
    r.tensors[0] = Tensor::Float32("t", {3}, with_bad);
    EXPECT_FALSE(EncodeMessage({SampleEnvelope(), r}).ok());
  }
  // u32 tensors carry ring elements: any bit pattern is fine.
  TaskResult r;
  r.tensors.push_back(Tensor::Uint32("m", {1}, std::vector<uint32_t>{0x7FC00000u}));
  EXPECT_TRUE(EncodeMessage({SampleEnvelope(), r}).ok());
  // So do u64 tensors, and u8 tensors are opaque bytes; both round-trip exactly.
  const std::vector<uint64_t> words = {0x7FF8000000000000ull, ~0ull, 0};
  const std::vector<uint8_t> bytes = {0, 255, 7};
  r.tensors.push_back(Tensor::Uint64("w", {3}, words));
  r.tensors.push_back(Tensor::Bytes("b", bytes));
  StatusOr<std::string> wide = EncodeMessage({SampleEnvelope(), r});
  ASSERT_TRUE(wide.ok()) << wide.status().ToString();
  StatusOr<Message> back = DecodeMessage(std::string_view(*wide));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  const auto& tensors = std::get<TaskResult>(back->body).tensors;
  EXPECT_EQ(tensors[1].ToUint64(), words);
  EXPECT_EQ(std::vector<uint8_t>(tensors[2].AsBytes().begin(), tensors[2].AsBytes().end()), bytes);
  // A u64 tensor whose bytes are not a whole number of words is refused.
  Tensor ragged = Tensor::Uint64("w", {3}, words);
  ragged.data.pop_back();
  EXPECT_FALSE(ValidateTensor(ragged).ok());
  // Non-finite scalars.
  TaskResult w;
  w.weight = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), w}).ok());
  w.weight = -1.0;
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), w}).ok());
  w.weight = 1.0;
  w.metrics["loss"] = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), w}).ok());
  TaskAssign a;
  a.kind = "k";
  a.params["lr"] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), a}).ok());
}

TEST(MessageTest, EmptyAndDuplicateNamesAreRejected) {
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("aa", {1}, std::vector<float>{1}));
  r.tensors.push_back(Tensor::Float32("bb", {1}, std::vector<float>{2}));
  std::string bytes = MustEncode({SampleEnvelope(), r});
  ReplaceOnce(bytes, "\xa2" "bb", "\xa2" "aa");
  ExpectRejected(bytes, "duplicate tensor name 'aa'");

  TaskResult e;
  e.tensors.push_back(Tensor::Float32("", {1}, std::vector<float>{1}));
  StatusOr<std::string> enc = EncodeMessage({SampleEnvelope(), e});
  ASSERT_FALSE(enc.ok());
  EXPECT_NE(enc.status().message().find("empty name"), std::string::npos);

  TaskAssign a;  // empty kind, empty parameter name
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), a}).ok());
  a.kind = "k";
  a.params[""] = int64_t{1};
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), a}).ok());

  Hello h{"agent", {"x", "x"}};
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(0), h}).ok());
}

TEST(MessageTest, SemanticRulesOfBodies) {
  // Task messages need a task id.
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(0), TaskCancel{"x"}}).ok());
  // Unknown error code.
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), Error{static_cast<ErrorCode>(99), "x"}}).ok());
  // Heartbeat interval zero, timeout below interval.
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), Welcome{1, 0, 10}}).ok());
  EXPECT_FALSE(EncodeMessage({SampleEnvelope(), Welcome{1, 100, 10}}).ok());
  // Too many tensors.
  TaskResult r;
  for (size_t i = 0; i <= kMaxTensorsPerMessage; ++i) {
    std::string name = "t";  // not "t" + to_string(i): GCC 12 -Wrestrict false positive
    name += std::to_string(i);
    r.tensors.push_back(Tensor::Float32(name, {}, std::vector<float>{1}));
  }
  StatusOr<std::string> enc = EncodeMessage({SampleEnvelope(), r});
  ASSERT_FALSE(enc.ok());
  EXPECT_NE(enc.status().message().find("1025 tensors"), std::string::npos);
}

TEST(MessageTest, ParamIntegerAboveInt64IsRejected) {
  RawWriter w;
  w.Envelope(static_cast<uint8_t>(MessageType::kTaskAssign));
  w.pk().pack_map(4);
  w.Str("kind");
  w.Str("k");
  w.Str("params");
  w.pk().pack_map(1);
  w.Str("big");
  w.pk().pack_uint64(UINT64_MAX);
  w.Str("tensors");
  w.pk().pack_array(0);
  w.Str("deadline_ms");
  w.pk().pack_uint8(0);
  ExpectRejected(w.bytes(), "does not fit in int64");
}

TEST(MessageTest, NumbersMayArriveAsIntegersOrFloat32) {
  // Other encoders write 1 for 1.0 and may use float32; both read as double.
  RawWriter w;
  w.Envelope(static_cast<uint8_t>(MessageType::kTaskResult));
  w.pk().pack_map(3);
  w.Str("metrics");
  w.pk().pack_map(2);
  w.Str("a");
  w.pk().pack_float(0.5f);
  w.Str("b");
  w.pk().pack_int8(-2);
  w.Str("weight");
  w.pk().pack_uint8(3);
  w.Str("tensors");
  w.pk().pack_array(0);
  StatusOr<Message> m = DecodeMessage(w.bytes());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const auto& r = std::get<TaskResult>(m->body);
  EXPECT_EQ(r.weight, 3.0);
  EXPECT_EQ(r.metrics.at("a"), 0.5);
  EXPECT_EQ(r.metrics.at("b"), -2.0);
}

}  // namespace
}  // namespace tandem::wire

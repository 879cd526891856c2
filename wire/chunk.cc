// Chunk frames and their reassembly; see wire/chunk.h.
#include "wire/chunk.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <utility>

#include "wire/msgpack_detail.h"

namespace tandem::wire {
namespace {

constexpr size_t kChunkFields = 7;  // version, type, message_id, index, count, total_bytes, data
constexpr size_t kOfferFields = 5;  // version, type, message_id, count, total_bytes
// ... then round, task_id, weight, values when the offer declares a contribution.
constexpr size_t kContributionOfferFields = 9;
constexpr size_t kGrantFields = 3;  // version, type, message_id
// An offer encodes to at most 31 bytes, a grant to 17; anything much longer is not one.
constexpr size_t kMaxFlowFrameBytes = 96;

std::string Id(uint64_t message_id) { return "chunked message " + std::to_string(message_id); }

// Room in front of a chunk's payload for its header: fixarray, version (uint32), type, message_id
// (uint64), index and count (uint32), total_bytes (uint64), bin32 header = at most 41 bytes.
constexpr size_t kHeaderRoom = 64;

// The frame header of a chunk, everything before its data bytes.
std::string EncodeChunkHeader(uint64_t message_id, uint32_t index, uint32_t count,
                              uint64_t total_bytes, size_t data_size) {
  std::string out;
  out.reserve(kHeaderRoom);
  detail::StringWriter writer{&out};
  msgpack::packer<detail::StringWriter> pk(writer);
  pk.pack_array(kChunkFields);
  pk.pack_uint32(kProtocolVersion);
  pk.pack_uint8(static_cast<uint8_t>(MessageType::kChunk));
  pk.pack_uint64(message_id);
  pk.pack_uint32(index);
  pk.pack_uint32(count);
  pk.pack_uint64(total_bytes);
  pk.pack_bin(static_cast<uint32_t>(data_size));
  TANDEM_CHECK(out.size() <= kHeaderRoom);
  return out;
}

// Receives an encoding as it is produced and cuts it into chunk frames, each built in place: the
// payload is copied into a buffer once, the header written in front of it when the payload is
// complete.
class ChunkFrameBuilder {
 public:
  ChunkFrameBuilder(uint64_t message_id, uint64_t total_bytes, size_t chunk_bytes,
                    const std::function<void(Frame)>& emit)
      : message_id_(message_id),
        total_bytes_(total_bytes),
        chunk_bytes_(chunk_bytes),
        count_(static_cast<uint32_t>((total_bytes + chunk_bytes - 1) / chunk_bytes)),
        emit_(emit) {}

  static void Sink(void* self, const char* data, size_t size) {
    static_cast<ChunkFrameBuilder*>(self)->Write(data, size);
  }

  void Write(const char* data, size_t size) {
    while (size > 0) {
      if (!buffer_) Start();
      const size_t n = std::min(size, payload_ - filled_);
      std::memcpy(buffer_.get() + kHeaderRoom + filled_, data, n);
      filled_ += n;
      data += n;
      size -= n;
      if (filled_ == payload_) Finish();
    }
  }

  // Every byte of the declared total was written and every frame emitted.
  bool done() const { return index_ == count_ && !buffer_; }

 private:
  void Start() {
    TANDEM_CHECK(index_ < count_);
    payload_ = static_cast<size_t>(
        std::min<uint64_t>(chunk_bytes_, total_bytes_ - uint64_t{index_} * chunk_bytes_));
    buffer_ = std::make_unique_for_overwrite<char[]>(kHeaderRoom + payload_);
    filled_ = 0;
  }
  void Finish() {
    const std::string header =
        EncodeChunkHeader(message_id_, index_, count_, total_bytes_, payload_);
    const size_t offset = kHeaderRoom - header.size();
    std::memcpy(buffer_.get() + offset, header.data(), header.size());
    emit_(Frame(std::move(buffer_), offset, header.size() + payload_));
    buffer_.reset();
    ++index_;
  }

  uint64_t message_id_;
  uint64_t total_bytes_;
  size_t chunk_bytes_;
  uint32_t count_;
  const std::function<void(Frame)>& emit_;
  uint32_t index_ = 0;
  std::unique_ptr<char[]> buffer_;
  size_t payload_ = 0;
  size_t filled_ = 0;
};

// The first two fields of a flow-control frame, which the message header check (types up to
// kMaxMessageType) does not know: the root array of `fields` values, the version, the type.
Status ReadFramingHeader(const msgpack::object& root, MessageType expected, size_t fields) {
  const std::string what(MessageTypeName(expected));
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 2) {
    return Status::Corruption("not a tandem frame: expected an array [version, type, ...]");
  }
  const msgpack::object* f = root.via.array.ptr;
  TANDEM_ASSIGN_OR_RETURN(const uint64_t version, detail::ReadUint(f[0], "version"));
  if (version != kProtocolVersion) {
    return Status::InvalidArgument("unsupported protocol version " + std::to_string(version) +
                                   " (this build speaks version " +
                                   std::to_string(kProtocolVersion) + ")");
  }
  TANDEM_ASSIGN_OR_RETURN(const uint64_t type, detail::ReadUint(f[1], "type"));
  if (type != static_cast<uint64_t>(expected)) {
    const std::string got = type >= kMinMessageType && type <= kMaxFrameType
                                ? std::string(MessageTypeName(static_cast<MessageType>(type)))
                                : "unknown type " + std::to_string(type);
    return Status::Corruption("expected a " + what + ", got a " + got + " frame");
  }
  if (root.via.array.size != fields) {
    return Status::Corruption(what + " has " + std::to_string(root.via.array.size) +
                              " fields, expected " + std::to_string(fields));
  }
  return Status::Ok();
}

ChunkView ViewOf(const Chunk& c) {
  return ChunkView{c.message_id, c.index, c.count, c.total_bytes, c.data};
}

struct BinLocation {
  uint64_t header = 0;  // offset of the bin's type byte
  uint64_t begin = 0;   // offset of its first data byte
  uint64_t length = 0;
};

uint64_t BigEndian(const unsigned char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

// Walks the msgpack values of a message's first bytes, in order, to the first bin of at least
// `min_length` bytes; nullopt if the prefix ends first or holds something odd. Arrays and maps
// are just headers here (their elements follow inline), so no structure is kept. This only
// decides where bytes are put while reassembling; DecodeAssembled validates everything.
std::optional<BinLocation> FindLargeBin(std::string_view prefix, uint64_t min_length) {
  const auto* p = reinterpret_cast<const unsigned char*>(prefix.data());
  const uint64_t size = prefix.size();
  uint64_t pos = 0;
  while (pos < size) {
    const unsigned char t = p[pos];
    uint64_t header = 1;       // bytes of the type byte and its length or value
    uint64_t length_size = 0;  // bytes of a str/bin/ext length field, after the type byte
    uint64_t extra = 0;        // bytes after the length field (ext type), before the payload
    bool is_bin = false;
    bool has_payload = false;
    if (t <= 0x7f || t >= 0xe0 || (t >= 0x80 && t <= 0x9f) || t == 0xc0 || t == 0xc2 ||
        t == 0xc3) {
      // fixint, fixmap, fixarray, nil, bool
    } else if (t >= 0xa0 && t <= 0xbf) {
      if (pos + 1 + (t & 0x1f) > size) return std::nullopt;
      pos += 1 + (t & 0x1f);  // fixstr
      continue;
    } else {
      switch (t) {
        case 0xc4: case 0xc5: case 0xc6:  // bin 8/16/32
          length_size = size_t{1} << (t - 0xc4);
          is_bin = has_payload = true;
          break;
        case 0xd9: case 0xda: case 0xdb:  // str 8/16/32
          length_size = size_t{1} << (t - 0xd9);
          has_payload = true;
          break;
        case 0xc7: case 0xc8: case 0xc9:  // ext 8/16/32
          length_size = size_t{1} << (t - 0xc7);
          extra = 1;
          has_payload = true;
          break;
        case 0xca: header = 5; break;  // float32
        case 0xcb: header = 9; break;  // float64
        case 0xcc: case 0xd0: header = 2; break;
        case 0xcd: case 0xd1: case 0xdc: case 0xde: header = 3; break;
        case 0xce: case 0xd2: case 0xdd: case 0xdf: header = 5; break;
        case 0xcf: case 0xd3: header = 9; break;
        case 0xd4: header = 3; break;  // fixext 1, 2, 4, 8, 16: type byte + data
        case 0xd5: header = 4; break;
        case 0xd6: header = 6; break;
        case 0xd7: header = 10; break;
        case 0xd8: header = 18; break;
        default: return std::nullopt;  // 0xc1 is never used
      }
    }
    if (!has_payload) {
      pos += header;
      continue;
    }
    header = 1 + length_size + extra;
    if (pos + header > size) return std::nullopt;
    const uint64_t length = BigEndian(p + pos + 1, length_size);
    if (is_bin && length >= min_length) return BinLocation{pos, pos + header, length};
    pos += header + length;
  }
  return std::nullopt;
}

}  // namespace

Status ValidateChunk(const ChunkView& c) {
  const std::string what = Id(c.message_id);
  if (c.count == 0 || c.count > kMaxChunksPerMessage) {
    return Status::InvalidArgument(what + ": chunk count " + std::to_string(c.count) +
                                   " outside 1.." + std::to_string(kMaxChunksPerMessage));
  }
  if (c.index >= c.count) {
    return Status::InvalidArgument(what + ": chunk index " + std::to_string(c.index) +
                                   " not below count " + std::to_string(c.count));
  }
  if (c.total_bytes == 0 || c.total_bytes > kMaxMessageBytes) {
    return Status::InvalidArgument(what + ": declared total of " + std::to_string(c.total_bytes) +
                                   " bytes outside 1.." + std::to_string(kMaxMessageBytes));
  }
  // Every chunk holds 1..kMaxChunkBytes bytes, so count chunks carry count..count*max bytes.
  if (c.count > c.total_bytes || c.total_bytes > uint64_t{c.count} * kMaxChunkBytes) {
    return Status::InvalidArgument(what + ": " + std::to_string(c.count) +
                                   " chunks cannot carry " + std::to_string(c.total_bytes) +
                                   " bytes");
  }
  if (c.data.empty() || c.data.size() > kMaxChunkBytes || c.data.size() > c.total_bytes) {
    return Status::InvalidArgument(what + ": chunk " + std::to_string(c.index) + " has " +
                                   std::to_string(c.data.size()) + " bytes");
  }
  return Status::Ok();
}

Status ValidateChunk(const Chunk& c) { return ValidateChunk(ViewOf(c)); }

Status ValidateChunkOffer(const ChunkOffer& o) {
  const std::string what = "offer of " + Id(o.message_id);
  if (o.count == 0 || o.count > kMaxChunksPerMessage) {
    return Status::InvalidArgument(what + ": chunk count " + std::to_string(o.count) +
                                   " outside 1.." + std::to_string(kMaxChunksPerMessage));
  }
  if (o.total_bytes == 0 || o.total_bytes > kMaxMessageBytes) {
    return Status::InvalidArgument(what + ": declared total of " + std::to_string(o.total_bytes) +
                                   " bytes outside 1.." + std::to_string(kMaxMessageBytes));
  }
  if (o.count > o.total_bytes || o.total_bytes > uint64_t{o.count} * kMaxChunkBytes) {
    return Status::InvalidArgument(what + ": " + std::to_string(o.count) +
                                   " chunks cannot carry " + std::to_string(o.total_bytes) +
                                   " bytes");
  }
  if (const auto& c = o.contribution) {
    if (c->task_id == 0) return Status::InvalidArgument(what + ": contribution task_id is 0");
    if (!std::isfinite(c->weight) || c->weight < 0) {
      return Status::InvalidArgument(what + ": contribution weight is not a finite number >= 0");
    }
    if (c->values == 0 || c->values > kMaxTensorElements || 4 * c->values > o.total_bytes) {
      return Status::InvalidArgument(what + ": a contribution of " + std::to_string(c->values) +
                                     " values does not fit " + std::to_string(o.total_bytes) +
                                     " bytes");
    }
  }
  return Status::Ok();
}

std::optional<ContributionOffer> ContributionOf(const Message& message, uint64_t total_bytes) {
  const auto* result = std::get_if<TaskResult>(&message.body);
  if (result == nullptr || result->tensors.size() != 1) return std::nullopt;
  const Tensor& t = result->tensors[0];
  // The bin a detaching reassembler takes apart: at least half of the message.
  if (t.dtype != DType::kFloat32 || t.data.empty() || 2 * t.data.size() < total_bytes) {
    return std::nullopt;
  }
  return ContributionOffer{message.envelope.round, message.envelope.task_id, result->weight,
                           t.data.size() / 4};
}

std::string EncodeChunkOffer(const ChunkOffer& o) {
  TANDEM_CHECK(ValidateChunkOffer(o).ok());
  std::string out;
  detail::StringWriter writer{&out};
  msgpack::packer<detail::StringWriter> pk(writer);
  pk.pack_array(o.contribution ? kContributionOfferFields : kOfferFields);
  pk.pack_uint32(kProtocolVersion);
  pk.pack_uint8(static_cast<uint8_t>(MessageType::kChunkOffer));
  pk.pack_uint64(o.message_id);
  pk.pack_uint32(o.count);
  pk.pack_uint64(o.total_bytes);
  if (const auto& c = o.contribution) {
    pk.pack_uint64(c->round);
    pk.pack_uint64(c->task_id);
    pk.pack_double(c->weight);
    pk.pack_uint64(c->values);
  }
  return out;
}

std::string EncodeChunkGrant(const ChunkGrant& g) {
  std::string out;
  detail::StringWriter writer{&out};
  msgpack::packer<detail::StringWriter> pk(writer);
  pk.pack_array(kGrantFields);
  pk.pack_uint32(kProtocolVersion);
  pk.pack_uint8(static_cast<uint8_t>(MessageType::kChunkGrant));
  pk.pack_uint64(g.message_id);
  return out;
}

StatusOr<ChunkOffer> DecodeChunkOffer(std::string_view bytes) {
  if (bytes.size() > kMaxFlowFrameBytes) {
    return Status::Corruption("ChunkOffer frame of " + std::to_string(bytes.size()) +
                              " bytes; at most " + std::to_string(kMaxFlowFrameBytes));
  }
  detail::Document doc;
  TANDEM_RETURN_IF_ERROR(detail::ParseDocument(bytes, &doc));
  const msgpack::object& root = doc.root();
  const bool contribution = root.type == msgpack::type::ARRAY &&
                            root.via.array.size == kContributionOfferFields;
  TANDEM_RETURN_IF_ERROR(ReadFramingHeader(
      root, MessageType::kChunkOffer, contribution ? kContributionOfferFields : kOfferFields));
  const msgpack::object* f = root.via.array.ptr;
  ChunkOffer o;
  TANDEM_ASSIGN_OR_RETURN(o.message_id, detail::ReadUint(f[2], "offer.message_id"));
  TANDEM_ASSIGN_OR_RETURN(const uint64_t count,
                          detail::ReadUint(f[3], "offer.count", kMaxChunksPerMessage));
  o.count = static_cast<uint32_t>(count);
  TANDEM_ASSIGN_OR_RETURN(o.total_bytes,
                          detail::ReadUint(f[4], "offer.total_bytes", kMaxMessageBytes));
  if (contribution) {
    ContributionOffer c;
    TANDEM_ASSIGN_OR_RETURN(c.round, detail::ReadUint(f[5], "offer.round"));
    TANDEM_ASSIGN_OR_RETURN(c.task_id, detail::ReadUint(f[6], "offer.task_id"));
    // msgpack-c packs a double that holds a whole number as an integer.
    switch (f[7].type) {
      case msgpack::type::FLOAT32:
      case msgpack::type::FLOAT64: c.weight = f[7].via.f64; break;
      case msgpack::type::POSITIVE_INTEGER: c.weight = static_cast<double>(f[7].via.u64); break;
      default: return Status::Corruption("offer.weight: expected a non-negative number");
    }
    TANDEM_ASSIGN_OR_RETURN(c.values,
                            detail::ReadUint(f[8], "offer.values", kMaxTensorElements));
    o.contribution = c;
  }
  Status valid = ValidateChunkOffer(o);
  if (!valid.ok()) return Status::Corruption(valid.message());
  return o;
}

StatusOr<ChunkGrant> DecodeChunkGrant(std::string_view bytes) {
  if (bytes.size() > kMaxFlowFrameBytes) {
    return Status::Corruption("ChunkGrant frame of " + std::to_string(bytes.size()) +
                              " bytes; at most " + std::to_string(kMaxFlowFrameBytes));
  }
  detail::Document doc;
  TANDEM_RETURN_IF_ERROR(detail::ParseDocument(bytes, &doc));
  const msgpack::object& root = doc.root();
  TANDEM_RETURN_IF_ERROR(ReadFramingHeader(root, MessageType::kChunkGrant, kGrantFields));
  ChunkGrant g;
  TANDEM_ASSIGN_OR_RETURN(g.message_id,
                          detail::ReadUint(root.via.array.ptr[2], "grant.message_id"));
  return g;
}

std::vector<Chunk> SplitIntoChunks(std::string_view message, uint64_t message_id,
                                   size_t chunk_bytes) {
  TANDEM_CHECK(!message.empty() && message.size() <= kMaxMessageBytes);
  TANDEM_CHECK(chunk_bytes >= kMinChunkBytes && chunk_bytes <= kMaxChunkBytes);
  const size_t count = (message.size() + chunk_bytes - 1) / chunk_bytes;
  std::vector<Chunk> chunks(count);
  for (size_t i = 0; i < count; ++i) {
    Chunk& c = chunks[i];
    c.message_id = message_id;
    c.index = static_cast<uint32_t>(i);
    c.count = static_cast<uint32_t>(count);
    c.total_bytes = message.size();
    c.data = std::string(message.substr(i * chunk_bytes, chunk_bytes));
  }
  return chunks;
}

std::string EncodeChunk(const Chunk& c) {
  TANDEM_CHECK(ValidateChunk(c).ok());
  std::string out = EncodeChunkHeader(c.message_id, c.index, c.count, c.total_bytes, c.data.size());
  out.reserve(out.size() + c.data.size());
  out += c.data;
  return out;
}

Status EncodeMessageFrames(const Message& message, size_t chunk_bytes,
                           const std::function<void(Frame)>& emit) {
  return EncodeMessageFrames(message, chunk_bytes, nullptr, emit);
}

Status EncodeMessageFrames(
    const Message& message, size_t chunk_bytes,
    const std::function<void(uint64_t total_bytes, bool chunked, uint32_t count)>& start,
    const std::function<void(Frame)>& emit) {
  TANDEM_CHECK(chunk_bytes >= kMinChunkBytes && chunk_bytes <= kMaxChunkBytes);
  TANDEM_RETURN_IF_ERROR(ValidateMessage(message));
  detail::StringWriter counter;  // sizes the encoding without writing it
  detail::PackValidMessage(message, counter);
  const size_t total = counter.written;
  if (total > kMaxMessageBytes) {
    return Status::InvalidArgument("encoded message of " + std::to_string(total) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(kMaxMessageBytes));
  }
  const bool chunked = total > kChunkThresholdBytes;
  if (start) {
    const size_t count = chunked ? (total + chunk_bytes - 1) / chunk_bytes : 1;
    start(total, chunked, static_cast<uint32_t>(count));
  }
  if (!chunked) {
    std::string bytes;
    bytes.reserve(total);
    detail::StringWriter writer{&bytes};
    detail::PackValidMessage(message, writer);
    emit(Frame(std::move(bytes)));
    return Status::Ok();
  }
  ChunkFrameBuilder builder(message.envelope.sequence, total, chunk_bytes, emit);
  detail::StringWriter writer;
  writer.sink = &ChunkFrameBuilder::Sink;
  writer.sink_context = &builder;
  detail::PackValidMessage(message, writer);
  TANDEM_CHECK(builder.done());
  return Status::Ok();
}

StatusOr<Chunk> DecodeChunk(std::string_view bytes) {
  TANDEM_ASSIGN_OR_RETURN(const ChunkView view, DecodeChunkView(bytes));
  return Chunk{view.message_id, view.index, view.count, view.total_bytes, std::string(view.data)};
}

StatusOr<ChunkView> DecodeChunkView(std::string_view bytes) {
  if (bytes.size() > kMaxFrameBytes) {
    return Status::Corruption("chunk frame of " + std::to_string(bytes.size()) +
                              " bytes exceeds the limit of " + std::to_string(kMaxFrameBytes));
  }
  detail::Document doc;
  TANDEM_RETURN_IF_ERROR(detail::ParseDocument(bytes, &doc));
  const msgpack::object& root = doc.root();
  MessageType type;
  TANDEM_RETURN_IF_ERROR(detail::ReadHeader(root, &type));
  if (type != MessageType::kChunk) {
    return Status::Corruption(std::string("expected a chunk, got a ") +
                              std::string(MessageTypeName(type)) + " message");
  }
  if (root.via.array.size != kChunkFields) {
    return Status::Corruption("chunk has " + std::to_string(root.via.array.size) +
                              " fields, expected " + std::to_string(kChunkFields));
  }
  const msgpack::object* f = root.via.array.ptr;
  ChunkView c;
  TANDEM_ASSIGN_OR_RETURN(c.message_id, detail::ReadUint(f[2], "chunk.message_id"));
  TANDEM_ASSIGN_OR_RETURN(const uint64_t index,
                          detail::ReadUint(f[3], "chunk.index", kMaxChunksPerMessage));
  TANDEM_ASSIGN_OR_RETURN(const uint64_t count,
                          detail::ReadUint(f[4], "chunk.count", kMaxChunksPerMessage));
  c.index = static_cast<uint32_t>(index);
  c.count = static_cast<uint32_t>(count);
  TANDEM_ASSIGN_OR_RETURN(c.total_bytes,
                          detail::ReadUint(f[5], "chunk.total_bytes", kMaxMessageBytes));
  TANDEM_ASSIGN_OR_RETURN(c.data, detail::ReadBin(f[6], "chunk.data", kMaxChunkBytes));
  Status valid = ValidateChunk(c);
  if (!valid.ok()) return Status::Corruption(valid.message());
  return c;
}

StatusOr<Message> DecodeAssembled(AssembledMessage&& message) {
  if (!message.bin) return DecodeMessage(std::move(message.bytes));
  if (message.streamed) {
    TANDEM_CHECK(message.bin->empty());  // the caller took the last bytes out
    if (message.bin_bytes == 0) return Status::Corruption("a streamed contribution is empty");
    return detail::DecodeWithDetachedBin(message.bytes, message.bin_header, std::string(), false,
                                         message.bin_bytes);
  }
  return detail::DecodeWithDetachedBin(message.bytes, message.bin_header, std::move(*message.bin),
                                       message.bin_finite);
}

ChunkReassembler::ChunkReassembler(size_t max_pending_bytes, size_t max_pending_messages,
                                   bool detach_large_bins)
    : max_pending_bytes_(max_pending_bytes),
      max_pending_messages_(max_pending_messages),
      detach_large_bins_(detach_large_bins) {}

StatusOr<std::optional<std::string>> ChunkReassembler::Add(const Chunk& chunk) {
  return Add(ViewOf(chunk));
}

StatusOr<std::optional<std::string>> ChunkReassembler::Add(const ChunkView& chunk) {
  TANDEM_CHECK(!detach_large_bins_);  // a detached bin only comes back as an AssembledMessage
  StatusOr<std::optional<AssembledMessage>> done = AddAssembled(chunk);
  if (!done.ok()) return done.status();
  if (!done->has_value()) return std::optional<std::string>();
  return std::optional<std::string>(std::move((*done)->bytes));
}

void ChunkReassembler::Place(Partial& p, std::string_view data) {
  while (!data.empty()) {
    const uint64_t pos = p.placed;
    uint64_t n = data.size();
    if (!p.detached) {
      p.assembled.append(data);
    } else if (pos < p.bin_header) {
      n = std::min<uint64_t>(n, p.bin_header - pos);
      p.assembled.append(data.substr(0, n));
      if (pos + n == p.bin_header) p.assembled.append("\xc4\x00", 2);  // the placeholder
    } else if (pos < p.bin_begin) {
      n = std::min<uint64_t>(n, p.bin_begin - pos);  // the original bin header: replaced
    } else if (pos < p.bin_end) {
      n = std::min<uint64_t>(n, p.bin_end - pos);
      p.bin.append(data.substr(0, n));
      // Scan the words just completed while they are still in cache. (A streamed bin's values
      // are checked where they are folded in.)
      const uint64_t complete = p.bin.size() & ~uint64_t{3};
      if (!p.streamed && p.bin_finite && complete > p.bin_checked) {
        if (detail::AnyNonFiniteFloat32(p.bin.data() + p.bin_checked,
                                        (complete - p.bin_checked) / 4)) {
          p.bin_finite = false;
        }
        p.bin_checked = complete;
      }
    } else {
      p.assembled.append(data);
    }
    p.placed += n;
    data.remove_prefix(n);
  }
}

StatusOr<std::optional<AssembledMessage>> ChunkReassembler::AddAssembled(const ChunkView& chunk) {
  TANDEM_RETURN_IF_ERROR(ValidateChunk(chunk));
  const std::string what = Id(chunk.message_id);
  auto it = pending_.find(chunk.message_id);
  if (it == pending_.end()) {
    if (pending_.size() >= max_pending_messages_) {
      return Status::OutOfRange(what + ": already " + std::to_string(pending_.size()) +
                                " incomplete messages from this peer");
    }
  } else {
    Partial& p = it->second;
    if (p.count != chunk.count || p.total_bytes != chunk.total_bytes) {
      const std::string detail = "chunk says " + std::to_string(chunk.count) + " chunks / " +
                                 std::to_string(chunk.total_bytes) + " bytes, earlier ones " +
                                 std::to_string(p.count) + " / " + std::to_string(p.total_bytes);
      Discard(chunk.message_id);
      return Status::Corruption(what + ": inconsistent chunks (" + detail + "); message dropped");
    }
    if (chunk.index < p.next_index || p.early.count(chunk.index) > 0) {
      return Status::Corruption(what + ": duplicate chunk " + std::to_string(chunk.index));
    }
    if (p.received_bytes + chunk.data.size() > p.total_bytes) {
      Discard(chunk.message_id);
      return Status::Corruption(what + ": chunks carry more than the declared " +
                                std::to_string(chunk.total_bytes) + " bytes; message dropped");
    }
  }
  if (pending_bytes_ + chunk.data.size() > max_pending_bytes_) {
    return Status::OutOfRange(what + ": buffering " + std::to_string(chunk.data.size()) +
                              " more bytes would exceed the limit of " +
                              std::to_string(max_pending_bytes_));
  }
  if (it == pending_.end()) {
    Partial p;
    p.count = chunk.count;
    p.total_bytes = chunk.total_bytes;
    if (detach_large_bins_ && chunk.index == 0) {
      const std::optional<BinLocation> bin =
          FindLargeBin(chunk.data, std::max<uint64_t>(chunk.total_bytes / 2, 1));
      if (bin && bin->begin + bin->length <= chunk.total_bytes) {
        p.detached = true;
        p.bin_header = bin->header;
        p.bin_begin = bin->begin;
        p.bin_end = bin->begin + bin->length;
      }
    }
    p.streamed = p.detached && stream_bins_.count(chunk.message_id) > 0;
    stream_bins_.erase(chunk.message_id);
    try {
      // Address space only: pages are touched as chunks are copied in.
      if (p.detached) {
        const uint64_t bin_length = p.bin_end - p.bin_begin;
        if (!p.streamed) p.bin.reserve(bin_length);
        p.assembled.reserve(chunk.total_bytes - bin_length + 2);
      } else {
        p.assembled.reserve(chunk.total_bytes);
      }
    } catch (const std::bad_alloc&) {
      return Status::OutOfRange(what + ": cannot reserve " + std::to_string(chunk.total_bytes) +
                                " bytes");
    }
    it = pending_.emplace(chunk.message_id, std::move(p)).first;
  }
  Partial& p = it->second;
  p.received_bytes += chunk.data.size();
  p.received_chunks += 1;
  pending_bytes_ += chunk.data.size();
  if (chunk.index == p.next_index) {
    Place(p, chunk.data);
    ++p.next_index;
    for (auto e = p.early.begin(); e != p.early.end() && e->first == p.next_index;
         e = p.early.erase(e)) {
      Place(p, e->second);
      ++p.next_index;
    }
  } else {
    p.early.emplace(chunk.index, std::string(chunk.data));
  }
  if (p.received_chunks < p.count) return std::optional<AssembledMessage>();

  if (p.received_bytes != p.total_bytes) {
    const uint64_t got = p.received_bytes;
    const uint64_t want = p.total_bytes;
    Discard(it->first);
    return Status::Corruption(what + ": all chunks arrived carrying " + std::to_string(got) +
                              " bytes, declared " + std::to_string(want) + "; message dropped");
  }
  TANDEM_CHECK(p.next_index == p.count && p.early.empty() && p.placed == p.total_bytes);
  AssembledMessage done;
  done.bytes = std::move(p.assembled);
  if (p.detached) {
    done.bin = std::move(p.bin);
    done.bin_header = p.bin_header;
    done.bin_finite = p.bin_finite;
    done.streamed = p.streamed;
    done.bin_offset = p.bin_taken;
    done.bin_bytes = p.bin_end - p.bin_begin;
  }
  Discard(it->first);
  return std::optional<AssembledMessage>(std::move(done));
}

void ChunkReassembler::StreamBin(uint64_t message_id) {
  TANDEM_CHECK(detach_large_bins_);
  if (!pending_.count(message_id)) stream_bins_.insert(message_id);
}

bool ChunkReassembler::Streams(uint64_t message_id) const {
  auto it = pending_.find(message_id);
  return it != pending_.end() && it->second.streamed;
}

std::string ChunkReassembler::TakeBin(uint64_t message_id, uint64_t* offset) {
  auto it = pending_.find(message_id);
  if (it == pending_.end() || !it->second.streamed) return {};
  Partial& p = it->second;
  *offset = p.bin_taken;
  const size_t words = p.bin.size() & ~size_t{3};
  if (words == 0) return {};
  std::string out;
  if (words == p.bin.size()) {
    out = std::move(p.bin);
    p.bin = std::string();
  } else {
    out = p.bin.substr(0, words);
    p.bin.erase(0, words);
  }
  p.bin_taken += words;
  return out;
}

void ChunkReassembler::Discard(uint64_t message_id) {
  stream_bins_.erase(message_id);
  auto it = pending_.find(message_id);
  if (it == pending_.end()) return;
  pending_bytes_ -= it->second.received_bytes;
  pending_.erase(it);
}

void ChunkReassembler::Clear() {
  stream_bins_.clear();
  pending_.clear();
  pending_bytes_ = 0;
}

}  // namespace tandem::wire

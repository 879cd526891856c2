// Chunk frames and their reassembly; see wire/chunk.h.
#include "wire/chunk.h"

#include <utility>

#include "wire/msgpack_detail.h"

namespace tandem::wire {
namespace {

constexpr size_t kChunkFields = 7;  // version, type, message_id, index, count, total_bytes, data

std::string Id(uint64_t message_id) { return "chunked message " + std::to_string(message_id); }

}  // namespace

Status ValidateChunk(const Chunk& c) {
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
  std::string out;
  out.reserve(c.data.size() + 64);
  detail::StringWriter writer{&out};
  msgpack::packer<detail::StringWriter> pk(writer);
  pk.pack_array(kChunkFields);
  pk.pack_uint32(kProtocolVersion);
  pk.pack_uint8(static_cast<uint8_t>(MessageType::kChunk));
  pk.pack_uint64(c.message_id);
  pk.pack_uint32(c.index);
  pk.pack_uint32(c.count);
  pk.pack_uint64(c.total_bytes);
  pk.pack_bin(static_cast<uint32_t>(c.data.size()));
  pk.pack_bin_body(c.data.data(), static_cast<uint32_t>(c.data.size()));
  return out;
}

StatusOr<Chunk> DecodeChunk(std::string_view bytes) {
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
  Chunk c;
  TANDEM_ASSIGN_OR_RETURN(c.message_id, detail::ReadUint(f[2], "chunk.message_id"));
  TANDEM_ASSIGN_OR_RETURN(const uint64_t index,
                          detail::ReadUint(f[3], "chunk.index", kMaxChunksPerMessage));
  TANDEM_ASSIGN_OR_RETURN(const uint64_t count,
                          detail::ReadUint(f[4], "chunk.count", kMaxChunksPerMessage));
  c.index = static_cast<uint32_t>(index);
  c.count = static_cast<uint32_t>(count);
  TANDEM_ASSIGN_OR_RETURN(c.total_bytes,
                          detail::ReadUint(f[5], "chunk.total_bytes", kMaxMessageBytes));
  TANDEM_ASSIGN_OR_RETURN(std::string_view data,
                          detail::ReadBin(f[6], "chunk.data", kMaxChunkBytes));
  c.data = std::string(data);
  Status valid = ValidateChunk(c);
  if (!valid.ok()) return Status::Corruption(valid.message());
  return c;
}

ChunkReassembler::ChunkReassembler(size_t max_pending_bytes, size_t max_pending_messages)
    : max_pending_bytes_(max_pending_bytes), max_pending_messages_(max_pending_messages) {}

StatusOr<std::optional<std::string>> ChunkReassembler::Add(Chunk chunk) {
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
    if (!p.pieces[chunk.index].empty()) {
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
    p.pieces.resize(chunk.count);
    it = pending_.emplace(chunk.message_id, std::move(p)).first;
  }
  Partial& p = it->second;
  p.received_bytes += chunk.data.size();
  p.received_chunks += 1;
  pending_bytes_ += chunk.data.size();
  p.pieces[chunk.index] = std::move(chunk.data);
  if (p.received_chunks < p.count) return std::optional<std::string>();

  if (p.received_bytes != p.total_bytes) {
    const uint64_t got = p.received_bytes;
    const uint64_t want = p.total_bytes;
    Discard(it->first);
    return Status::Corruption(what + ": all chunks arrived carrying " + std::to_string(got) +
                              " bytes, declared " + std::to_string(want) + "; message dropped");
  }
  std::string whole;
  whole.reserve(p.total_bytes);
  for (std::string& piece : p.pieces) {
    whole += piece;
    std::string().swap(piece);  // release as we go: peak stays near one copy
  }
  Discard(it->first);
  return std::optional<std::string>(std::move(whole));
}

void ChunkReassembler::Discard(uint64_t message_id) {
  auto it = pending_.find(message_id);
  if (it == pending_.end()) return;
  pending_bytes_ -= it->second.received_bytes;
  pending_.erase(it);
}

void ChunkReassembler::Clear() {
  pending_.clear();
  pending_bytes_ = 0;
}

}  // namespace tandem::wire

// Chunking: an encoded message above kChunkThresholdBytes travels as several Chunk frames, each
// [version, Chunk, message_id, index, count, total_bytes, data], and is put back together by a
// ChunkReassembler on the receiving side before DecodeMessage. See docs/protocol.md "Chunking".
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "wire/protocol.h"

namespace tandem::wire {

struct Chunk {
  uint64_t message_id = 0;   // chosen by the sender, unique among its in-flight messages
                             // (the message's sequence number is the natural choice)
  uint32_t index = 0;        // 0 .. count-1
  uint32_t count = 0;        // chunks in the message, 1 .. kMaxChunksPerMessage
  uint64_t total_bytes = 0;  // size of the whole encoded message, 1 .. kMaxMessageBytes
  std::string data;          // 1 .. kMaxChunkBytes bytes of the encoded message
  bool operator==(const Chunk&) const = default;
};

// Every chunk-local rule: index < count, sizes within limits, count consistent with total_bytes.
Status ValidateChunk(const Chunk& chunk);

// Splits an encoded message into chunks of `chunk_bytes` (the last one shorter).
// Requires: 0 < message.size() <= kMaxMessageBytes and kMinChunkBytes <= chunk_bytes <=
// kMaxChunkBytes (checked, aborts: the sender controls both).
std::vector<Chunk> SplitIntoChunks(std::string_view message, uint64_t message_id,
                                   size_t chunk_bytes = kChunkBytes);

// Encodes a valid chunk (checked) as one frame.
std::string EncodeChunk(const Chunk& chunk);
// Decodes and validates one chunk frame; the same strictness as DecodeMessage.
StatusOr<Chunk> DecodeChunk(std::string_view bytes);

// Puts chunked messages back together, for one peer. Chunks may arrive in any order and chunks of
// different messages may interleave. Memory is bounded: at most `max_pending_bytes` buffered
// across at most `max_pending_messages` incomplete messages; nothing is allocated for a chunk's
// declared total, only for bytes that actually arrived.
//
// Errors (each names its reason) and what they do to the incomplete message:
//  - invalid chunk (ValidateChunk), or the buffer limits would be exceeded: chunk dropped;
//  - a duplicate index: chunk dropped, the message keeps the copy it already has;
//  - count or total_bytes disagreeing with earlier chunks of the message, or more bytes than
//    total_bytes: the whole incomplete message is discarded.
// Not thread-safe: one reassembler per peer, used from that peer's receive path.
class ChunkReassembler {
 public:
  explicit ChunkReassembler(size_t max_pending_bytes = kMaxReassemblyBytes,
                            size_t max_pending_messages = kMaxPendingChunkedMessages);

  // The whole encoded message when `chunk` completes it, nullopt while more are needed.
  StatusOr<std::optional<std::string>> Add(Chunk chunk);

  // Forgets an incomplete message (e.g. its sender timed out or the round closed).
  void Discard(uint64_t message_id);
  void Clear();

  size_t pending_messages() const { return pending_.size(); }
  size_t pending_bytes() const { return pending_bytes_; }

 private:
  struct Partial {
    uint32_t count = 0;
    uint64_t total_bytes = 0;
    uint64_t received_bytes = 0;
    uint32_t received_chunks = 0;
    std::vector<std::string> pieces;  // by index; empty = not yet received (chunks are non-empty)
  };

  size_t max_pending_bytes_;
  size_t max_pending_messages_;
  size_t pending_bytes_ = 0;
  std::map<uint64_t, Partial> pending_;
};

}  // namespace tandem::wire

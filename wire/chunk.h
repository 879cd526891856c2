// Chunking: an encoded message above kChunkThresholdBytes travels as several Chunk frames, each
// [version, Chunk, message_id, index, count, total_bytes, data], and is put back together by a
// ChunkReassembler on the receiving side before DecodeMessage. A client announces such an upload
// with a ChunkOffer and sends its chunks once the coordinator's ChunkGrant arrives (flow control).
// See docs/protocol.md "Chunking". EncodeMessageFrames is the sender's fast path: it encodes a
// message straight into the frames that carry it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "wire/message.h"
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

// Upload flow control (client -> coordinator): before the first chunk of a chunked message a
// client sends [version, ChunkOffer, message_id, count, total_bytes] and holds the chunks until
// the coordinator answers [version, ChunkGrant, message_id]. message_id is the message's sequence
// number, the id its chunks carry; count and total_bytes are theirs.
// A result's offer may also say what it contributes (docs/protocol.md "Streamed contributions"),
// so the coordinator can decide to accept it, and fold its values in as they arrive, before any
// chunk is in: [version, ChunkOffer, message_id, count, total_bytes, round, task_id, weight,
// values]. Sent for a TaskResult whose one float32 tensor is its large bin.
struct ContributionOffer {
  uint64_t round = 0;
  uint64_t task_id = 0;    // non-zero
  double weight = 0.0;     // the result's weight: finite, >= 0
  uint64_t values = 0;     // float32 values of the tensor: 1 .. kMaxTensorElements
  bool operator==(const ContributionOffer&) const = default;
};

struct ChunkOffer {
  uint64_t message_id = 0;
  uint32_t count = 0;        // 1 .. kMaxChunksPerMessage
  uint64_t total_bytes = 0;  // 1 .. kMaxMessageBytes, and count..count*kMaxChunkBytes
  std::optional<ContributionOffer> contribution;  // its values take 4 * values <= total_bytes
  bool operator==(const ChunkOffer&) const = default;
};

// The contribution an offer for `message` may declare: a TaskResult whose float32 tensor holds
// at least half of the encoded `total_bytes` (the bin a reassembler detaches). nullopt otherwise.
std::optional<ContributionOffer> ContributionOf(const Message& message, uint64_t total_bytes);

struct ChunkGrant {
  uint64_t message_id = 0;
  bool operator==(const ChunkGrant&) const = default;
};

// The same size rules as ValidateChunk: limits, and count consistent with total_bytes.
Status ValidateChunkOffer(const ChunkOffer& offer);
// Encodes a valid offer (checked, aborts) / a grant as one frame.
std::string EncodeChunkOffer(const ChunkOffer& offer);
std::string EncodeChunkGrant(const ChunkGrant& grant);
// Decode and validate one frame, as strictly as DecodeChunk (exact field count, field types and
// limits, no trailing bytes).
StatusOr<ChunkOffer> DecodeChunkOffer(std::string_view bytes);
StatusOr<ChunkGrant> DecodeChunkGrant(std::string_view bytes);

// A chunk whose data still lives in the frame it was decoded from (no copy): valid only while
// that frame is.
struct ChunkView {
  uint64_t message_id = 0;
  uint32_t index = 0;
  uint32_t count = 0;
  uint64_t total_bytes = 0;
  std::string_view data;
};

// Every chunk-local rule: index < count, sizes within limits, count consistent with total_bytes.
Status ValidateChunk(const Chunk& chunk);
Status ValidateChunk(const ChunkView& chunk);

// Splits an encoded message into chunks of `chunk_bytes` (the last one shorter).
// Requires: 0 < message.size() <= kMaxMessageBytes and kMinChunkBytes <= chunk_bytes <=
// kMaxChunkBytes (checked, aborts: the sender controls both).
std::vector<Chunk> SplitIntoChunks(std::string_view message, uint64_t message_id,
                                   size_t chunk_bytes = kChunkBytes);

// Encodes a valid chunk (checked) as one frame.
std::string EncodeChunk(const Chunk& chunk);
// Decodes and validates one chunk frame; the same strictness as DecodeMessage.
StatusOr<Chunk> DecodeChunk(std::string_view bytes);
// The same without copying the data out of `bytes`.
StatusOr<ChunkView> DecodeChunkView(std::string_view bytes);

// One encoded frame, owning its bytes: either a whole message (a string) or a chunk built in a
// buffer with room in front for its header, which is written once the payload is in place.
// A transport moves the Frame to the heap once and hands bytes() to ZeroMQ without copying.
// The shared form holds another Frame by reference count: a broadcast hands every peer the same
// bytes, which live until the last send of them is done. A Frame is not thread-safe, but shared
// forms of one frame may be used and destroyed from any threads (the bytes are only read).
class Frame {
 public:
  Frame() = default;
  explicit Frame(std::string bytes) : string_(std::move(bytes)) {}
  Frame(std::unique_ptr<char[]> buffer, size_t offset, size_t size)
      : buffer_(std::move(buffer)), offset_(offset), size_(size) {}
  explicit Frame(std::shared_ptr<const Frame> shared) : shared_(std::move(shared)) {}

  std::string_view bytes() const {
    if (shared_) return shared_->bytes();
    return buffer_ ? std::string_view(buffer_.get() + offset_, size_) : std::string_view(string_);
  }
  size_t size() const { return bytes().size(); }

 private:
  std::string string_;
  std::unique_ptr<char[]> buffer_;
  size_t offset_ = 0;
  size_t size_ = 0;
  std::shared_ptr<const Frame> shared_;
};

// Validates and encodes `message` as the frames that carry it, handing each to `emit` as soon as
// it is complete (so a transport can send the first while the rest are being encoded): one frame
// when the encoding is at most kChunkThresholdBytes, else Chunk frames of `chunk_bytes` payload
// with message_id = envelope.sequence. Byte for byte the frames are EncodeMessage followed by
// SplitIntoChunks and EncodeChunk, but the tensor bytes are copied once, straight into the frames.
// Fails (InvalidArgument, nothing emitted) as EncodeMessage does. Requires kMinChunkBytes <=
// chunk_bytes <= kMaxChunkBytes (checked, aborts).
Status EncodeMessageFrames(const Message& message, size_t chunk_bytes,
                           const std::function<void(Frame)>& emit);
// The same, first calling `start` once, after validation and before any frame is emitted, with
// the encoded message's size and whether it goes as chunks (and how many): a client announces a
// chunked upload with a ChunkOffer before its chunks.
Status EncodeMessageFrames(
    const Message& message, size_t chunk_bytes,
    const std::function<void(uint64_t total_bytes, bool chunked, uint32_t count)>& start,
    const std::function<void(Frame)>& emit);

// A reassembled message. Normally `bytes` is the whole encoded message. When its reassembler
// detaches large bins and found, in the first chunk, a bin holding at least half of the message
// (the tensor of a model update), that bin's bytes are in `bin` instead -- copied there once,
// straight from the chunks, their float32 words checked for NaN and infinity on the way
// (`bin_finite`) -- and `bytes` holds the rest of the message with the bin written as an empty
// bin8 (c4 00) at offset `bin_header`.
//
// A streamed bin (ChunkReassembler::StreamBin) is taken out as it arrives (TakeBin); the
// AssembledMessage then has `streamed` set, `bin` holds its bytes not yet taken, starting at byte
// `bin_offset` of the bin, and `bin_bytes` is the bin's whole length. DecodeAssembled requires
// `bin` to be empty by then, and gives the tensor its name, dtype and shape but no data.
struct AssembledMessage {
  std::string bytes;
  std::optional<std::string> bin;
  size_t bin_header = 0;
  bool bin_finite = false;
  bool streamed = false;
  uint64_t bin_offset = 0;
  uint64_t bin_bytes = 0;
};

// Decodes and validates a reassembled message, exactly as DecodeMessage does; a detached bin is
// moved into its tensor without a copy, and its NaN scan is not repeated.
StatusOr<Message> DecodeAssembled(AssembledMessage&& message);

// Puts chunked messages back together, for one peer. Chunks may arrive in any order and chunks of
// different messages may interleave. Memory is bounded: at most `max_pending_bytes` buffered
// across at most `max_pending_messages` incomplete messages. Chunks that arrive in order (the
// usual case: one ZeroMQ connection keeps order) are copied once, straight into place in the
// message; for that, the first chunk of a message reserves address space for its declared total,
// but memory is written, and so committed, only for bytes that arrived, and the limits count
// bytes that arrived. Chunks that arrive early are held apart until their predecessors are in.
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
                            size_t max_pending_messages = kMaxPendingChunkedMessages,
                            bool detach_large_bins = false);

  // The whole encoded message when `chunk` completes it, nullopt while more are needed.
  StatusOr<std::optional<std::string>> Add(const ChunkView& chunk);
  StatusOr<std::optional<std::string>> Add(const Chunk& chunk);
  // The same, for a reassembler that detaches large bins (see AssembledMessage): a transport's
  // receive path, followed by DecodeAssembled.
  StatusOr<std::optional<AssembledMessage>> AddAssembled(const ChunkView& chunk);

  // From now on the large bin of `message_id` (not yet begun) is not kept: its bytes are taken
  // out as they arrive with TakeBin. Only for a reassembler that detaches large bins.
  void StreamBin(uint64_t message_id);
  // Whether `message_id`'s bin is being streamed (it was asked for, and its first chunk had a
  // bin to detach).
  bool Streams(uint64_t message_id) const;
  // The streamed bin's bytes that arrived since the last call, in whole 4-byte words (a word
  // split across chunks waits for its end), and at which byte of the bin they start. Empty when
  // there are none or the message is not streamed.
  std::string TakeBin(uint64_t message_id, uint64_t* offset);

  // Forgets an incomplete message (e.g. its sender timed out or the round closed).
  void Discard(uint64_t message_id);
  // Whether chunks of `message_id` are buffered (an incomplete message in progress).
  bool Holds(uint64_t message_id) const { return pending_.count(message_id) > 0; }
  void Clear();

  size_t pending_messages() const { return pending_.size(); }
  size_t pending_bytes() const { return pending_bytes_; }

 private:
  struct Partial {
    uint32_t count = 0;
    uint64_t total_bytes = 0;
    uint64_t received_bytes = 0;
    uint32_t received_chunks = 0;
    uint32_t next_index = 0;               // chunks 0 .. next_index-1 are placed
    uint64_t placed = 0;                   // bytes placed: the message's first `placed` bytes
    std::string assembled;                 // those bytes (without a detached bin)
    std::map<uint32_t, std::string> early;  // chunks that arrived before a predecessor
    // A detached bin: its header occupies [bin_header, bin_begin) and its data
    // [bin_begin, bin_end) of the message; the data goes to `bin`.
    bool detached = false;
    uint64_t bin_header = 0, bin_begin = 0, bin_end = 0;
    std::string bin;
    uint64_t bin_checked = 0;  // bytes of `bin` scanned for non-finite float32 words
    bool bin_finite = true;
    bool streamed = false;     // `bin` holds only bytes from `bin_taken` on (TakeBin)
    uint64_t bin_taken = 0;
  };
  // Appends the message's next bytes (in order) where they belong.
  static void Place(Partial& p, std::string_view data);

  size_t max_pending_bytes_;
  size_t max_pending_messages_;
  bool detach_large_bins_;
  size_t pending_bytes_ = 0;
  std::map<uint64_t, Partial> pending_;
  std::set<uint64_t> stream_bins_;  // StreamBin asked, first chunk not yet in
};

}  // namespace tandem::wire

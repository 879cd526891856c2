// Every constant of the tandem wire protocol in one place: the version, the message types, the
// tensor element types, the error codes a peer may send, and every size limit the decoder enforces.
// docs/protocol.md describes the format these constants belong to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tandem::wire {

// Bumped on any change to the encoding of an envelope or a body. A peer speaking another version
// is refused with ErrorCode::kUnsupportedVersion; there is no negotiation.
inline constexpr uint32_t kProtocolVersion = 1;

// The `type` field of every frame. Values are on the wire: never renumber, only append.
enum class MessageType : uint8_t {
  kHello = 1,        // client -> coordinator: join (or rejoin) a run
  kWelcome = 2,      // coordinator -> client: accepted; session parameters
  kHeartbeat = 3,    // either way: liveness (any message counts as one)
  kTaskAssign = 4,   // coordinator -> client: do this task (kind, parameters, payload tensors)
  kTaskResult = 5,   // client -> coordinator: a contribution (tensors, weight, metrics)
  kTaskCancel = 6,   // coordinator -> client: stop working on a task
  kBye = 7,          // either way: orderly leave
  kError = 8,        // either way: the previous message (or the session) failed
  kChunk = 9,        // framing only: one piece of a message too large for one frame (wire/chunk.h)
  kChunkOffer = 10,  // framing only, client -> coordinator: may I send this chunked message?
  kChunkGrant = 11,  // framing only, coordinator -> client: yes, send its chunks now
  kServeRequest = 12,  // client -> coordinator: ask the cloud inference service (serve/)
  kServeReply = 13,    // coordinator -> client: the service's answer to one request
};
// The types a message or chunk header may carry (DecodeMessage, DecodeChunk): 1..9 and 12..13;
// the flow-control frames 10 and 11 have their own decoders and are "unknown" to those two.
inline constexpr uint8_t kMinMessageType = 1;
inline constexpr uint8_t kMaxMessageType = 13;
// The types any frame may carry (PeekType).
inline constexpr uint8_t kMaxFrameType = 13;

constexpr bool IsMessageTypeValue(uint64_t raw) {
  return raw >= kMinMessageType && raw <= kMaxMessageType && raw != 10 && raw != 11;
}

// Chunk, ChunkOffer and ChunkGrant frames are framing, not messages: no envelope, no sequence.
constexpr bool IsFramingType(MessageType type) {
  return type == MessageType::kChunk || type == MessageType::kChunkOffer ||
         type == MessageType::kChunkGrant;
}

constexpr std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kHello: return "Hello";
    case MessageType::kWelcome: return "Welcome";
    case MessageType::kHeartbeat: return "Heartbeat";
    case MessageType::kTaskAssign: return "TaskAssign";
    case MessageType::kTaskResult: return "TaskResult";
    case MessageType::kTaskCancel: return "TaskCancel";
    case MessageType::kBye: return "Bye";
    case MessageType::kError: return "Error";
    case MessageType::kChunk: return "Chunk";
    case MessageType::kChunkOffer: return "ChunkOffer";
    case MessageType::kChunkGrant: return "ChunkGrant";
    case MessageType::kServeRequest: return "ServeRequest";
    case MessageType::kServeReply: return "ServeReply";
  }
  return "Unknown";
}

// Which side of a session receives a message. Each side refuses the types only the other side
// may receive (a client never sends TaskAssign).
enum class Role : uint8_t { kCoordinator = 1, kClient = 2 };

constexpr bool ReceivedBy(MessageType type, Role role) {
  switch (type) {
    case MessageType::kHello:
    case MessageType::kTaskResult:
    case MessageType::kChunkOffer:
    case MessageType::kServeRequest: return role == Role::kCoordinator;
    case MessageType::kWelcome:
    case MessageType::kServeReply:
    case MessageType::kTaskAssign:
    case MessageType::kTaskCancel:
    case MessageType::kChunkGrant: return role == Role::kClient;
    case MessageType::kHeartbeat:
    case MessageType::kBye:
    case MessageType::kError:
    case MessageType::kChunk: return true;
  }
  return false;
}

// Element type of a tensor. Tensor bytes are always little-endian.
enum class DType : uint8_t {
  kFloat32 = 1,  // "f32": IEEE-754 binary32; must be finite
  kUint32 = 2,   // "u32": ring elements mod 2^k, k <= 32 (fixed point, masked secure-aggregation inputs)
  kUint64 = 3,   // "u64": ring elements mod 2^k, 32 < k <= 64
  kUint8 = 4,    // "u8": opaque bytes (secure-aggregation keys and encrypted shares)
};

constexpr std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "f32";
    case DType::kUint32: return "u32";
    case DType::kUint64: return "u64";
    case DType::kUint8: return "u8";
  }
  return "unknown";
}

constexpr size_t DTypeBytes(DType dtype) {
  switch (dtype) {
    case DType::kUint64: return 8;
    case DType::kUint8: return 1;
    default: return 4;
  }
}

// Codes carried by an Error message. Values are on the wire: never renumber, only append.
enum class ErrorCode : uint16_t {
  kBadMessage = 1,          // failed decoding or validation
  kUnsupportedVersion = 2,  // envelope version is not kProtocolVersion
  kNotJoined = 3,           // a message other than Hello before Welcome
  kStale = 4,               // replayed sequence number or a round that has closed
  kUnknownTask = 5,         // a result or cancel for a task this peer does not know
  kTaskFailed = 6,          // the client could not complete the task
  kOverloaded = 7,          // try again later
  kRefused = 8,             // not allowed (not on the allow-list, run full, ...)
  kInternal = 9,
};
inline constexpr uint16_t kMinErrorCode = 1;
inline constexpr uint16_t kMaxErrorCode = 9;

// ---- Limits. The decoder rejects anything beyond these before allocating for it. ----

inline constexpr size_t kMiB = size_t{1} << 20;

// A whole message (after reassembly of its chunks). 256 MiB = 64 Mi float32 values.
inline constexpr size_t kMaxMessageBytes = 256 * kMiB;
// Encoded messages above this are sent as chunks; at or below it, as one frame.
inline constexpr size_t kChunkThresholdBytes = 1 * kMiB;
// Default payload bytes per chunk, and the range a sender may choose from.
inline constexpr size_t kChunkBytes = 1 * kMiB;
inline constexpr size_t kMinChunkBytes = 4 * 1024;
inline constexpr size_t kMaxChunkBytes = 16 * kMiB;
inline constexpr size_t kMaxChunksPerMessage = kMaxMessageBytes / kMinChunkBytes;  // 65536
// The largest single frame a transport ever needs to accept: a whole message up to the threshold,
// or a chunk of up to kMaxChunkBytes, plus envelope overhead.
inline constexpr size_t kMaxFrameBytes = kMaxChunkBytes + 64 * 1024;
// A reassembler buffers at most this many bytes and this many incomplete messages per peer.
inline constexpr size_t kMaxReassemblyBytes = kMaxMessageBytes;
inline constexpr size_t kMaxPendingChunkedMessages = 4;

inline constexpr size_t kMaxTensorsPerMessage = 1024;
inline constexpr size_t kMaxTensorElements = kMaxMessageBytes / 4;  // 64 Mi
inline constexpr size_t kMaxTensorRank = 8;
// Tensor names, map keys (parameters, metrics), task kinds, capability names.
inline constexpr size_t kMaxNameBytes = 256;
// String values: parameter strings, reasons, error messages, agent strings.
inline constexpr size_t kMaxStringBytes = 4096;
// Entries in a parameter or metrics map; entries in a capability list.
inline constexpr size_t kMaxMapEntries = 256;
// Structural bounds on the msgpack document itself (checked in a first pass, before any
// allocation for the document tree): nesting depth and total number of msgpack values.
inline constexpr size_t kMaxNestingDepth = 8;
inline constexpr size_t kMaxValues = 65536;

}  // namespace tandem::wire

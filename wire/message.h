// The tandem message schema and its msgpack codec: the envelope every message carries, the typed
// bodies, tensors as msgpack `bin` (little-endian, shape alongside), and strict validation.
// The byte layout is specified in docs/protocol.md; all limits are in wire/protocol.h.
//
// Decoding validates everything that can be checked without session state (types, sizes, shapes,
// finiteness, names); wire/session.h adds the per-peer checks (replay, stale rounds, direction).
// All functions here are pure and thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/status.h"
#include "wire/protocol.h"

namespace tandem::wire {

// A named tensor. `data` holds the elements' little-endian bytes, row-major; its size is
// NumElements() * DTypeBytes(dtype). An empty shape is a scalar (one element).
struct Tensor {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<uint64_t> shape;
  std::string data;

  static Tensor Float32(std::string name, std::vector<uint64_t> shape,
                        std::span<const float> values);
  static Tensor Uint32(std::string name, std::vector<uint64_t> shape,
                       std::span<const uint32_t> values);
  static Tensor Uint64(std::string name, std::vector<uint64_t> shape,
                       std::span<const uint64_t> values);
  // A 1-D "u8" tensor holding `bytes`.
  static Tensor Bytes(std::string name, std::span<const uint8_t> bytes);

  // Product of the shape; 0 if it overflows uint64 (which validation rejects anyway).
  uint64_t NumElements() const;
  // The elements in host byte order. Requires the matching dtype (checked, aborts).
  std::vector<float> ToFloat32() const;
  std::vector<uint32_t> ToUint32() const;
  std::vector<uint64_t> ToUint64() const;
  std::span<const uint8_t> AsBytes() const;  // kUint8; a view of `data`
  void CopyTo(std::span<float> out) const;  // requires out.size() == NumElements()

  bool operator==(const Tensor&) const = default;
};

// Task hyper-parameters: a small map of names to integers, reals or strings.
using ParamValue = std::variant<int64_t, double, std::string>;
using Params = std::map<std::string, ParamValue>;
// Metrics a client reports with a result (loss, accuracy, clipped, ...). All finite.
using Metrics = std::map<std::string, double>;

// ---- Bodies, one per MessageType. ----

struct Hello {
  std::string agent;                      // software and version, e.g. "tandem/0.1.0"
  std::vector<std::string> capabilities;  // task kinds this client can run
  bool operator==(const Hello&) const = default;
};

struct Welcome {
  uint32_t client_index = 0;  // the coordinator's index for this client, for logs and partitions
  uint32_t heartbeat_interval_ms = 0;
  uint32_t peer_timeout_ms = 0;  // silence after which either side drops the other
  bool operator==(const Welcome&) const = default;
};

struct Heartbeat {
  bool operator==(const Heartbeat&) const = default;
};

struct TaskAssign {
  std::string kind;  // e.g. "fedavg.train", "distill.logits"; non-empty
  Params params;
  std::vector<Tensor> tensors;  // payload: weights, deltas, teacher top-k logits
  uint32_t deadline_ms = 0;     // time the client has, from receipt; 0 = none
  bool operator==(const TaskAssign&) const = default;
};

struct TaskResult {
  std::vector<Tensor> tensors;  // the contribution
  double weight = 0.0;          // finite and >= 0 (e.g. number of local examples)
  Metrics metrics;
  bool operator==(const TaskResult&) const = default;
};

struct TaskCancel {
  std::string reason;
  bool operator==(const TaskCancel&) const = default;
};

struct Bye {
  std::string reason;
  bool operator==(const Bye&) const = default;
};

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  bool operator==(const Error&) const = default;
};

// A request to the cloud inference service (serve/service.h, docs/protocol.md "The inference
// service"): client-initiated, its id in envelope.task_id (non-zero), never part of a round.
struct ServeRequest {
  std::string kind;             // "serve.complete", "serve.verify"; non-empty
  Params params;
  std::vector<Tensor> tensors;  // prompt, context, draft, q rows
  uint32_t deadline_ms = 0;     // time the service has, from receipt; 0 = the service's default
  bool operator==(const ServeRequest&) const = default;
};

// The service's answer (envelope.task_id = the request's id). A refused request is answered
// with an Error carrying the request's id instead.
struct ServeReply {
  Params params;                // e.g. "accepted", "next", "text"
  std::vector<Tensor> tensors;  // e.g. the generated tokens
  bool operator==(const ServeReply&) const = default;
};

// Variant order follows MessageType (index + 1 == type for Hello..Error; ServeRequest and
// ServeReply, after the framing types 9..11, are 12 and 13); Chunk is framing, not a body.
using Body = std::variant<Hello, Welcome, Heartbeat, TaskAssign, TaskResult, TaskCancel, Bye,
                          Error, ServeRequest, ServeReply>;

// What every message carries besides its body. The message type is the body's.
struct Envelope {
  uint32_t version = kProtocolVersion;  // set by EncodeMessage; checked by DecodeMessage
  uint64_t run_id = 0;    // chosen by the coordinator at start; 0 in a first Hello
  uint64_t round = 0;
  uint64_t task_id = 0;   // 0 when the message is not about a task
  uint64_t sequence = 0;  // per sender and session, strictly increasing
  bool operator==(const Envelope&) const = default;
};

struct Message {
  Envelope envelope;
  Body body;

  MessageType type() const {
    const size_t i = body.index();
    return static_cast<MessageType>(i < 8 ? i + 1 : i + 4);
  }
  bool operator==(const Message&) const = default;
};

// Every rule of docs/protocol.md "Validation" that needs no session state: names, sizes, shapes,
// finite floats, known codes. Returns the first violation, naming the field.
Status ValidateMessage(const Message& message);
Status ValidateTensor(const Tensor& tensor);

// Validates, then encodes. Fails (InvalidArgument) for an invalid message or one whose encoding
// would exceed kMaxMessageBytes.
StatusOr<std::string> EncodeMessage(const Message& message);

// Decodes and validates. Fails (Corruption, or InvalidArgument for an unsupported version) on
// truncated or trailing bytes, wrong msgpack types, unknown or missing fields, a limit exceeded,
// or any ValidateMessage rule. Never throws, never reads outside `bytes`.
StatusOr<Message> DecodeMessage(std::string_view bytes);
// The same, taking the frame's buffer: the one tensor that fills at least half of the frame (a
// model update) gets the buffer itself, its bytes slid to the front, instead of a fresh copy. The
// result is identical to DecodeMessage(std::string_view(bytes)).
StatusOr<Message> DecodeMessage(std::string&& bytes);

// The type of an encoded frame (a message or a chunk) from its first bytes, after checking the
// version; for routing a frame to DecodeMessage or DecodeChunk. Does not validate the rest.
StatusOr<MessageType> PeekType(std::string_view bytes);

}  // namespace tandem::wire

// What the transport's Server and Client share (see wire/transport_common.h): queueing a message's
// frames for the I/O thread, the option checks, the messages the transport writes itself
// (heartbeats, errors) and the codec part of the receive path.
#include "wire/transport_common.h"

#include <utility>

namespace tandem::wire::detail {

bool IsInproc(const std::string& endpoint) { return endpoint.rfind("inproc://", 0) == 0; }

Status QueueMessage(const Message& message, size_t chunk_bytes, Outbox& outbox,
                    const std::vector<Target>& targets, bool offer, AtomicStats& stats,
                    const std::shared_ptr<std::atomic<int64_t>>& shared_bytes) {
  std::optional<Frame> pending;
  bool held = false;
  auto push = [&](Frame frame, bool last, MessageType type) {
    std::shared_ptr<const Frame> shared;
    if (targets.size() > 1 && shared_bytes) {
      const auto size = static_cast<int64_t>(frame.size());
      shared_bytes->fetch_add(size);
      shared = std::shared_ptr<const Frame>(new Frame(std::move(frame)),
                                            [shared_bytes, size](const Frame* f) {
                                              shared_bytes->fetch_sub(size);
                                              delete f;
                                            });
    } else if (targets.size() > 1) {
      shared = std::make_shared<const Frame>(std::move(frame));
    }
    for (const Target& target : targets) {
      OutItem item;
      item.peer = *target.peer;
      item.routing_id = *target.routing_id;
      item.frame = shared ? Frame(shared) : std::move(frame);
      item.type = type;
      item.last = last;
      item.held = held;
      item.message_id = message.envelope.sequence;
      outbox.Push(std::move(item));
    }
  };
  auto start = [&](uint64_t total_bytes, bool chunked, uint32_t count) {
    if (!offer || !chunked) return;
    // A contribution is declared up front, so the coordinator can fold it in as it arrives.
    push(Frame(EncodeChunkOffer({message.envelope.sequence, count, total_bytes,
                                 ContributionOf(message, total_bytes)})),
         true, MessageType::kChunkOffer);
    stats.uploads_offered.fetch_add(1, std::memory_order_relaxed);
    held = true;
  };
  Status status = EncodeMessageFrames(message, chunk_bytes, start, [&](Frame frame) {
    stats.bytes_encoded.fetch_add(frame.size(), std::memory_order_relaxed);
    if (pending) push(std::move(*pending), false, message.type());
    pending = std::move(frame);
  });
  if (!status.ok()) return status;
  push(std::move(*pending), true, message.type());
  return Status::Ok();
}

size_t PayloadBytes(const Message& message) {
  const std::vector<Tensor>* tensors = nullptr;
  if (const auto* r = std::get_if<TaskResult>(&message.body)) tensors = &r->tensors;
  if (const auto* a = std::get_if<TaskAssign>(&message.body)) tensors = &a->tensors;
  size_t bytes = 0;
  if (tensors != nullptr) {
    for (const Tensor& t : *tensors) bytes += t.data.size();
  }
  return bytes;
}

Status ValidateCommon(const TransportOptions& o) {
  if (o.endpoint.empty()) return Status::InvalidArgument("transport: no endpoint");
  if (o.heartbeat_interval_ms == 0) {
    return Status::InvalidArgument("transport: heartbeat_interval_ms must be positive");
  }
  if (o.peer_timeout_ms < o.heartbeat_interval_ms) {
    return Status::InvalidArgument("transport: peer_timeout_ms (" +
                                   std::to_string(o.peer_timeout_ms) +
                                   ") must be at least heartbeat_interval_ms (" +
                                   std::to_string(o.heartbeat_interval_ms) + ")");
  }
  if (o.chunk_bytes < kMinChunkBytes || o.chunk_bytes > kMaxChunkBytes) {
    return Status::InvalidArgument("transport: chunk_bytes " + std::to_string(o.chunk_bytes) +
                                   " outside " + std::to_string(kMinChunkBytes) + ".." +
                                   std::to_string(kMaxChunkBytes));
  }
  if (o.high_water_mark < 0) return Status::InvalidArgument("transport: negative high_water_mark");
  if (o.max_active_uploads == 0 || o.upload_queue_budget_bytes == 0) {
    return Status::InvalidArgument("transport: max_active_uploads and upload_queue_budget_bytes "
                                   "must be positive (zero would never grant an upload)");
  }
  if (o.upload_grant_timeout_ms == 0) {
    return Status::InvalidArgument("transport: upload_grant_timeout_ms must be positive");
  }
  if (o.curve && IsInproc(o.endpoint)) {
    return Status::InvalidArgument("transport: CURVE needs tcp:// or ipc://; ZeroMQ runs no "
                                   "security handshake on inproc:// (" + o.endpoint + ")");
  }
  return Status::Ok();
}

std::chrono::milliseconds TickFor(uint32_t heartbeat_interval_ms, uint32_t peer_timeout_ms) {
  const uint32_t shortest = std::min(heartbeat_interval_ms, peer_timeout_ms);
  return std::chrono::milliseconds(std::clamp<uint32_t>(shortest / 4, 1, 250));
}

Message HeartbeatMessage(uint64_t run_id, uint64_t round, uint64_t sequence) {
  Message m;
  m.envelope.run_id = run_id;
  m.envelope.round = round;
  m.envelope.sequence = sequence;
  m.body = Heartbeat{};
  return m;
}

Message ErrorMessage(uint64_t run_id, uint64_t round, uint64_t task_id, uint64_t sequence,
                     ErrorCode code, const std::string& text) {
  Message m;
  m.envelope.run_id = run_id;
  m.envelope.round = round;
  m.envelope.task_id = task_id;
  m.envelope.sequence = sequence;
  m.body = Error{code, text.substr(0, kMaxStringBytes)};
  return m;
}

Status AcceptIntoSession(SessionValidator& validator, const Message& message) {
  const MessageType type = message.type();
  // Heartbeats, Byes and the inference service's requests and replies belong to no round.
  if ((type == MessageType::kHeartbeat || type == MessageType::kBye ||
       type == MessageType::kServeRequest || type == MessageType::kServeReply) &&
      message.envelope.round < validator.current_round()) {
    Message copy{message.envelope, message.body};
    copy.envelope.round = validator.current_round();
    return validator.Accept(copy);
  }
  return validator.Accept(message);
}

Decoded DecodeFrame(std::string_view bytes, ChunkReassembler* reassembler,
                    const ChunkAdmission& admit) {
  Decoded out;
  if (bytes.size() > kMaxFrameBytes) {
    out.error = Status::Corruption("frame of " + std::to_string(bytes.size()) +
                                   " bytes exceeds the limit of " + std::to_string(kMaxFrameBytes));
    return out;
  }
  StatusOr<MessageType> type = PeekType(bytes);
  if (!type.ok()) {
    out.error = type.status();
    return out;
  }
  if (*type == MessageType::kChunkOffer || *type == MessageType::kChunkGrant) {
    out.error = Status::Corruption("a " + std::string(MessageTypeName(*type)) +
                                   " frame, which only the other side receives");
    return out;
  }
  if (*type == MessageType::kChunk) {
    if (reassembler == nullptr) {
      out.error = Status::FailedPrecondition("a chunk from a peer that has not joined");
      return out;
    }
    StatusOr<ChunkView> chunk = DecodeChunkView(bytes);
    if (!chunk.ok()) {
      out.error = chunk.status();
      return out;
    }
    out.chunk = true;
    out.chunk_id = chunk->message_id;
    if (admit) {
      Status admitted = admit(*chunk);
      if (!admitted.ok()) {
        out.error = std::move(admitted);
        return out;
      }
    }
    out.reassembled = true;
    StatusOr<std::optional<AssembledMessage>> whole = reassembler->AddAssembled(*chunk);
    if (!whole.ok()) {
      out.error = whole.status();
      return out;
    }
    if (!whole->has_value()) {  // accepted, incomplete
      out.bin_piece = reassembler->TakeBin(chunk->message_id, &out.bin_offset);
      return out;
    }
    if ((*whole)->streamed) {
      out.streamed = true;
      out.bin_offset = (*whole)->bin_offset;
      out.bin_piece = std::move(*(*whole)->bin);
      (*whole)->bin = std::string();
    }
    StatusOr<Message> message = DecodeAssembled(std::move(**whole));
    out.complete = true;
    if (!message.ok()) {
      out.error = message.status();
    } else {
      out.message = std::move(*message);
    }
    return out;
  }
  out.complete = true;
  if (bytes.size() > kChunkThresholdBytes) {
    out.error = Status::Corruption("unchunked message of " + std::to_string(bytes.size()) +
                                   " bytes; messages above " +
                                   std::to_string(kChunkThresholdBytes) + " bytes travel as chunks");
    return out;
  }
  StatusOr<Message> message = DecodeMessage(bytes);
  if (!message.ok()) {
    out.error = message.status();
  } else {
    out.message = std::move(*message);
  }
  return out;
}

}  // namespace tandem::wire::detail

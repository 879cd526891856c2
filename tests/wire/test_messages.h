// Sample messages of every type for the wire tests, and a raw msgpack writer for building hostile
// frames that EncodeMessage would refuse to produce.
#pragma once

#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST
#endif
#include <msgpack.hpp>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "wire/message.h"

namespace tandem::wire::testing {

inline Envelope SampleEnvelope(uint64_t task_id = 17) {
  Envelope e;
  e.run_id = 0xC0FFEE;
  e.round = 3;
  e.task_id = task_id;
  e.sequence = 42;
  return e;
}

// One message of every type, each with non-default content.
inline std::vector<Message> SampleMessages() {
  std::vector<Message> out;
  out.push_back({SampleEnvelope(0), Hello{"tandem/0.1.0", {"fedavg.train", "distill.logits"}}});
  out.push_back({SampleEnvelope(0), Welcome{7, 500, 5000}});
  out.push_back({SampleEnvelope(0), Heartbeat{}});
  TaskAssign assign;
  assign.kind = "fedavg.train";
  assign.params = {{"lr", 0.05}, {"local_steps", int64_t{20}}, {"optimizer", std::string("sgd")},
                   {"offset", int64_t{-3}}};
  const std::vector<float> w = {1.0f, -2.5f, 0.0f, -0.0f, 1e-40f, 3.4e38f};
  assign.tensors.push_back(Tensor::Float32("model.weights", {2, 3}, w));
  assign.tensors.push_back(Tensor::Float32("scalar", {}, std::vector<float>{0.25f}));
  assign.tensors.push_back(Tensor::Float32("empty", {0, 4}, std::vector<float>{}));
  assign.deadline_ms = 30000;
  out.push_back({SampleEnvelope(), assign});
  TaskResult result;
  const std::vector<float> delta = {0.1f, 0.2f, 0.3f, 0.4f};
  result.tensors.push_back(Tensor::Float32("delta", {4}, delta));
  result.tensors.push_back(
      Tensor::Uint32("masked", {3}, std::vector<uint32_t>{0u, 0xFFFFFFFFu, 12345u}));
  result.weight = 128.0;
  result.metrics = {{"loss", 2.25}, {"clipped", 1.0}};
  out.push_back({SampleEnvelope(), result});
  out.push_back({SampleEnvelope(), TaskCancel{"round closed"}});
  out.push_back({SampleEnvelope(0), Bye{"shutting down"}});
  out.push_back({SampleEnvelope(0), Error{ErrorCode::kStale, "sequence 3 after 9"}});
  ServeRequest request{"serve.verify", {{"temperature", 0.5}, {"top_k", int64_t{0}}}, {}, 250};
  request.tensors.push_back(Tensor::Uint32("context", {3}, std::vector<uint32_t>{0, 104, 105}));
  request.tensors.push_back(Tensor::Float32("q", {1, 2}, std::vector<float>{0.25f, 0.75f}));
  out.push_back({SampleEnvelope(), request});
  ServeReply reply{{{"accepted", int64_t{2}}, {"next", int64_t{10}}, {"text", std::string("x")}},
                   {}};
  reply.tensors.push_back(Tensor::Uint32("tokens", {2}, std::vector<uint32_t>{104, 10}));
  out.push_back({SampleEnvelope(), reply});
  return out;
}

// Builds msgpack by hand.
class RawWriter {
 public:
  RawWriter() = default;
  RawWriter(const RawWriter&) = delete;
  msgpack::packer<RawWriter>& pk() { return pk_; }
  void Str(std::string_view s) {
    pk_.pack_str(static_cast<uint32_t>(s.size()));
    pk_.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
  }
  void Bin(std::string_view s) {
    pk_.pack_bin(static_cast<uint32_t>(s.size()));
    pk_.pack_bin_body(s.data(), static_cast<uint32_t>(s.size()));
  }
  // [version, type, run, round, task, seq] without the body; the caller packs the body next.
  void Envelope(uint8_t type, uint64_t version = kProtocolVersion, uint32_t fields = 7) {
    pk_.pack_array(fields);
    pk_.pack_uint64(version);
    pk_.pack_uint8(type);
    pk_.pack_uint64(1);
    pk_.pack_uint64(2);
    pk_.pack_uint64(3);
    pk_.pack_uint64(4);
  }
  void Raw(std::string_view s) { bytes_.append(s); }
  void write(const char* data, size_t size) { bytes_.append(data, size); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
  msgpack::packer<RawWriter> pk_{*this};
};

// A message with `body` for `round` and `task`; the transport fills run id and sequence.
inline Message Make(Body body, uint64_t round = 0, uint64_t task = 0) {
  Message m;
  m.envelope.round = round;
  m.envelope.task_id = task;
  m.body = std::move(body);
  return m;
}

// A TaskResult with one float32 tensor "delta", and a TaskAssign with one "weights".
inline Message ResultMessage(uint64_t round, uint64_t task, const std::vector<float>& values) {
  TaskResult r;
  r.tensors.push_back(Tensor::Float32("delta", {values.size()}, values));
  r.weight = 2.0;
  r.metrics["loss"] = 0.5;
  return Make(std::move(r), round, task);
}

inline Message AssignMessage(uint64_t round, uint64_t task, const std::vector<float>& values) {
  TaskAssign a;
  a.kind = "fedavg.train";
  a.params["lr"] = 0.1;
  a.tensors.push_back(Tensor::Float32("weights", {values.size()}, values));
  return Make(std::move(a), round, task);
}

inline std::string Encoded(const Message& m) {
  StatusOr<std::string> bytes = EncodeMessage(m);
  TANDEM_CHECK(bytes.ok());
  return *bytes;
}

// Replaces the first occurrence of `from` in `bytes` (which must hold it).
inline std::string Patch(std::string bytes, const std::string& from, const std::string& to) {
  const size_t at = bytes.find(from);
  TANDEM_CHECK(at != std::string::npos && from.size() == to.size());
  bytes.replace(at, from.size(), to);
  return bytes;
}

inline std::string FloatBytes(float f) {
  std::string out(4, '\0');
  std::memcpy(out.data(), &f, 4);
  return out;
}

}  // namespace tandem::wire::testing

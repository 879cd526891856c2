// Internal to tandem_wire: the strict msgpack reading and writing that message.cc and chunk.cc
// share. Not part of the module's public surface; only wire/*.cc include it.
// Built on msgpack-c (C++, header-only); every msgpack exception is turned into a Status here.
#pragma once

#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST
#endif
#include <msgpack.hpp>

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"
#include "wire/message.h"
#include "wire/protocol.h"

namespace tandem::wire::detail {

// The buffer type for msgpack::packer: appends to `out`, or, when `out` is null, hands the bytes
// to `sink` (the chunk-frame builder of EncodeMessageFrames), or, when both are null, only counts
// them (an encoding's size without writing it: a bin body is one call, not a copy).
struct StringWriter {
  std::string* out = nullptr;
  void (*sink)(void* context, const char* data, size_t size) = nullptr;
  void* sink_context = nullptr;
  size_t written = 0;
  void write(const char* data, size_t size) {
    written += size;
    if (out != nullptr) {
      out->append(data, size);
    } else if (sink != nullptr) {
      sink(sink_context, data, size);
    }
  }
};

// Packs a message that already passed ValidateMessage (defined in message.cc; used by
// EncodeMessage and by the chunked encoder in chunk.cc).
void PackValidMessage(const Message& message, StringWriter& writer);

// Decodes a message whose largest tensor's data was held apart while it was reassembled
// (chunk.cc): `skeleton` is the message with that bin written as an empty bin8 (c4 00) at offset
// `placeholder`, and `bin` the data, moved into the tensor without a copy. `bin_finite`: its
// 4-byte words were already checked for NaN and infinity, so validation skips that scan.
// Everything else is checked exactly as DecodeMessage does. `streamed_bytes` > 0: the bin (of
// that many bytes, checked against the tensor's shape) was streamed away as it arrived; `bin` must
// be empty, the tensor (f32, of a TaskResult) keeps name, dtype and shape and gets no data.
StatusOr<Message> DecodeWithDetachedBin(std::string_view skeleton, size_t placeholder,
                                        std::string&& bin, bool bin_finite,
                                        uint64_t streamed_bytes = 0);

// Whether any of the `n` little-endian float32 at `p` is NaN or infinite (a vectorized scan).
bool AnyNonFiniteFloat32(const char* p, uint64_t n);

// A parsed msgpack document. `object` references `bytes` (strings and bins are not copied), so the
// bytes must outlive it.
struct Document {
  msgpack::object_handle handle;
  const msgpack::object& root() const { return handle.get(); }
};

// Parses exactly one msgpack value spanning all of `bytes`. A first pass, which allocates nothing
// per value, rejects truncation, trailing bytes, malformed input, ext types, nesting deeper than
// kMaxNestingDepth and more than kMaxValues values; only then is the object tree built, with
// string and bin lengths capped at kMaxStringBytes / kMaxMessageBytes.
Status ParseDocument(std::string_view bytes, Document* doc);

// Checks the frame header shared by messages and chunks, [version, type, ...]: root is an array
// of at least two elements, version is kProtocolVersion (else InvalidArgument), type is known.
// The caller checks the array's size for the type.
Status ReadHeader(const msgpack::object& root, MessageType* type);

const char* TypeName(const msgpack::object& o);

StatusOr<uint64_t> ReadUint(const msgpack::object& o, std::string_view what,
                            uint64_t max = UINT64_MAX);
StatusOr<std::string_view> ReadStr(const msgpack::object& o, std::string_view what,
                                   size_t max_bytes);
StatusOr<std::string_view> ReadBin(const msgpack::object& o, std::string_view what,
                                   size_t max_bytes);

}  // namespace tandem::wire::detail

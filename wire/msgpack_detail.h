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
#include "wire/protocol.h"

namespace tandem::wire::detail {

// Appends to a std::string; the buffer type for msgpack::packer.
struct StringWriter {
  std::string* out;
  void write(const char* data, size_t size) { out->append(data, size); }
};

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

// Strict msgpack reading for tandem_wire: a structural first pass, then msgpack-c's object tree.
#include "wire/msgpack_detail.h"

#include <exception>
#include <new>
#include <string>

namespace tandem::wire::detail {
namespace {

// First pass over a document: counts values and nesting without building anything, and stops at
// the first thing a tandem frame never contains. msgpack-c's object builder allocates
// 24 bytes per declared array element before the elements arrive, so these bounds come first.
struct StructureVisitor : msgpack::null_visitor {
  size_t depth = 0;
  size_t values = 1;  // the root
  const char* stop_reason = nullptr;

  bool Enter(uint64_t children) {
    if (++depth > kMaxNestingDepth) {
      stop_reason = "nesting deeper than the protocol allows";
      return false;
    }
    values += children;
    if (values > kMaxValues) {
      stop_reason = "more msgpack values than the protocol allows";
      return false;
    }
    return true;
  }
  bool start_array(uint32_t n) { return Enter(n); }
  bool end_array() {
    --depth;
    return true;
  }
  bool start_map(uint32_t n) { return Enter(uint64_t{2} * n); }
  bool end_map() {
    --depth;
    return true;
  }
  bool visit_ext(const char*, uint32_t) {
    stop_reason = "msgpack ext values are not part of the protocol";
    return false;
  }
};

bool ReferenceEverything(msgpack::type::object_type, std::size_t, void*) { return true; }

}  // namespace

Status ParseDocument(std::string_view bytes, Document* doc) {
  if (bytes.empty()) return Status::Corruption("empty frame");
  if (bytes.size() > kMaxMessageBytes) {
    return Status::Corruption("frame of " + std::to_string(bytes.size()) +
                              " bytes exceeds the limit of " + std::to_string(kMaxMessageBytes));
  }
  try {
    StructureVisitor visitor;
    size_t off = 0;
    const msgpack::parse_return ret =
        msgpack::detail::parse_imp(bytes.data(), bytes.size(), off, visitor);
    switch (ret) {
      case msgpack::PARSE_SUCCESS: break;
      case msgpack::PARSE_EXTRA_BYTES:
        return Status::Corruption(std::to_string(bytes.size() - off) + " trailing bytes after " +
                                  std::to_string(off) + " bytes of message");
      case msgpack::PARSE_CONTINUE:
        return Status::Corruption("truncated: frame ends inside a value (" +
                                  std::to_string(bytes.size()) + " bytes)");
      case msgpack::PARSE_PARSE_ERROR:
        return Status::Corruption("malformed msgpack at byte " + std::to_string(off));
      case msgpack::PARSE_STOP_VISITOR:
        return Status::Corruption(visitor.stop_reason ? visitor.stop_reason : "rejected frame");
    }
    if (ret != msgpack::PARSE_SUCCESS) return Status::Corruption("malformed msgpack");

    const msgpack::unpack_limit limit(/*array=*/kMaxValues, /*map=*/kMaxValues,
                                      /*str=*/kMaxStringBytes, /*bin=*/kMaxMessageBytes,
                                      /*ext=*/0, /*depth=*/kMaxNestingDepth + 1);
    off = 0;
    doc->handle = msgpack::unpack(bytes.data(), bytes.size(), off, &ReferenceEverything, nullptr,
                                  limit);
    if (off != bytes.size()) return Status::Corruption("trailing bytes after message");
  } catch (const msgpack::str_size_overflow&) {
    return Status::Corruption("a string is longer than " + std::to_string(kMaxStringBytes) +
                              " bytes");
  } catch (const msgpack::size_overflow& e) {
    return Status::Corruption(std::string("size limit exceeded: ") + e.what());
  } catch (const msgpack::insufficient_bytes&) {
    return Status::Corruption("truncated frame");
  } catch (const std::bad_alloc&) {
    return Status::Corruption("out of memory decoding frame");
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("malformed msgpack: ") + e.what());
  }
  return Status::Ok();
}

const char* TypeName(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return "nil";
    case msgpack::type::BOOLEAN: return "bool";
    case msgpack::type::POSITIVE_INTEGER: return "unsigned integer";
    case msgpack::type::NEGATIVE_INTEGER: return "negative integer";
    case msgpack::type::FLOAT32: return "float32";
    case msgpack::type::FLOAT64: return "float64";
    case msgpack::type::STR: return "str";
    case msgpack::type::BIN: return "bin";
    case msgpack::type::ARRAY: return "array";
    case msgpack::type::MAP: return "map";
    case msgpack::type::EXT: return "ext";
  }
  return "unknown";
}

Status ReadHeader(const msgpack::object& root, MessageType* type) {
  if (root.type != msgpack::type::ARRAY || root.via.array.size < 2) {
    return Status::Corruption(std::string("not a tandem frame: expected an array [version, type, "
                                          "...], got ") +
                              TypeName(root));
  }
  const msgpack::object* fields = root.via.array.ptr;
  TANDEM_ASSIGN_OR_RETURN(const uint64_t version, ReadUint(fields[0], "version"));
  if (version != kProtocolVersion) {
    return Status::InvalidArgument("unsupported protocol version " + std::to_string(version) +
                                   " (this build speaks version " +
                                   std::to_string(kProtocolVersion) + ")");
  }
  TANDEM_ASSIGN_OR_RETURN(const uint64_t raw_type, ReadUint(fields[1], "type"));
  if (!IsMessageTypeValue(raw_type)) {
    return Status::Corruption("unknown message type " + std::to_string(raw_type));
  }
  *type = static_cast<MessageType>(raw_type);
  return Status::Ok();
}

StatusOr<uint64_t> ReadUint(const msgpack::object& o, std::string_view what, uint64_t max) {
  if (o.type != msgpack::type::POSITIVE_INTEGER) {
    return Status::Corruption(std::string(what) + ": expected an unsigned integer, got " +
                              TypeName(o));
  }
  if (o.via.u64 > max) {
    return Status::Corruption(std::string(what) + ": " + std::to_string(o.via.u64) +
                              " exceeds the limit of " + std::to_string(max));
  }
  return o.via.u64;
}

StatusOr<std::string_view> ReadStr(const msgpack::object& o, std::string_view what,
                                   size_t max_bytes) {
  if (o.type != msgpack::type::STR) {
    return Status::Corruption(std::string(what) + ": expected a string, got " + TypeName(o));
  }
  if (o.via.str.size > max_bytes) {
    return Status::Corruption(std::string(what) + ": string of " +
                              std::to_string(o.via.str.size) + " bytes exceeds the limit of " +
                              std::to_string(max_bytes));
  }
  return std::string_view(o.via.str.ptr, o.via.str.size);
}

StatusOr<std::string_view> ReadBin(const msgpack::object& o, std::string_view what,
                                   size_t max_bytes) {
  if (o.type != msgpack::type::BIN) {
    return Status::Corruption(std::string(what) + ": expected bin, got " + TypeName(o));
  }
  if (o.via.bin.size > max_bytes) {
    return Status::Corruption(std::string(what) + ": " + std::to_string(o.via.bin.size) +
                              " bytes exceed the limit of " + std::to_string(max_bytes));
  }
  return std::string_view(o.via.bin.ptr, o.via.bin.size);
}

}  // namespace tandem::wire::detail

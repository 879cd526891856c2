// The message codec: envelope as a 7-element msgpack array, bodies as maps with fixed keys,
// tensors as maps whose `data` is a msgpack bin of little-endian elements (docs/protocol.md).
#include "wire/message.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <set>
#include <type_traits>
#include <utility>

#include "wire/msgpack_detail.h"

namespace tandem::wire {
namespace {

using detail::ReadBin;
using detail::ReadStr;
using detail::ReadUint;
using detail::TypeName;

constexpr size_t kEnvelopeFields = 7;  // version, type, run_id, round, task_id, sequence, body

// ---- Little-endian element bytes. ----

uint32_t LoadLe32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}

// Byte-swaps a 4- or 8-byte word on big-endian hosts; the identity on little-endian ones.
template <typename U>
U ToLittle(U v) {
  if constexpr (std::endian::native == std::endian::little) {
    return v;
  } else if constexpr (sizeof(U) == 8) {
    return __builtin_bswap64(v);
  } else {
    return __builtin_bswap32(v);
  }
}

template <typename T>
using WordOf = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;

template <typename T>
std::string ToLeBytes(std::span<const T> values) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  std::string out(values.size() * sizeof(T), '\0');
  if constexpr (std::endian::native == std::endian::little) {
    if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  } else {
    for (size_t i = 0; i < values.size(); ++i) {
      WordOf<T> v;
      std::memcpy(&v, &values[i], sizeof(T));
      v = ToLittle(v);
      std::memcpy(out.data() + sizeof(T) * i, &v, sizeof(T));
    }
  }
  return out;
}

template <typename T>
void FromLeBytes(const std::string& data, T* out, size_t n) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  if constexpr (std::endian::native == std::endian::little) {
    if (n > 0) std::memcpy(out, data.data(), n * sizeof(T));
  } else {
    for (size_t i = 0; i < n; ++i) {
      WordOf<T> v;
      std::memcpy(&v, data.data() + sizeof(T) * i, sizeof(T));
      v = ToLittle(v);
      std::memcpy(out + i, &v, sizeof(T));
    }
  }
}

// ---- Validation helpers. ----

// Exponent all ones: Inf or NaN. A bit test, so it is exact and independent of -ffast-math.
bool NonFinite(uint32_t bits) { return (bits & 0x7F800000u) == 0x7F800000u; }

// The index of the first NaN or infinite element among `n` little-endian float32 at `p`, or `n`.
// Blocks are tested without branches, which the compiler vectorizes: this scan runs over every
// model update on both sides of the wire, at memory speed rather than one branch per element.
uint64_t FirstNonFinite(const char* p, uint64_t n) {
  constexpr uint64_t kBlock = 1024;
  for (uint64_t begin = 0; begin < n; begin += kBlock) {
    const uint64_t end = std::min(n, begin + kBlock);
    uint32_t any = 0;
    for (uint64_t i = begin; i < end; ++i) any |= NonFinite(LoadLe32(p + 4 * i)) ? 1u : 0u;
    if (any == 0) continue;
    for (uint64_t i = begin; i < end; ++i) {
      if (NonFinite(LoadLe32(p + 4 * i))) return i;
    }
  }
  return n;
}

// Elements in `shape`, or an error when the rank or the element count exceeds the limits.
StatusOr<uint64_t> CheckedElements(const std::vector<uint64_t>& shape, const std::string& what) {
  if (shape.size() > kMaxTensorRank) {
    return Status::InvalidArgument(what + ": rank " + std::to_string(shape.size()) +
                                   " exceeds the limit of " + std::to_string(kMaxTensorRank));
  }
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (d > kMaxTensorElements || (d != 0 && n > kMaxTensorElements / d)) {
      return Status::InvalidArgument(what + ": more than " + std::to_string(kMaxTensorElements) +
                                     " elements");
    }
    n *= d;
  }
  return n;
}

Status CheckName(std::string_view name, const std::string& what) {
  if (name.empty()) return Status::InvalidArgument(what + ": empty name");
  if (name.size() > kMaxNameBytes) {
    return Status::InvalidArgument(what + ": name of " + std::to_string(name.size()) +
                                   " bytes exceeds the limit of " + std::to_string(kMaxNameBytes));
  }
  return Status::Ok();
}

Status CheckText(std::string_view text, const std::string& what) {
  if (text.size() > kMaxStringBytes) {
    return Status::InvalidArgument(what + ": string of " + std::to_string(text.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(kMaxStringBytes));
  }
  return Status::Ok();
}

Status CheckFinite(double v, const std::string& what) {
  if (!std::isfinite(v)) return Status::InvalidArgument(what + ": not a finite number");
  return Status::Ok();
}

Status CheckMapSize(size_t n, const std::string& what) {
  if (n > kMaxMapEntries) {
    return Status::InvalidArgument(what + ": " + std::to_string(n) +
                                   " entries exceed the limit of " +
                                   std::to_string(kMaxMapEntries));
  }
  return Status::Ok();
}

Status ValidateTensorImpl(const Tensor& t, bool scan_floats, bool streamed = false);

Status ValidateTensors(const std::vector<Tensor>& tensors, const std::string& what,
                       const Tensor* known_finite, const Tensor* streamed = nullptr) {
  if (tensors.size() > kMaxTensorsPerMessage) {
    return Status::InvalidArgument(what + ": " + std::to_string(tensors.size()) +
                                   " tensors exceed the limit of " +
                                   std::to_string(kMaxTensorsPerMessage));
  }
  std::set<std::string_view> names;
  for (const Tensor& t : tensors) {
    TANDEM_RETURN_IF_ERROR(
        ValidateTensorImpl(t, &t != known_finite, &t == streamed).WithContext(what));
    if (!names.insert(t.name).second) {
      return Status::InvalidArgument(what + ": duplicate tensor name '" + t.name + "'");
    }
  }
  return Status::Ok();
}

Status ValidateParams(const Params& params, const std::string& what) {
  TANDEM_RETURN_IF_ERROR(CheckMapSize(params.size(), what));
  for (const auto& [key, value] : params) {
    TANDEM_RETURN_IF_ERROR(CheckName(key, what));
    const std::string field = what + "['" + key + "']";
    if (const double* d = std::get_if<double>(&value)) {
      TANDEM_RETURN_IF_ERROR(CheckFinite(*d, field));
    } else if (const std::string* s = std::get_if<std::string>(&value)) {
      TANDEM_RETURN_IF_ERROR(CheckText(*s, field));
    }
  }
  return Status::Ok();
}

Status ValidateMetrics(const Metrics& metrics, const std::string& what) {
  TANDEM_RETURN_IF_ERROR(CheckMapSize(metrics.size(), what));
  for (const auto& [key, value] : metrics) {
    TANDEM_RETURN_IF_ERROR(CheckName(key, what));
    TANDEM_RETURN_IF_ERROR(CheckFinite(value, what + "['" + key + "']"));
  }
  return Status::Ok();
}

bool NeedsTaskId(MessageType type) {
  return type == MessageType::kTaskAssign || type == MessageType::kTaskResult ||
         type == MessageType::kTaskCancel || type == MessageType::kServeRequest ||
         type == MessageType::kServeReply;
}

struct BodyValidator {
  const Tensor* known_finite = nullptr;  // its float32 elements were checked as they arrived
  const Tensor* streamed = nullptr;      // its data was streamed away (no data; shape checked)
  Status operator()(const Hello& b) const {
    TANDEM_RETURN_IF_ERROR(CheckText(b.agent, "Hello.agent"));
    TANDEM_RETURN_IF_ERROR(CheckMapSize(b.capabilities.size(), "Hello.capabilities"));
    std::set<std::string_view> seen;
    for (const std::string& c : b.capabilities) {
      TANDEM_RETURN_IF_ERROR(CheckName(c, "Hello.capabilities"));
      if (!seen.insert(c).second) {
        return Status::InvalidArgument("Hello.capabilities: duplicate '" + c + "'");
      }
    }
    return Status::Ok();
  }
  Status operator()(const Welcome& b) const {
    if (b.heartbeat_interval_ms == 0) {
      return Status::InvalidArgument("Welcome.heartbeat_interval_ms: must be positive");
    }
    if (b.peer_timeout_ms < b.heartbeat_interval_ms) {
      return Status::InvalidArgument(
          "Welcome.peer_timeout_ms: must be at least heartbeat_interval_ms");
    }
    return Status::Ok();
  }
  Status operator()(const Heartbeat&) const { return Status::Ok(); }
  Status operator()(const TaskAssign& b) const {
    TANDEM_RETURN_IF_ERROR(CheckName(b.kind, "TaskAssign.kind"));
    TANDEM_RETURN_IF_ERROR(ValidateParams(b.params, "TaskAssign.params"));
    return ValidateTensors(b.tensors, "TaskAssign.tensors", known_finite);
  }
  Status operator()(const TaskResult& b) const {
    TANDEM_RETURN_IF_ERROR(CheckFinite(b.weight, "TaskResult.weight"));
    if (b.weight < 0) return Status::InvalidArgument("TaskResult.weight: negative");
    TANDEM_RETURN_IF_ERROR(ValidateMetrics(b.metrics, "TaskResult.metrics"));
    return ValidateTensors(b.tensors, "TaskResult.tensors", known_finite, streamed);
  }
  Status operator()(const TaskCancel& b) const { return CheckText(b.reason, "TaskCancel.reason"); }
  Status operator()(const ServeRequest& b) const {
    TANDEM_RETURN_IF_ERROR(CheckName(b.kind, "ServeRequest.kind"));
    TANDEM_RETURN_IF_ERROR(ValidateParams(b.params, "ServeRequest.params"));
    return ValidateTensors(b.tensors, "ServeRequest.tensors", known_finite);
  }
  Status operator()(const ServeReply& b) const {
    TANDEM_RETURN_IF_ERROR(ValidateParams(b.params, "ServeReply.params"));
    return ValidateTensors(b.tensors, "ServeReply.tensors", known_finite);
  }
  Status operator()(const Bye& b) const { return CheckText(b.reason, "Bye.reason"); }
  Status operator()(const Error& b) const {
    const auto code = static_cast<uint16_t>(b.code);
    if (code < kMinErrorCode || code > kMaxErrorCode) {
      return Status::InvalidArgument("Error.code: unknown code " + std::to_string(code));
    }
    return CheckText(b.message, "Error.message");
  }
};

// ---- Encoding. ----

using Packer = msgpack::packer<detail::StringWriter>;

void PackStr(Packer& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

void PackTensors(Packer& pk, const std::vector<Tensor>& tensors) {
  pk.pack_array(static_cast<uint32_t>(tensors.size()));
  for (const Tensor& t : tensors) {
    pk.pack_map(4);
    PackStr(pk, "name");
    PackStr(pk, t.name);
    PackStr(pk, "dtype");
    PackStr(pk, DTypeName(t.dtype));
    PackStr(pk, "shape");
    pk.pack_array(static_cast<uint32_t>(t.shape.size()));
    for (uint64_t d : t.shape) pk.pack_uint64(d);
    PackStr(pk, "data");
    pk.pack_bin(static_cast<uint32_t>(t.data.size()));
    pk.pack_bin_body(t.data.data(), static_cast<uint32_t>(t.data.size()));
  }
}

struct BodyPacker {
  Packer& pk;
  void operator()(const Hello& b) const {
    pk.pack_map(2);
    PackStr(pk, "agent");
    PackStr(pk, b.agent);
    PackStr(pk, "capabilities");
    pk.pack_array(static_cast<uint32_t>(b.capabilities.size()));
    for (const std::string& c : b.capabilities) PackStr(pk, c);
  }
  void operator()(const Welcome& b) const {
    pk.pack_map(3);
    PackStr(pk, "client_index");
    pk.pack_uint32(b.client_index);
    PackStr(pk, "heartbeat_interval_ms");
    pk.pack_uint32(b.heartbeat_interval_ms);
    PackStr(pk, "peer_timeout_ms");
    pk.pack_uint32(b.peer_timeout_ms);
  }
  void operator()(const Heartbeat&) const { pk.pack_map(0); }
  void PackParams(const Params& params) const {
    pk.pack_map(static_cast<uint32_t>(params.size()));
    for (const auto& [key, value] : params) {
      PackStr(pk, key);
      if (const int64_t* i = std::get_if<int64_t>(&value)) {
        pk.pack_int64(*i);
      } else if (const double* d = std::get_if<double>(&value)) {
        pk.pack_double(*d);
      } else {
        PackStr(pk, std::get<std::string>(value));
      }
    }
  }
  void operator()(const TaskAssign& b) const {
    pk.pack_map(4);
    PackStr(pk, "kind");
    PackStr(pk, b.kind);
    PackStr(pk, "params");
    PackParams(b.params);
    PackStr(pk, "tensors");
    PackTensors(pk, b.tensors);
    PackStr(pk, "deadline_ms");
    pk.pack_uint32(b.deadline_ms);
  }
  void operator()(const ServeRequest& b) const {
    pk.pack_map(4);
    PackStr(pk, "kind");
    PackStr(pk, b.kind);
    PackStr(pk, "params");
    PackParams(b.params);
    PackStr(pk, "tensors");
    PackTensors(pk, b.tensors);
    PackStr(pk, "deadline_ms");
    pk.pack_uint32(b.deadline_ms);
  }
  void operator()(const ServeReply& b) const {
    pk.pack_map(2);
    PackStr(pk, "params");
    PackParams(b.params);
    PackStr(pk, "tensors");
    PackTensors(pk, b.tensors);
  }
  void operator()(const TaskResult& b) const {
    pk.pack_map(3);
    PackStr(pk, "tensors");
    PackTensors(pk, b.tensors);
    PackStr(pk, "weight");
    pk.pack_double(b.weight);
    PackStr(pk, "metrics");
    pk.pack_map(static_cast<uint32_t>(b.metrics.size()));
    for (const auto& [key, value] : b.metrics) {
      PackStr(pk, key);
      pk.pack_double(value);
    }
  }
  void operator()(const TaskCancel& b) const {
    pk.pack_map(1);
    PackStr(pk, "reason");
    PackStr(pk, b.reason);
  }
  void operator()(const Bye& b) const {
    pk.pack_map(1);
    PackStr(pk, "reason");
    PackStr(pk, b.reason);
  }
  void operator()(const Error& b) const {
    pk.pack_map(2);
    PackStr(pk, "code");
    pk.pack_uint16(static_cast<uint16_t>(b.code));
    PackStr(pk, "message");
    PackStr(pk, b.message);
  }
};

size_t TensorBytes(const Body& body) {
  size_t total = 0;
  auto add = [&](const std::vector<Tensor>& ts) {
    for (const Tensor& t : ts) total += t.data.size();
  };
  if (const auto* a = std::get_if<TaskAssign>(&body)) add(a->tensors);
  if (const auto* r = std::get_if<TaskResult>(&body)) add(r->tensors);
  if (const auto* q = std::get_if<ServeRequest>(&body)) add(q->tensors);
  if (const auto* a = std::get_if<ServeReply>(&body)) add(a->tensors);
  return total;
}

// ---- Decoding. ----

// The fields of a map body or tensor: every key a string, each of `names` present exactly once,
// nothing else.
template <size_t N>
class Fields {
 public:
  Fields(std::string what, const std::array<std::string_view, N>& names)
      : what_(std::move(what)), names_(names) {}

  Status Read(const msgpack::object& o) {
    if (o.type != msgpack::type::MAP) {
      return Status::Corruption(what_ + ": expected a map, got " + TypeName(o));
    }
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      const msgpack::object_kv& kv = o.via.map.ptr[i];
      TANDEM_ASSIGN_OR_RETURN(std::string_view key, ReadStr(kv.key, what_ + " key", kMaxNameBytes));
      size_t j = 0;
      while (j < N && names_[j] != key) ++j;
      if (j == N) return Status::Corruption(what_ + ": unknown field '" + std::string(key) + "'");
      if (values_[j]) {
        return Status::Corruption(what_ + ": duplicate field '" + std::string(key) + "'");
      }
      values_[j] = &kv.val;
    }
    for (size_t j = 0; j < N; ++j) {
      if (!values_[j]) {
        return Status::Corruption(what_ + ": missing field '" + std::string(names_[j]) + "'");
      }
    }
    return Status::Ok();
  }
  // Only after Read() succeeded; `name` must be one of the names (checked).
  const msgpack::object& operator[](std::string_view name) const {
    for (size_t j = 0; j < N; ++j) {
      if (names_[j] == name) return *values_[j];
    }
    TANDEM_CHECK(false && "unknown field name");
    return *values_[0];
  }
  std::string Path(std::string_view name) const { return what_ + "." + std::string(name); }

 private:
  std::string what_;
  std::array<std::string_view, N> names_;
  std::array<const msgpack::object*, N> values_{};
};

const msgpack::object* ArrayOf(const msgpack::object& o) { return o.via.array.ptr; }

Status ExpectArray(const msgpack::object& o, const std::string& what, size_t max) {
  if (o.type != msgpack::type::ARRAY) {
    return Status::Corruption(what + ": expected an array, got " + TypeName(o));
  }
  if (o.via.array.size > max) {
    return Status::Corruption(what + ": " + std::to_string(o.via.array.size) +
                              " entries exceed the limit of " + std::to_string(max));
  }
  return Status::Ok();
}

Status ExpectMap(const msgpack::object& o, const std::string& what, size_t max) {
  if (o.type != msgpack::type::MAP) {
    return Status::Corruption(what + ": expected a map, got " + TypeName(o));
  }
  if (o.via.map.size > max) {
    return Status::Corruption(what + ": " + std::to_string(o.via.map.size) +
                              " entries exceed the limit of " + std::to_string(max));
  }
  return Status::Ok();
}

StatusOr<double> ReadNumber(const msgpack::object& o, const std::string& what) {
  switch (o.type) {
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return o.via.f64;
    case msgpack::type::POSITIVE_INTEGER: return static_cast<double>(o.via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return static_cast<double>(o.via.i64);
    default: return Status::Corruption(what + ": expected a number, got " + TypeName(o));
  }
}

StatusOr<uint32_t> ReadU32(const msgpack::object& o, const std::string& what) {
  TANDEM_ASSIGN_OR_RETURN(uint64_t v, ReadUint(o, what, UINT32_MAX));
  return static_cast<uint32_t>(v);
}

// How one large tensor avoids a copy while decoding. Two modes:
//  - in place (DecodeMessage(std::string&&)): the tensor whose data fills at least half of the
//    frame is not copied; DecodeMessage moves the frame's buffer into it afterwards;
//  - detached (detail::DecodeWithDetachedBin): the frame holds an empty placeholder bin where the
//    tensor's data was, and the data itself, already in its own string, is moved into the tensor.
struct BinHook {
  const char* base = nullptr;  // in place: the frame
  size_t min_size = 0;         // in place: half the frame
  const char* placeholder = nullptr;  // detached: the placeholder bin, c4 00, in the frame
  std::string* detached = nullptr;    // detached: the data
  uint64_t streamed_bytes = 0;        // detached and streamed away: its length (data stays out)
  bool claimed = false;
  std::string tensor_name;
  size_t offset = 0;  // in place
  size_t size = 0;    // in place
};

StatusOr<Tensor> DecodeTensor(const msgpack::object& o, const std::string& what,
                              BinHook* hook) {
  Fields<4> f(what, {"name", "dtype", "shape", "data"});
  TANDEM_RETURN_IF_ERROR(f.Read(o));
  Tensor t;
  TANDEM_ASSIGN_OR_RETURN(std::string_view name, ReadStr(f["name"], f.Path("name"), kMaxNameBytes));
  t.name = std::string(name);
  TANDEM_ASSIGN_OR_RETURN(std::string_view dtype,
                          ReadStr(f["dtype"], f.Path("dtype"), kMaxNameBytes));
  if (dtype == DTypeName(DType::kFloat32)) {
    t.dtype = DType::kFloat32;
  } else if (dtype == DTypeName(DType::kUint32)) {
    t.dtype = DType::kUint32;
  } else if (dtype == DTypeName(DType::kUint64)) {
    t.dtype = DType::kUint64;
  } else if (dtype == DTypeName(DType::kUint8)) {
    t.dtype = DType::kUint8;
  } else {
    return Status::Corruption(f.Path("dtype") + ": unknown dtype '" + std::string(dtype) + "'");
  }
  const msgpack::object& shape = f["shape"];
  TANDEM_RETURN_IF_ERROR(ExpectArray(shape, f.Path("shape"), kMaxTensorRank));
  for (uint32_t i = 0; i < shape.via.array.size; ++i) {
    TANDEM_ASSIGN_OR_RETURN(uint64_t d,
                            ReadUint(ArrayOf(shape)[i], f.Path("shape"), kMaxTensorElements));
    t.shape.push_back(d);
  }
  TANDEM_ASSIGN_OR_RETURN(
      std::string_view data,
      ReadBin(f["data"], f.Path("data"), kMaxTensorElements * DTypeBytes(t.dtype)));
  // msgpack-c points an empty bin at its length byte or just past it: either lies within the
  // placeholder's two bytes, where no other value can start.
  const bool detached = hook != nullptr && hook->detached != nullptr && !hook->claimed &&
                        data.empty() && data.data() != nullptr &&
                        data.data() >= hook->placeholder && data.data() <= hook->placeholder + 2;
  const size_t size = !detached                ? data.size()
                      : hook->streamed_bytes > 0 ? hook->streamed_bytes
                                                 : hook->detached->size();
  // Shape against length before copying, so a lying shape costs nothing.
  TANDEM_ASSIGN_OR_RETURN(const uint64_t n, CheckedElements(t.shape, what));
  if (size != n * DTypeBytes(t.dtype)) {
    return Status::Corruption(what + ": shape holds " + std::to_string(n) +
                              " elements but data has " + std::to_string(size) + " bytes");
  }
  if (detached) {
    hook->claimed = true;
    hook->tensor_name = t.name;
    if (hook->streamed_bytes > 0) {
      if (t.dtype != DType::kFloat32) {
        return Status::Corruption(what + ": a streamed contribution must be f32");
      }
      return t;
    }
    t.data = std::move(*hook->detached);
    return t;
  }
  if (hook != nullptr && hook->detached == nullptr && !hook->claimed && !data.empty() &&
      data.size() >= hook->min_size) {
    hook->claimed = true;
    hook->tensor_name = t.name;
    hook->offset = static_cast<size_t>(data.data() - hook->base);
    hook->size = data.size();
    return t;  // data filled in by DecodeMessage(std::string&&)
  }
  t.data = std::string(data);
  return t;
}

StatusOr<std::vector<Tensor>> DecodeTensors(const msgpack::object& o, const std::string& what,
                                            BinHook* hook) {
  TANDEM_RETURN_IF_ERROR(ExpectArray(o, what, kMaxTensorsPerMessage));
  std::vector<Tensor> tensors;
  tensors.reserve(o.via.array.size);
  for (uint32_t i = 0; i < o.via.array.size; ++i) {
    TANDEM_ASSIGN_OR_RETURN(Tensor t,
                            DecodeTensor(ArrayOf(o)[i], what + "[" + std::to_string(i) + "]",
                                         hook));
    tensors.push_back(std::move(t));
  }
  return tensors;
}

StatusOr<std::string> ReadString(const msgpack::object& o, const std::string& what, size_t max) {
  TANDEM_ASSIGN_OR_RETURN(std::string_view s, ReadStr(o, what, max));
  return std::string(s);
}

// A parameter map (TaskAssign, ServeRequest, ServeReply): string keys, integer, real or string
// values, no duplicates.
StatusOr<Params> DecodeParams(const msgpack::object& params, const std::string& path) {
  Params out;
  TANDEM_RETURN_IF_ERROR(ExpectMap(params, path, kMaxMapEntries));
  for (uint32_t i = 0; i < params.via.map.size; ++i) {
    const msgpack::object_kv& kv = params.via.map.ptr[i];
    TANDEM_ASSIGN_OR_RETURN(std::string key, ReadString(kv.key, path + " key", kMaxNameBytes));
    const std::string field = path + "['" + key + "']";
    ParamValue value;
    switch (kv.val.type) {
      case msgpack::type::POSITIVE_INTEGER:
        if (kv.val.via.u64 > static_cast<uint64_t>(INT64_MAX)) {
          return Status::Corruption(field + ": integer does not fit in int64");
        }
        value = static_cast<int64_t>(kv.val.via.u64);
        break;
      case msgpack::type::NEGATIVE_INTEGER: value = kv.val.via.i64; break;
      case msgpack::type::FLOAT32:
      case msgpack::type::FLOAT64: value = kv.val.via.f64; break;
      case msgpack::type::STR: {
        TANDEM_ASSIGN_OR_RETURN(value, ReadString(kv.val, field, kMaxStringBytes));
        break;
      }
      default:
        return Status::Corruption(field + ": expected an integer, a float or a string, got " +
                                  TypeName(kv.val));
    }
    if (!out.emplace(std::move(key), std::move(value)).second) {
      return Status::Corruption(field + ": duplicate key");
    }
  }
  return out;
}

StatusOr<Body> DecodeBody(MessageType type, const msgpack::object& o, BinHook* hook) {
  const std::string what(MessageTypeName(type));
  switch (type) {
    case MessageType::kHello: {
      Fields<2> f(what, {"agent", "capabilities"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      Hello b;
      TANDEM_ASSIGN_OR_RETURN(b.agent, ReadString(f["agent"], f.Path("agent"), kMaxStringBytes));
      const msgpack::object& caps = f["capabilities"];
      TANDEM_RETURN_IF_ERROR(ExpectArray(caps, f.Path("capabilities"), kMaxMapEntries));
      for (uint32_t i = 0; i < caps.via.array.size; ++i) {
        TANDEM_ASSIGN_OR_RETURN(
            std::string c, ReadString(ArrayOf(caps)[i], f.Path("capabilities"), kMaxNameBytes));
        b.capabilities.push_back(std::move(c));
      }
      return Body(std::move(b));
    }
    case MessageType::kWelcome: {
      Fields<3> f(what, {"client_index", "heartbeat_interval_ms", "peer_timeout_ms"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      Welcome b;
      TANDEM_ASSIGN_OR_RETURN(b.client_index, ReadU32(f["client_index"], f.Path("client_index")));
      TANDEM_ASSIGN_OR_RETURN(b.heartbeat_interval_ms, ReadU32(f["heartbeat_interval_ms"],
                                                               f.Path("heartbeat_interval_ms")));
      TANDEM_ASSIGN_OR_RETURN(b.peer_timeout_ms,
                              ReadU32(f["peer_timeout_ms"], f.Path("peer_timeout_ms")));
      return Body(b);
    }
    case MessageType::kHeartbeat: {
      Fields<0> f(what, {});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      return Body(Heartbeat{});
    }
    case MessageType::kTaskAssign: {
      Fields<4> f(what, {"kind", "params", "tensors", "deadline_ms"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      TaskAssign b;
      TANDEM_ASSIGN_OR_RETURN(b.kind, ReadString(f["kind"], f.Path("kind"), kMaxNameBytes));
      TANDEM_ASSIGN_OR_RETURN(b.params, DecodeParams(f["params"], f.Path("params")));
      TANDEM_ASSIGN_OR_RETURN(b.tensors, DecodeTensors(f["tensors"], f.Path("tensors"), hook));
      TANDEM_ASSIGN_OR_RETURN(b.deadline_ms, ReadU32(f["deadline_ms"], f.Path("deadline_ms")));
      return Body(std::move(b));
    }
    case MessageType::kTaskResult: {
      Fields<3> f(what, {"tensors", "weight", "metrics"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      TaskResult b;
      TANDEM_ASSIGN_OR_RETURN(b.tensors, DecodeTensors(f["tensors"], f.Path("tensors"), hook));
      TANDEM_ASSIGN_OR_RETURN(b.weight, ReadNumber(f["weight"], f.Path("weight")));
      const msgpack::object& metrics = f["metrics"];
      TANDEM_RETURN_IF_ERROR(ExpectMap(metrics, f.Path("metrics"), kMaxMapEntries));
      for (uint32_t i = 0; i < metrics.via.map.size; ++i) {
        const msgpack::object_kv& kv = metrics.via.map.ptr[i];
        TANDEM_ASSIGN_OR_RETURN(std::string key,
                                ReadString(kv.key, f.Path("metrics") + " key", kMaxNameBytes));
        const std::string field = f.Path("metrics") + "['" + key + "']";
        TANDEM_ASSIGN_OR_RETURN(double value, ReadNumber(kv.val, field));
        if (!b.metrics.emplace(std::move(key), value).second) {
          return Status::Corruption(field + ": duplicate key");
        }
      }
      return Body(std::move(b));
    }
    case MessageType::kTaskCancel: {
      Fields<1> f(what, {"reason"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      TaskCancel b;
      TANDEM_ASSIGN_OR_RETURN(b.reason, ReadString(f["reason"], f.Path("reason"), kMaxStringBytes));
      return Body(std::move(b));
    }
    case MessageType::kBye: {
      Fields<1> f(what, {"reason"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      Bye b;
      TANDEM_ASSIGN_OR_RETURN(b.reason, ReadString(f["reason"], f.Path("reason"), kMaxStringBytes));
      return Body(std::move(b));
    }
    case MessageType::kError: {
      Fields<2> f(what, {"code", "message"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      Error b;
      TANDEM_ASSIGN_OR_RETURN(uint64_t code, ReadUint(f["code"], f.Path("code"), UINT16_MAX));
      b.code = static_cast<ErrorCode>(code);
      TANDEM_ASSIGN_OR_RETURN(b.message,
                              ReadString(f["message"], f.Path("message"), kMaxStringBytes));
      return Body(std::move(b));
    }
    case MessageType::kServeRequest: {
      Fields<4> f(what, {"kind", "params", "tensors", "deadline_ms"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      ServeRequest b;
      TANDEM_ASSIGN_OR_RETURN(b.kind, ReadString(f["kind"], f.Path("kind"), kMaxNameBytes));
      TANDEM_ASSIGN_OR_RETURN(b.params, DecodeParams(f["params"], f.Path("params")));
      TANDEM_ASSIGN_OR_RETURN(b.tensors, DecodeTensors(f["tensors"], f.Path("tensors"), hook));
      TANDEM_ASSIGN_OR_RETURN(b.deadline_ms, ReadU32(f["deadline_ms"], f.Path("deadline_ms")));
      return Body(std::move(b));
    }
    case MessageType::kServeReply: {
      Fields<2> f(what, {"params", "tensors"});
      TANDEM_RETURN_IF_ERROR(f.Read(o));
      ServeReply b;
      TANDEM_ASSIGN_OR_RETURN(b.params, DecodeParams(f["params"], f.Path("params")));
      TANDEM_ASSIGN_OR_RETURN(b.tensors, DecodeTensors(f["tensors"], f.Path("tensors"), hook));
      return Body(std::move(b));
    }
    case MessageType::kChunk:
    case MessageType::kChunkOffer:  // never get here: the header check refuses them
    case MessageType::kChunkGrant: break;
  }
  return Status::Corruption("frame is a chunk, not a message: reassemble it first");
}

// Stops after reading the version and type of a frame.
struct PeekVisitor : msgpack::null_visitor {
  int depth = 0;
  int ints_read = 0;
  uint64_t ints[2] = {0, 0};
  bool bad = false;
  bool start_array(uint32_t) {
    if (++depth > 1) bad = true;
    return !bad;
  }
  bool visit_positive_integer(uint64_t v) {
    if (depth != 1) {
      bad = true;
      return false;
    }
    ints[ints_read++] = v;
    return ints_read < 2;
  }
  bool start_map(uint32_t) { return Fail(); }
  bool visit_nil() { return Fail(); }
  bool visit_boolean(bool) { return Fail(); }
  bool visit_negative_integer(int64_t) { return Fail(); }
  bool visit_float32(float) { return Fail(); }
  bool visit_float64(double) { return Fail(); }
  bool visit_str(const char*, uint32_t) { return Fail(); }
  bool visit_bin(const char*, uint32_t) { return Fail(); }
  bool visit_ext(const char*, uint32_t) { return Fail(); }
  bool end_array() { return Fail(); }  // an array that ends before holding version and type
  bool Fail() {
    bad = true;
    return false;
  }
};

}  // namespace

// ---- Tensor. ----

Tensor Tensor::Float32(std::string name, std::vector<uint64_t> shape,
                       std::span<const float> values) {
  Tensor t{std::move(name), DType::kFloat32, std::move(shape), ToLeBytes(values)};
  TANDEM_CHECK(t.NumElements() == values.size());
  return t;
}

Tensor Tensor::Uint32(std::string name, std::vector<uint64_t> shape,
                      std::span<const uint32_t> values) {
  Tensor t{std::move(name), DType::kUint32, std::move(shape), ToLeBytes(values)};
  TANDEM_CHECK(t.NumElements() == values.size());
  return t;
}

Tensor Tensor::Uint64(std::string name, std::vector<uint64_t> shape,
                      std::span<const uint64_t> values) {
  Tensor t{std::move(name), DType::kUint64, std::move(shape), ToLeBytes(values)};
  TANDEM_CHECK(t.NumElements() == values.size());
  return t;
}

Tensor Tensor::Bytes(std::string name, std::span<const uint8_t> bytes) {
  Tensor t{std::move(name), DType::kUint8, {bytes.size()},
           std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())};
  return t;
}

uint64_t Tensor::NumElements() const {
  uint64_t n = 1;
  for (uint64_t d : shape) {
    if (d != 0 && n > UINT64_MAX / d) return 0;
    n *= d;
  }
  return n;
}

std::vector<float> Tensor::ToFloat32() const {
  TANDEM_CHECK(dtype == DType::kFloat32 && data.size() % 4 == 0);
  std::vector<float> out(data.size() / 4);
  FromLeBytes(data, out.data(), out.size());
  return out;
}

std::vector<uint32_t> Tensor::ToUint32() const {
  TANDEM_CHECK(dtype == DType::kUint32 && data.size() % 4 == 0);
  std::vector<uint32_t> out(data.size() / 4);
  FromLeBytes(data, out.data(), out.size());
  return out;
}

std::vector<uint64_t> Tensor::ToUint64() const {
  TANDEM_CHECK(dtype == DType::kUint64 && data.size() % 8 == 0);
  std::vector<uint64_t> out(data.size() / 8);
  FromLeBytes(data, out.data(), out.size());
  return out;
}

std::span<const uint8_t> Tensor::AsBytes() const {
  TANDEM_CHECK(dtype == DType::kUint8);
  return {reinterpret_cast<const uint8_t*>(data.data()), data.size()};
}

void Tensor::CopyTo(std::span<float> out) const {
  TANDEM_CHECK(dtype == DType::kFloat32 && out.size() * 4 == data.size());
  FromLeBytes(data, out.data(), out.size());
}

// ---- Validation. ----

Status ValidateTensor(const Tensor& t) { return ValidateTensorImpl(t, true); }

namespace {

Status ValidateTensorImpl(const Tensor& t, bool scan_floats, bool streamed) {
  const std::string what = "tensor '" + t.name + "'";
  TANDEM_RETURN_IF_ERROR(CheckName(t.name, "tensor"));
  if (t.dtype != DType::kFloat32 && t.dtype != DType::kUint32 && t.dtype != DType::kUint64 &&
      t.dtype != DType::kUint8) {
    return Status::InvalidArgument(what + ": unknown dtype");
  }
  TANDEM_ASSIGN_OR_RETURN(const uint64_t n, CheckedElements(t.shape, what));
  // Decoding checked the streamed bytes against the shape; they went elsewhere.
  if (streamed) return Status::Ok();
  const uint64_t expected = n * DTypeBytes(t.dtype);
  if (t.data.size() != expected) {
    return Status::InvalidArgument(what + ": shape holds " + std::to_string(n) + " elements (" +
                                   std::to_string(expected) + " bytes) but data has " +
                                   std::to_string(t.data.size()) + " bytes");
  }
  if (t.dtype == DType::kFloat32 && scan_floats) {
    const char* p = t.data.data();
    const uint64_t i = FirstNonFinite(p, n);
    if (i < n) {
      const bool nan = (LoadLe32(p + 4 * i) & 0x007FFFFFu) != 0;
      return Status::InvalidArgument(what + ": element " + std::to_string(i) + " is " +
                                     (nan ? "NaN" : "infinite"));
    }
  }
  return Status::Ok();
}

Status ValidateMessageImpl(const Message& message, const Tensor* known_finite,
                           const Tensor* streamed = nullptr) {
  const Envelope& e = message.envelope;
  if (e.version != kProtocolVersion) {
    return Status::InvalidArgument("unsupported protocol version " + std::to_string(e.version));
  }
  if (NeedsTaskId(message.type()) && e.task_id == 0) {
    return Status::InvalidArgument(std::string(MessageTypeName(message.type())) +
                                   ": task_id must be non-zero");
  }
  return std::visit(BodyValidator{known_finite, streamed}, message.body);
}

}  // namespace

Status ValidateMessage(const Message& message) { return ValidateMessageImpl(message, nullptr); }

// ---- Codec. ----

StatusOr<std::string> EncodeMessage(const Message& message) {
  TANDEM_RETURN_IF_ERROR(ValidateMessage(message));
  const size_t tensor_bytes = TensorBytes(message.body);
  if (tensor_bytes > kMaxMessageBytes) {
    return Status::InvalidArgument("message of more than " + std::to_string(tensor_bytes) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(kMaxMessageBytes));
  }
  std::string out;
  out.reserve(tensor_bytes + 1024);
  detail::StringWriter writer{&out};
  detail::PackValidMessage(message, writer);
  if (out.size() > kMaxMessageBytes) {
    return Status::InvalidArgument("encoded message of " + std::to_string(out.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(kMaxMessageBytes));
  }
  return out;
}

namespace detail {

bool AnyNonFiniteFloat32(const char* p, uint64_t n) { return FirstNonFinite(p, n) < n; }

void PackValidMessage(const Message& message, StringWriter& writer) {
  Packer pk(writer);
  const Envelope& e = message.envelope;
  pk.pack_array(kEnvelopeFields);
  pk.pack_uint32(kProtocolVersion);
  pk.pack_uint8(static_cast<uint8_t>(message.type()));
  pk.pack_uint64(e.run_id);
  pk.pack_uint64(e.round);
  pk.pack_uint64(e.task_id);
  pk.pack_uint64(e.sequence);
  std::visit(BodyPacker{pk}, message.body);
}

}  // namespace detail

namespace {

// Decodes without the final ValidateMessage; `hook` as in DecodeTensor.
StatusOr<Message> DecodeUnvalidated(std::string_view bytes, BinHook* hook) {
  detail::Document doc;
  TANDEM_RETURN_IF_ERROR(detail::ParseDocument(bytes, &doc));
  const msgpack::object& root = doc.root();
  MessageType type;
  TANDEM_RETURN_IF_ERROR(detail::ReadHeader(root, &type));
  if (type == MessageType::kChunk) {
    return Status::Corruption("frame is a chunk, not a message: reassemble it first");
  }
  if (root.via.array.size != kEnvelopeFields) {
    return Status::Corruption("envelope has " + std::to_string(root.via.array.size) +
                              " fields, expected " + std::to_string(kEnvelopeFields));
  }
  const msgpack::object* f = root.via.array.ptr;
  Message m;
  TANDEM_ASSIGN_OR_RETURN(m.envelope.run_id, ReadUint(f[2], "envelope.run_id"));
  TANDEM_ASSIGN_OR_RETURN(m.envelope.round, ReadUint(f[3], "envelope.round"));
  TANDEM_ASSIGN_OR_RETURN(m.envelope.task_id, ReadUint(f[4], "envelope.task_id"));
  TANDEM_ASSIGN_OR_RETURN(m.envelope.sequence, ReadUint(f[5], "envelope.sequence"));
  StatusOr<Body> body = DecodeBody(type, f[6], hook);
  if (!body.ok()) return Status::Corruption(body.status().message());
  m.body = std::move(body).value();
  return m;
}

std::vector<Tensor>* TensorsOf(Body& body) {
  if (auto* a = std::get_if<TaskAssign>(&body)) return &a->tensors;
  if (auto* r = std::get_if<TaskResult>(&body)) return &r->tensors;
  if (auto* q = std::get_if<ServeRequest>(&body)) return &q->tensors;
  if (auto* a = std::get_if<ServeReply>(&body)) return &a->tensors;
  return nullptr;
}

}  // namespace

StatusOr<Message> detail::DecodeWithDetachedBin(std::string_view skeleton, size_t placeholder,
                                                std::string&& bin, bool bin_finite,
                                                uint64_t streamed_bytes) {
  TANDEM_CHECK(placeholder + 2 <= skeleton.size());
  TANDEM_CHECK(streamed_bytes == 0 || bin.empty());
  BinHook hook;
  hook.placeholder = skeleton.data() + placeholder;
  hook.detached = &bin;
  hook.streamed_bytes = streamed_bytes;
  TANDEM_ASSIGN_OR_RETURN(Message m, DecodeUnvalidated(skeleton, &hook));
  if (!hook.claimed) return Status::Corruption("the message's large bin is not a tensor's data");
  const Tensor* known_finite = nullptr;
  const Tensor* streamed = nullptr;
  if (bin_finite || streamed_bytes > 0) {
    std::vector<Tensor>* tensors = TensorsOf(m.body);
    TANDEM_CHECK(tensors != nullptr);
    for (const Tensor& t : *tensors) {
      if (t.name == hook.tensor_name) (streamed_bytes > 0 ? streamed : known_finite) = &t;
    }
  }
  if (streamed_bytes > 0 && !std::holds_alternative<TaskResult>(m.body)) {
    return Status::Corruption("only a TaskResult's contribution can be streamed");
  }
  Status valid = ValidateMessageImpl(m, known_finite, streamed);
  if (!valid.ok()) return Status::Corruption(valid.message());
  return m;
}

StatusOr<Message> DecodeMessage(std::string_view bytes) {
  TANDEM_ASSIGN_OR_RETURN(Message m, DecodeUnvalidated(bytes, nullptr));
  Status valid = ValidateMessage(m);
  if (!valid.ok()) return Status::Corruption(valid.message());
  return m;
}

StatusOr<Message> DecodeMessage(std::string&& bytes) {
  BinHook in_place;
  in_place.base = bytes.data();
  in_place.min_size = bytes.size() / 2;
  TANDEM_ASSIGN_OR_RETURN(Message m, DecodeUnvalidated(bytes, &in_place));
  if (in_place.claimed) {
    // The frame's pages are already resident: sliding the tensor bytes to the front costs one
    // pass over warm memory, where a fresh copy would also fault in a new buffer page by page.
    std::vector<Tensor>* tensors = TensorsOf(m.body);
    TANDEM_CHECK(tensors != nullptr);
    auto it = std::find_if(tensors->begin(), tensors->end(),
                           [&](const Tensor& t) { return t.name == in_place.tensor_name; });
    TANDEM_CHECK(it != tensors->end());
    std::memmove(bytes.data(), bytes.data() + in_place.offset, in_place.size);
    bytes.resize(in_place.size);
    it->data = std::move(bytes);
  }
  Status valid = ValidateMessage(m);
  if (!valid.ok()) return Status::Corruption(valid.message());
  return m;
}

StatusOr<MessageType> PeekType(std::string_view bytes) {
  PeekVisitor visitor;
  size_t off = 0;
  try {
    msgpack::detail::parse_imp(bytes.data(), bytes.size(), off, visitor);
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("malformed frame: ") + e.what());
  }
  if (visitor.bad || visitor.ints_read < 2) {
    return Status::Corruption("not a tandem frame: no [version, type] header");
  }
  if (visitor.ints[0] != kProtocolVersion) {
    return Status::InvalidArgument("unsupported protocol version " +
                                   std::to_string(visitor.ints[0]) +
                                   " (this build speaks version " +
                                   std::to_string(kProtocolVersion) + ")");
  }
  if (visitor.ints[1] < kMinMessageType || visitor.ints[1] > kMaxFrameType) {  // 1..13
    return Status::Corruption("unknown message type " + std::to_string(visitor.ints[1]));
  }
  return static_cast<MessageType>(visitor.ints[1]);
}

}  // namespace tandem::wire

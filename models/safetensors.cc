#include "models/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

namespace tandem {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {{DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
                                 {DType::kBF16, "BF16", 2}, {DType::kI32, "I32", 4},
                                 {DType::kI64, "I64", 8},  {DType::kU8, "U8", 1}};

bool ParseDType(const std::string& name, DType* out) {
  for (const auto& d : kDTypes) {
    if (name == d.name) {
      *out = d.dtype;
      return true;
    }
  }
  return false;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

const char* DTypeName(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

size_t SafeTensor::elements() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

StatusOr<std::vector<float>> SafeTensor::ToFloat() const {
  const size_t n = elements();
  std::vector<float> out(n);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out.data(), bytes.data(), n * 4);
      break;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&out[i], &bits, 4);
      }
      break;
    default:
      return Status::InvalidArgument(std::string("cannot read a ") + DTypeName(dtype) +
                                     " tensor as float");
  }
  return out;
}

Status WriteFileAtomic(const std::string& path, const std::vector<uint8_t>& contents) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IoError("cannot create '" + tmp + "': " + std::strerror(errno));
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      return Status::IoError("cannot write '" + tmp + "': " + err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return Status::IoError("cannot flush '" + tmp + "': " + err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    return Status::IoError("cannot rename '" + tmp + "' to '" + path + "': " + err);
  }
  return Status::Ok();
}

Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second) {
      return Status::InvalidArgument("duplicate or reserved tensor name '" + t.name + "'");
    }
    size_t n = 1;
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    const size_t bytes = n * DTypeSize(t.dtype);
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');  // align the data to 8 bytes
  std::vector<uint8_t> image(8 + json.size() + offset);
  const uint64_t len = json.size();
  for (int i = 0; i < 8; ++i) image[i] = static_cast<uint8_t>(len >> (8 * i));
  std::memcpy(image.data() + 8, json.data(), json.size());
  uint8_t* data = image.data() + 8 + json.size();
  for (const auto& t : tensors) {
    const auto& range = header[t.name]["data_offsets"];
    const size_t begin = range[0].get<size_t>(), end = range[1].get<size_t>();
    if (end > begin) std::memcpy(data + begin, t.data, end - begin);
  }
  return WriteFileAtomic(path, image);
}

StatusOr<SafetensorsFile> ParseSafetensors(const std::vector<uint8_t>& image,
                                           const std::string& what) {
  auto corrupt = [&](const std::string& why) {
    return Status::Corruption(what + ": not a valid safetensors file: " + why);
  };
  if (image.size() < 8) return corrupt("shorter than its 8-byte header length");
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(image[i]) << (8 * i);
  if (len > kMaxSafetensorsHeader || len > image.size() - 8) {
    return corrupt("header length " + std::to_string(len) + " exceeds the file");
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(image.begin() + 8, image.begin() + 8 + len);
  } catch (const nlohmann::json::exception& e) {
    return corrupt(std::string("header is not JSON (") + e.what() + ")");
  }
  if (!header.is_object()) return corrupt("header is not a JSON object");
  const size_t data_size = image.size() - 8 - len;
  const uint8_t* data = image.data() + 8 + len;

  SafetensorsFile file;
  struct Range {
    size_t begin, end;
    SafeTensor* tensor;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return corrupt("__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) return corrupt("metadata '" + m.key() + "' is not a string");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const auto& e = it.value();
    const std::string& name = it.key();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets") || !e["dtype"].is_string() || !e["shape"].is_array() ||
        !e["data_offsets"].is_array() || e["data_offsets"].size() != 2) {
      return corrupt("entry '" + name + "' lacks dtype, shape or data_offsets");
    }
    SafeTensor t;
    if (!ParseDType(e["dtype"].get<std::string>(), &t.dtype)) {
      return corrupt("tensor '" + name + "' has unsupported dtype " + e["dtype"].dump());
    }
    size_t elements = 1;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) return corrupt("tensor '" + name + "' has a bad shape");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (dim > 0 && elements > (1ull << 40) / dim)) {
        return corrupt("tensor '" + name + "' shape is too large");
      }
      elements *= dim;
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& off = e["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return corrupt("tensor '" + name + "' has bad data_offsets");
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return corrupt("tensor '" + name + "' data range [" + std::to_string(begin) + ", " +
                     std::to_string(end) + ") lies outside the " + std::to_string(data_size) +
                     "-byte data section");
    }
    if (end - begin != elements * DTypeSize(t.dtype)) {
      return corrupt("tensor '" + name + "' holds " + std::to_string(end - begin) +
                     " bytes but its shape and dtype need " +
                     std::to_string(elements * DTypeSize(t.dtype)));
    }
    SafeTensor& stored = file.tensors.emplace(name, std::move(t)).first->second;
    ranges.push_back({static_cast<size_t>(begin), static_cast<size_t>(end), &stored});
  }
  // Check the ranges before copying anything, so a header whose entries all point at the same
  // bytes cannot make the reader allocate many times the file's size.
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& x, const Range& y) { return x.begin < y.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) return corrupt("tensor data ranges overlap");
  }
  for (const Range& r : ranges) r.tensor->bytes.assign(data + r.begin, data + r.end);
  return file;
}

StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open '" + path + "'");
  std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return Status::IoError("error reading '" + path + "'");
  return ParseSafetensors(image, path);
}

StatusOr<std::string> RequireMetadata(const SafetensorsFile& file, const std::string& key,
                                      const std::string& path) {
  auto it = file.metadata.find(key);
  if (it == file.metadata.end()) return Status::Corruption(path + ": metadata lacks " + key);
  return it->second;
}

}  // namespace tandem

// Reading and writing the safetensors format (Hugging Face): an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then the raw data.
// Every field of a file read from disk is validated before use; writes are atomic (temporary file,
// fsync, rename), so a crash never leaves a half-written checkpoint in place of a good one.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"

namespace tandem {

enum class DType { kF32, kF16, kBF16, kI32, kI64, kU8 };
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

struct SafeTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // little-endian

  size_t elements() const;
  // The values as float32 (F32, F16 and BF16 are converted); an error for integer dtypes.
  StatusOr<std::vector<float>> ToFloat() const;
};

struct SafetensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// A tensor to write; `data` is not owned and must hold elements * DTypeSize(dtype) bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Header larger than this is rejected as corrupt (real files use a few hundred KiB at most).
constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;

Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata);
StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);
// Parses an in-memory image of a file (`what` names it in errors).
StatusOr<SafetensorsFile> ParseSafetensors(const std::vector<uint8_t>& image,
                                           const std::string& what);

// The metadata value under `key`; Corruption naming `path` and the key when it is absent.
StatusOr<std::string> RequireMetadata(const SafetensorsFile& file, const std::string& key,
                                      const std::string& path);

// Writes `contents` to `path` atomically: a temporary file beside it, fsync, rename.
Status WriteFileAtomic(const std::string& path, const std::vector<uint8_t>& contents);

}  // namespace tandem

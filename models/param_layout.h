// Named views into one flat float buffer. Parameters, gradients and optimizer moments of a model
// each live in one contiguous buffer laid out by the same ParamLayout, so a model delta, a
// gradient or a contribution is already a flat vector (DESIGN.md "contributions").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace tandem {

struct TensorSpec {
  std::string name;            // Hugging Face GPT-2 name, e.g. "h.0.attn.c_attn.weight"
  std::vector<int64_t> shape;  // row-major
  size_t offset = 0;           // in floats, into the flat buffer
  size_t size = 0;             // product of shape
  bool decay = false;          // AdamW weight decay applies (matrices and embeddings)
};

class ParamLayout {
 public:
  // Appends a tensor; returns its offset.
  size_t Add(const std::string& name, std::vector<int64_t> shape, bool decay);

  size_t total() const { return total_; }
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorSpec* Find(const std::string& name) const;

 private:
  std::vector<TensorSpec> tensors_;
  std::unordered_map<std::string, size_t> index_;
  size_t total_ = 0;
};

}  // namespace tandem

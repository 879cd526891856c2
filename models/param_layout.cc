#include "models/param_layout.h"

#include "core/status.h"

namespace tandem {

size_t ParamLayout::Add(const std::string& name, std::vector<int64_t> shape, bool decay) {
  TANDEM_CHECK(index_.count(name) == 0);
  TensorSpec spec;
  spec.name = name;
  spec.size = 1;
  for (int64_t d : shape) {
    TANDEM_CHECK(d > 0);
    spec.size *= static_cast<size_t>(d);
  }
  spec.shape = std::move(shape);
  spec.offset = total_;
  spec.decay = decay;
  total_ += spec.size;
  index_[name] = tensors_.size();
  tensors_.push_back(std::move(spec));
  return tensors_.back().offset;
}

const TensorSpec* ParamLayout::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace tandem

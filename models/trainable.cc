#include "models/trainable.h"

#include <algorithm>

namespace tandem {

Trainable Trainable::All(const ParamLayout& layout) {
  Trainable t;
  t.tensors_.assign(layout.tensors().size(), 1);
  t.adapters_ = true;
  t.Rebuild(layout);
  return t;
}

Trainable Trainable::AdaptersOnly() {
  Trainable t;
  t.adapters_ = true;
  return t;
}

Trainable Trainable::Blocks(const ModelConfig& config, const ParamLayout& layout, int bottom,
                            int top) {
  TANDEM_CHECK(bottom >= 0 && top >= 0 && bottom <= config.n_layer && top <= config.n_layer);
  Trainable t;
  t.tensors_.assign(layout.tensors().size(), 0);
  for (size_t i = 0; i < layout.tensors().size(); ++i) {
    const std::string& name = layout.tensors()[i].name;
    if (name.rfind("h.", 0) != 0) continue;
    const int l = std::stoi(name.substr(2));
    if (l < bottom || l >= config.n_layer - top) t.tensors_[i] = 1;
  }
  t.Rebuild(layout);
  return t;
}

StatusOr<Trainable> Trainable::Tensors(const ParamLayout& layout,
                                       const std::vector<std::string>& names) {
  Trainable t;
  t.tensors_.assign(layout.tensors().size(), 0);
  for (const auto& name : names) {
    const TensorSpec* spec = layout.Find(name);
    if (spec == nullptr) {
      return Status::InvalidArgument("trainable tensor '" + name + "' is not in the model");
    }
    t.tensors_[spec - layout.tensors().data()] = 1;
  }
  t.Rebuild(layout);
  return t;
}

Trainable& Trainable::Add(const Trainable& other) {
  adapters_ = adapters_ || other.adapters_;
  if (other.tensors_.empty()) return *this;
  if (tensors_.empty()) {
    tensors_ = other.tensors_;
    ranges_ = other.ranges_;
    return *this;
  }
  TANDEM_CHECK(tensors_.size() == other.tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) tensors_[i] |= other.tensors_[i];
  // Merge the two range lists (both ascending and disjoint).
  std::vector<ParamRange> all = ranges_;
  all.insert(all.end(), other.ranges_.begin(), other.ranges_.end());
  std::sort(all.begin(), all.end(),
            [](const ParamRange& a, const ParamRange& b) { return a.begin < b.begin; });
  ranges_.clear();
  for (const ParamRange& r : all) {
    if (!ranges_.empty() && r.begin <= ranges_.back().end) {
      ranges_.back().end = std::max(ranges_.back().end, r.end);
    } else {
      ranges_.push_back(r);
    }
  }
  return *this;
}

void Trainable::Rebuild(const ParamLayout& layout) {
  ranges_.clear();
  for (size_t i = 0; i < layout.tensors().size(); ++i) {
    if (!tensors_[i]) continue;
    const TensorSpec& t = layout.tensors()[i];
    if (!ranges_.empty() && ranges_.back().end == t.offset) {
      ranges_.back().end += t.size;
    } else {
      ranges_.push_back({t.offset, t.offset + t.size});
    }
  }
  // A set with no base tensor carries no layout, so it combines with any.
  if (ranges_.empty()) tensors_.clear();
}

}  // namespace tandem

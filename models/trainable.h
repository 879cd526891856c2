// What trains (DESIGN.md "Models": what trains is a set of ranges of the layout): a set of whole
// tensors of a model's base layout, plus whether its LoRA adapters train. A workspace's Backward
// accumulates gradients only into trainable tensors (a frozen linear's weight-gradient GEMM is
// skipped, and the backward pass stops below the lowest trainable block), and AdamW::Step over
// ranges() leaves frozen parameters, and their optimizer moments, untouched.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/status.h"
#include "models/model_config.h"
#include "models/param_layout.h"

namespace tandem {

// [begin, end) in floats of a flat buffer laid out by a ParamLayout.
struct ParamRange {
  size_t begin = 0;
  size_t end = 0;
  bool operator==(const ParamRange&) const = default;
};

class Trainable {
 public:
  // Nothing trains.
  Trainable() = default;

  // Every base tensor of `layout`, and the adapters.
  static Trainable All(const ParamLayout& layout);
  // The LoRA adapters alone; the base is frozen.
  static Trainable AdaptersOnly();
  // The blocks [0, bottom) and [n_layer - top, n_layer) of a GPT laid out by `layout` (embeddings
  // and the final LayerNorm excluded; add them by name). Requires bottom, top in [0, n_layer].
  static Trainable Blocks(const ModelConfig& config, const ParamLayout& layout, int bottom,
                          int top);
  // The named tensors of `layout`; InvalidArgument names an unknown tensor.
  static StatusOr<Trainable> Tensors(const ParamLayout& layout,
                                     const std::vector<std::string>& names);

  // Union with `other` (both for the same layout, or one without base tensors).
  Trainable& Add(const Trainable& other);
  Trainable& set_adapters(bool train) {
    adapters_ = train;
    return *this;
  }

  // Whether the LoRA adapters train.
  bool adapters() const { return adapters_; }
  // Whether tensor `index` of the layout (its position in layout.tensors()) trains.
  bool tensor(size_t index) const { return index < tensors_.size() && tensors_[index] != 0; }
  bool any_base() const { return !ranges_.empty(); }
  // The trainable base parameters as ascending, disjoint, merged ranges of the flat buffer.
  const std::vector<ParamRange>& ranges() const { return ranges_; }
  // Number of tensors of the layout this was built for (0 when no base tensor trains).
  size_t layout_tensors() const { return tensors_.size(); }

  bool operator==(const Trainable&) const = default;

 private:
  void Rebuild(const ParamLayout& layout);

  std::vector<char> tensors_;  // per tensor of the layout: 1 = trains
  std::vector<ParamRange> ranges_;
  bool adapters_ = false;
};

}  // namespace tandem

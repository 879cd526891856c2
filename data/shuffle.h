// Seeded Fisher-Yates shuffle shared by the splitters and partitioners: the same permutation on
// every platform for the same Rng state (std::shuffle's algorithm is implementation-defined).
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace tandem::detail {

template <typename T>
void Shuffle(std::vector<T>* v, Rng* rng) {
  for (size_t i = v->size(); i > 1; --i) std::swap((*v)[i - 1], (*v)[rng->Below(i)]);
}

}  // namespace tandem::detail

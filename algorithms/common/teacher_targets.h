// The cloud LLM's top-k targets on the round's public windows, as the tensors a downward
// distillation task carries (distill-down's training task, fedmkt's mutual task).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "coordinator/algorithm.h"
#include "data/batcher.h"
#include "models/gpt.h"

namespace tandem {

// The teacher's top-k targets at temperature T on windows of `context` tokens starting at
// `starts` in `stream` ((windows · context) rows in window order), added to `spec` as the
// kd.topk_words / kd.topk_values tensors clients decode. Returns the targets' bytes on the wire.
size_t AddTeacherTargets(Gpt& teacher, const TokenDataset& stream,
                         const std::vector<uint32_t>& starts, int context, int k,
                         double temperature, TaskSpec* spec);

}  // namespace tandem

// The teacher's top-k targets; see algorithms/common/teacher_targets.h.
#include "algorithms/common/teacher_targets.h"

#include <algorithm>

#include "algorithms/common/task_parts.h"
#include "distill/topk.h"

namespace tandem {
namespace {

constexpr int kTeacherBatch = 8;  // windows per teacher forward

}  // namespace

size_t AddTeacherTargets(Gpt& teacher, const TokenDataset& stream,
                         const std::vector<uint32_t>& starts, int context, int k,
                         double temperature, TaskSpec* spec) {
  const int T = context, V = teacher.config().vocab;
  const auto& tokens_in = stream.tokens();
  TopKTargets all;
  all.k = k;
  all.vocab = V;
  all.temperature = static_cast<float>(temperature);
  std::vector<int32_t> tokens(static_cast<size_t>(kTeacherBatch) * T);
  for (size_t w0 = 0; w0 < starts.size(); w0 += kTeacherBatch) {
    const int B = static_cast<int>(std::min<size_t>(kTeacherBatch, starts.size() - w0));
    for (int b = 0; b < B; ++b) {
      std::copy(tokens_in.begin() + starts[w0 + b], tokens_in.begin() + starts[w0 + b] + T,
                tokens.begin() + static_cast<size_t>(b) * T);
    }
    teacher.Forward(tokens.data(), nullptr, B, T);
    const TopKTargets part =
        TopKFromLogits(teacher.logits(), B * T, V, k, static_cast<float>(temperature));
    all.rows += part.rows;
    all.indices.insert(all.indices.end(), part.indices.begin(), part.indices.end());
    all.probs.insert(all.probs.end(), part.probs.begin(), part.probs.end());
    all.tail.insert(all.tail.end(), part.tail.begin(), part.tail.end());
  }
  EncodeTopK(all, &spec->tensors);
  return TopKWireBytes(all.rows, all.k, all.vocab);
}

}  // namespace tandem

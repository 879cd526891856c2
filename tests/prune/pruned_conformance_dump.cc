// Writes a parent (slm-tiny), a child pruned from it by Taylor scores to a non-uniform shape (a
// block dropped, fewer channels, per-block head counts and MLP widths that differ), and the
// child's logits, loss and every parameter gradient on a fixed batch, for pruned_conformance.py
// to check the cut against the parent and the child against an independent PyTorch GPT-2.
// Usage: pruned_conformance_dump OUT_DIR
#include <cstdio>
#include <string>
#include <vector>

#include "core/rng.h"
#include "models/gpt.h"
#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"
#include "prune/extract.h"
#include "prune/importance.h"
#include "prune/plan.h"

int main(int argc, char** argv) {
  using namespace tandem;
  if (argc != 2) {
    std::fprintf(stderr, "usage: pruned_conformance_dump OUT_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  };
  const ModelConfig pc = *ModelPreset("slm-tiny");
  auto parent = std::make_shared<GptWeights>(pc);
  parent->InitWeights(123);
  Rng rng(99);
  for (const auto& t : parent->layout().tensors()) {
    if (t.name.find("ln_") != std::string::npos || t.name.find(".bias") != std::string::npos) {
      for (size_t i = 0; i < t.size; ++i) parent->params()[t.offset + i] += 0.1f * rng.Normal();
    }
  }
  CalibrationBatches cal;
  cal.batch = 2;
  cal.context = 32;
  for (int i = 0; i < 2 * 2 * 32; ++i) {
    cal.tokens.push_back(static_cast<int32_t>(rng.Below(pc.vocab)));
    cal.targets.push_back(static_cast<int32_t>(rng.Below(pc.vocab)));
  }
  StatusOr<ImportanceScores> scores = ComputeImportance(parent, ImportanceMethod::kTaylor, cal);
  if (!scores.ok()) return fail(scores.status());
  // Block 1's heads made clearly unequal, so ranking across blocks keeps more of them there and
  // the kept blocks differ in head count as well as in MLP width.
  scores->heads[1] = {10.0, 9.0, 8.0, 1e-3};
  PruneTarget target;
  target.n_layer = 3;
  target.d_model = 96;
  target.heads = 2;
  target.d_mlp = 200;
  target.global = true;
  StatusOr<AlignmentMap> map = PlanPrune(pc, *scores, target);
  if (!map.ok()) return fail(map.status());
  StatusOr<std::unique_ptr<GptWeights>> cut = Extract(*parent, *map);
  if (!cut.ok()) return fail(cut.status());
  Gpt child(std::shared_ptr<GptWeights>(std::move(*cut)));
  const ModelConfig& cc = child.config();
  if (cc.layer_n_head.empty() || cc.layer_d_mlp.empty()) {
    std::fprintf(stderr, "the pruned child is uniform (%s); the case needs a non-uniform one\n",
                 cc.ToString().c_str());
    return 1;
  }

  const int B = 2, T = 48;
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.Below(cc.vocab));
  for (auto& t : targets) t = static_cast<int32_t>(rng.Below(cc.vocab));
  targets[3] = -1;
  child.ZeroGrad();
  float loss = child.Forward(tokens.data(), targets.data(), B, T);
  child.Backward();

  if (Status s = SaveGpt(dir + "/parent.safetensors", *parent); !s.ok()) return fail(s);
  if (Status s = SavePrunedGpt(dir + "/model.safetensors", child.weights(), *map); !s.ok()) {
    return fail(s);
  }
  std::vector<TensorToWrite> out = {
      {"tokens", DType::kI32, {B, T}, tokens.data()},
      {"targets", DType::kI32, {B, T}, targets.data()},
      {"logits", DType::kF32, {B, T, cc.vocab}, child.logits()},
      {"loss", DType::kF32, {1}, &loss},
  };
  std::vector<std::string> names;
  names.reserve(child.layout().tensors().size());
  for (const auto& t : child.layout().tensors()) names.push_back("grad." + t.name);
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& t = child.layout().tensors()[i];
    out.push_back({names[i], DType::kF32, t.shape, child.grads().data() + t.offset});
  }
  if (Status s = WriteSafetensors(dir + "/expected.safetensors", out, {}); !s.ok()) return fail(s);
  std::printf("child %s, loss %.6f, written to %s\n", cc.ToString().c_str(), loss, dir.c_str());
  return 0;
}

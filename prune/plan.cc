#include "prune/plan.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace tandem {
namespace {

Status CheckCount(int want, int have, const std::string& what) {
  if (want < 0 || want > have) {
    return Status::InvalidArgument("prune target: " + what + " = " + std::to_string(want) +
                                   " is outside [1, " + std::to_string(have) +
                                   "] (what the parent has)");
  }
  return Status::Ok();
}

// Per kept block, how many heads (or neurons) the target keeps out of `have`.
int Keep(const PruneTarget& t, int fixed, int have) {
  if (t.width_ratio > 0) return WindowWidth(t.width_ratio, have);
  return fixed > 0 ? fixed : have;
}

// Picks counts[b] indices per block in total, across blocks by score normalised by the block's
// mean, at least one per block; returns each block's picks ascending.
std::vector<std::vector<int>> GlobalTop(const std::vector<const std::vector<double>*>& scores,
                                        const std::vector<int>& counts) {
  struct Item {
    double score;
    int block, index;
  };
  std::vector<std::vector<int>> picks(scores.size());
  std::vector<Item> rest;
  int total = 0;
  for (size_t b = 0; b < scores.size(); ++b) {
    const std::vector<double>& s = *scores[b];
    total += counts[b];
    double mean = 0;
    for (double x : s) mean += x;
    mean /= s.size();
    const double scale = mean > 0 ? 1.0 / mean : 1.0;
    const int best = TopIndices(s, 1)[0];
    picks[b].push_back(best);
    for (int i = 0; i < static_cast<int>(s.size()); ++i) {
      if (i != best) rest.push_back({s[i] * scale, static_cast<int>(b), i});
    }
  }
  std::stable_sort(rest.begin(), rest.end(),
                   [](const Item& a, const Item& b) { return a.score > b.score; });
  const int more = total - static_cast<int>(scores.size());
  for (int i = 0; i < more && i < static_cast<int>(rest.size()); ++i) {
    picks[rest[i].block].push_back(rest[i].index);
  }
  for (auto& p : picks) std::sort(p.begin(), p.end());
  return picks;
}

}  // namespace

std::vector<int> TopIndices(const std::vector<double>& scores, int k) {
  const int n = static_cast<int>(scores.size());
  TANDEM_CHECK(k >= 1 && k <= n);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return scores[a] > scores[b]; });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

StatusOr<PruneTarget> ParsePruneShape(const std::string& shape, const ModelConfig& parent) {
  PruneTarget t;
  if (shape.rfind("layers=", 0) == 0) {
    const std::string n = shape.substr(7);
    char* end = nullptr;
    const long v = std::strtol(n.c_str(), &end, 10);
    if (n.empty() || *end != '\0' || v < 1 || v > parent.n_layer) {
      return Status::InvalidArgument("--to " + shape + ": N must be an integer in [1, " +
                                     std::to_string(parent.n_layer) +
                                     "] (the parent's blocks)");
    }
    t.n_layer = static_cast<int>(v);
    return t;
  }
  if (shape.rfind("inner=", 0) == 0) {
    const std::string n = shape.substr(6);
    char* end = nullptr;
    const double r = std::strtod(n.c_str(), &end);
    if (n.empty() || *end != '\0' || !(r > 0.0 && r <= 1.0)) {
      return Status::InvalidArgument("--to " + shape +
                                     ": the inner width ratio must be a number in (0, 1]");
    }
    int min_heads = parent.heads(0), min_mlp = parent.mlp_width(0);
    for (int l = 1; l < parent.n_layer; ++l) {
      min_heads = std::min(min_heads, parent.heads(l));
      min_mlp = std::min(min_mlp, parent.mlp_width(l));
    }
    t.heads = std::max(1, static_cast<int>(std::ceil(r * min_heads - 1e-9)));
    t.d_mlp = std::max(1, static_cast<int>(std::ceil(r * min_mlp - 1e-9)));
    return t;
  }
  if (!shape.empty() && (std::isdigit(static_cast<unsigned char>(shape[0])) || shape[0] == '.')) {
    char* end = nullptr;
    const double r = std::strtod(shape.c_str(), &end);
    if (*end != '\0' || !(r > 0.0 && r <= 1.0)) {
      return Status::InvalidArgument("--to " + shape +
                                     ": a width ratio must be a number in (0, 1]");
    }
    t.width_ratio = r;
    return t;
  }
  StatusOr<ModelConfig> preset = ModelPreset(shape);
  if (!preset.ok()) {
    return Status::InvalidArgument("--to " + shape +
                                   ": not a width ratio in (0, 1], layers=N, or a preset (" +
                                   preset.status().message() + ")");
  }
  t.d_model = preset->d_model;
  t.n_layer = preset->n_layer;
  t.d_mlp = preset->mlp_width();
  t.heads = std::max(1, preset->attn_width(0) / parent.head_dim());
  int min_heads = parent.heads(0), min_mlp = parent.mlp_width(0);
  for (int l = 1; l < parent.n_layer; ++l) {
    min_heads = std::min(min_heads, parent.heads(l));
    min_mlp = std::min(min_mlp, parent.mlp_width(l));
  }
  if (preset->vocab != parent.vocab || t.d_model > parent.d_model ||
      t.n_layer > parent.n_layer || t.heads > min_heads || t.d_mlp > min_mlp) {
    return Status::InvalidArgument(
        "--to " + shape + ": the preset (" + preset->ToString() +
        ") does not fit inside the parent (" + parent.ToString() +
        "): a child keeps the parent's vocabulary and can only be narrower and shallower");
  }
  return t;
}

StatusOr<AlignmentMap> PlanPrune(const ModelConfig& parent, const ImportanceScores& scores,
                                 const PruneTarget& target) {
  TANDEM_RETURN_IF_ERROR(parent.Validate());
  if (!scores.Fits(parent)) {
    return Status::InvalidArgument("importance scores do not have the parent's shape (" +
                                   parent.ToString() + ")");
  }
  if (target.width_ratio < 0 || target.width_ratio > 1) {
    return Status::InvalidArgument("prune target: width_ratio must be in (0, 1] or 0 (off)");
  }
  TANDEM_RETURN_IF_ERROR(CheckCount(target.n_layer, parent.n_layer, "n_layer"));
  TANDEM_RETURN_IF_ERROR(CheckCount(target.d_model, parent.d_model, "d_model"));
  AlignmentMap map;
  map.parent = parent;
  map.layers = TopIndices(scores.blocks, target.n_layer > 0 ? target.n_layer : parent.n_layer);
  const int channels = target.width_ratio > 0 ? WindowWidth(target.width_ratio, parent.d_model)
                                              : (target.d_model > 0 ? target.d_model
                                                                    : parent.d_model);
  map.channels = TopIndices(scores.channels, channels);
  std::vector<int> head_counts, neuron_counts;
  for (int p : map.layers) {
    const int h = Keep(target, target.heads, parent.heads(p));
    const int m = Keep(target, target.d_mlp, parent.mlp_width(p));
    TANDEM_RETURN_IF_ERROR(
        CheckCount(h, parent.heads(p), "heads of parent block " + std::to_string(p)));
    TANDEM_RETURN_IF_ERROR(
        CheckCount(m, parent.mlp_width(p), "d_mlp of parent block " + std::to_string(p)));
    head_counts.push_back(h);
    neuron_counts.push_back(m);
  }
  if (target.global) {
    std::vector<const std::vector<double>*> hs, ns;
    for (int p : map.layers) {
      hs.push_back(&scores.heads[p]);
      ns.push_back(&scores.neurons[p]);
    }
    map.heads = GlobalTop(hs, head_counts);
    map.neurons = GlobalTop(ns, neuron_counts);
  } else {
    for (size_t l = 0; l < map.layers.size(); ++l) {
      map.heads.push_back(TopIndices(scores.heads[map.layers[l]], head_counts[l]));
      map.neurons.push_back(TopIndices(scores.neurons[map.layers[l]], neuron_counts[l]));
    }
  }
  TANDEM_RETURN_IF_ERROR(map.Validate());
  return map;
}

// --- Width-ratio sub-models ---------------------------------------------------------------

StatusOr<WindowKind> ParseWindowKind(const std::string& name) {
  if (name == "static") return WindowKind::kStatic;
  if (name == "rolling") return WindowKind::kRolling;
  if (name == "importance") return WindowKind::kImportance;
  return Status::InvalidArgument("unknown window kind '" + name +
                                 "' (known: static, rolling, importance)");
}

int WindowWidth(double ratio, int n) {
  // The small slack keeps ratios such as 0.3 · 10 from rounding up to 4.
  const int k = static_cast<int>(std::ceil(ratio * n - 1e-9));
  return std::clamp(k, 1, n);
}

std::vector<int> WindowIndices(const SubmodelSpec& spec, int n,
                               const std::vector<double>* scores) {
  const int k = WindowWidth(spec.ratio, n);
  std::vector<int> out;
  switch (spec.kind) {
    case WindowKind::kStatic:
      for (int i = 0; i < k; ++i) out.push_back(i);
      break;
    case WindowKind::kRolling: {
      const int64_t stride = spec.stride > 0 ? spec.stride : k;
      const int64_t offset = (spec.round % n) * (stride % n) % n;
      for (int i = 0; i < k; ++i) out.push_back(static_cast<int>((offset + i) % n));
      std::sort(out.begin(), out.end());
      break;
    }
    case WindowKind::kImportance:
      TANDEM_CHECK(scores != nullptr && static_cast<int>(scores->size()) == n);
      out = TopIndices(*scores, k);
      break;
  }
  return out;
}

StatusOr<AlignmentMap> SubmodelMap(const ModelConfig& parent, const SubmodelSpec& spec) {
  TANDEM_RETURN_IF_ERROR(parent.Validate());
  if (!(spec.ratio > 0.0 && spec.ratio <= 1.0)) {
    return Status::InvalidArgument("sub-model ratio must be in (0, 1], got " +
                                   std::to_string(spec.ratio));
  }
  if (spec.round < 0 || spec.stride < 0) {
    return Status::InvalidArgument("sub-model round and stride must be >= 0");
  }
  const bool ranked = spec.kind == WindowKind::kImportance;
  if (ranked && (spec.scores == nullptr || !spec.scores->Fits(parent))) {
    return Status::InvalidArgument(
        "importance windows need importance scores of the parent's shape (" + parent.ToString() +
        ")");
  }
  AlignmentMap map = AlignmentMap::Identity(parent);
  if (spec.shrink_channels) {
    map.channels = WindowIndices(spec, parent.d_model, ranked ? &spec.scores->channels : nullptr);
  }
  for (int l = 0; l < parent.n_layer; ++l) {
    map.heads[l] = WindowIndices(spec, parent.heads(l), ranked ? &spec.scores->heads[l] : nullptr);
    map.neurons[l] =
        WindowIndices(spec, parent.mlp_width(l), ranked ? &spec.scores->neurons[l] : nullptr);
  }
  TANDEM_RETURN_IF_ERROR(map.Validate());
  return map;
}

// --- Emulators ----------------------------------------------------------------------------

StatusOr<AlignmentMap> EmulatorMap(const ModelConfig& parent, int bottom, int top, double keep) {
  TANDEM_RETURN_IF_ERROR(parent.Validate());
  const int middle = parent.n_layer - bottom - top;
  if (bottom < 0 || top < 0 || bottom + top == 0 || middle < 1) {
    return Status::InvalidArgument(
        "emulator: the adapters (" + std::to_string(bottom) + " bottom and " +
        std::to_string(top) + " top blocks) must be at least one block and leave at least one of "
        "the model's " + std::to_string(parent.n_layer) + " blocks for the emulator");
  }
  if (!(keep > 0.0 && keep <= 1.0)) {
    return Status::InvalidArgument("emulator: the share of middle blocks kept, " +
                                   std::to_string(keep) + ", is not in (0, 1]");
  }
  const int kept = std::clamp(static_cast<int>(std::lround(keep * middle)), 1, middle);
  std::vector<int> layers;
  for (int l = 0; l < bottom; ++l) layers.push_back(l);
  for (int i = 0; i < kept; ++i) {
    layers.push_back(bottom + static_cast<int>(std::floor((i + 0.5) * middle / kept)));
  }
  for (int l = parent.n_layer - top; l < parent.n_layer; ++l) layers.push_back(l);
  AlignmentMap map = AlignmentMap::KeepLayers(parent, std::move(layers));
  TANDEM_RETURN_IF_ERROR(map.Validate());
  return map;
}

}  // namespace tandem

#include "prune/alignment_map.h"

#include <algorithm>
#include <numeric>

#include <nlohmann/json.hpp>

#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"

namespace tandem {
namespace {

using json = nlohmann::json;

std::vector<int> Range(int n) {
  std::vector<int> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// Non-empty, ascending, unique, in [0, n).
Status CheckIndexSet(const std::vector<int>& set, int n, const std::string& what) {
  if (set.empty()) return Status::InvalidArgument("alignment map: " + what + " is empty");
  for (size_t i = 0; i < set.size(); ++i) {
    if (set[i] < 0 || set[i] >= n) {
      return Status::InvalidArgument("alignment map: " + what + " holds index " +
                                     std::to_string(set[i]) + ", outside [0, " +
                                     std::to_string(n) + ")");
    }
    if (i > 0 && set[i] <= set[i - 1]) {
      return Status::InvalidArgument("alignment map: " + what +
                                     " is not ascending and unique (" +
                                     std::to_string(set[i - 1]) + " then " +
                                     std::to_string(set[i]) + ")");
    }
  }
  return Status::Ok();
}

std::string Block(int layer, const char* rest) { return "h." + std::to_string(layer) + "." + rest; }

// Index sets as half-open runs [[b,e),...]: a window or a prefix is one or two runs.
json ToRuns(const std::vector<int>& set) {
  json runs = json::array();
  for (size_t i = 0; i < set.size();) {
    size_t j = i + 1;
    while (j < set.size() && set[j] == set[j - 1] + 1) ++j;
    runs.push_back(json::array({set[i], set[i] + static_cast<int>(j - i)}));
    i = j;
  }
  return runs;
}

// Runs back to a set; ordering and range are checked by Validate afterwards, but a run must be
// well formed here (and bounded, so a forged run cannot make us allocate without limit).
StatusOr<std::vector<int>> FromRuns(const json& runs, int64_t limit, const std::string& what) {
  if (!runs.is_array()) return Status::Corruption(what + " is not a list of [begin, end) runs");
  std::vector<int> set;
  for (const json& run : runs) {
    if (!run.is_array() || run.size() != 2 || !run[0].is_number_integer() ||
        !run[1].is_number_integer()) {
      return Status::Corruption(what + " holds " + run.dump() +
                                ", not a [begin, end) pair of integers");
    }
    const int64_t b = run[0].get<int64_t>(), e = run[1].get<int64_t>();
    if (b < 0 || e <= b || e > limit) {
      return Status::Corruption(what + " holds the run [" + std::to_string(b) + ", " +
                                std::to_string(e) + "), outside [0, " + std::to_string(limit) +
                                ") or empty");
    }
    if (set.size() + static_cast<size_t>(e - b) > static_cast<size_t>(limit)) {
      return Status::Corruption(what + " holds more than " + std::to_string(limit) + " indices");
    }
    for (int64_t i = b; i < e; ++i) set.push_back(static_cast<int>(i));
  }
  return set;
}

StatusOr<int> GetInt(const json& obj, const char* key, const std::string& what) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number_integer()) {
    return Status::Corruption(what + ": '" + key + "' is missing or not an integer");
  }
  const int64_t v = it->get<int64_t>();
  if (v < 0 || v > (1 << 24)) {
    return Status::Corruption(what + ": '" + key + "' = " + std::to_string(v) + " is out of range");
  }
  return static_cast<int>(v);
}

StatusOr<std::vector<int>> GetIntList(const json& obj, const char* key, size_t size,
                                      const std::string& what) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_array() || it->size() != size) {
    return Status::Corruption(what + ": '" + key + "' is missing or does not have " +
                              std::to_string(size) + " entries");
  }
  std::vector<int> v;
  for (const json& x : *it) {
    if (!x.is_number_integer() || x.get<int64_t>() < 1 || x.get<int64_t>() > (1 << 24)) {
      return Status::Corruption(what + ": '" + key + "' holds " + x.dump() +
                                ", not a positive integer");
    }
    v.push_back(x.get<int>());
  }
  return v;
}

}  // namespace

AlignmentMap AlignmentMap::Identity(const ModelConfig& parent) {
  return KeepLayers(parent, Range(parent.n_layer));
}

AlignmentMap AlignmentMap::KeepLayers(const ModelConfig& parent, std::vector<int> layers) {
  AlignmentMap map;
  map.parent = parent;
  map.channels = Range(parent.d_model);
  for (int p : layers) {
    const bool in_range = p >= 0 && p < parent.n_layer;
    map.heads.push_back(Range(in_range ? parent.heads(p) : 1));
    map.neurons.push_back(Range(in_range ? parent.mlp_width(p) : 1));
  }
  map.layers = std::move(layers);
  return map;
}

Status AlignmentMap::Validate() const {
  Status parent_ok = parent.Validate();
  if (!parent_ok.ok()) return parent_ok.WithContext("alignment map: parent");
  TANDEM_RETURN_IF_ERROR(CheckIndexSet(layers, parent.n_layer, "layers"));
  TANDEM_RETURN_IF_ERROR(CheckIndexSet(channels, parent.d_model, "channels"));
  if (heads.size() != layers.size() || neurons.size() != layers.size()) {
    return Status::InvalidArgument(
        "alignment map: heads and neurons need one entry per kept block (" +
        std::to_string(layers.size()) + "), got " + std::to_string(heads.size()) + " and " +
        std::to_string(neurons.size()));
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string at = "[" + std::to_string(l) + "] (parent block " +
                           std::to_string(layers[l]) + ")";
    TANDEM_RETURN_IF_ERROR(CheckIndexSet(heads[l], parent.heads(layers[l]), "heads" + at));
    TANDEM_RETURN_IF_ERROR(CheckIndexSet(neurons[l], parent.mlp_width(layers[l]), "neurons" + at));
  }
  return Status::Ok();
}

ModelConfig AlignmentMap::ChildConfig() const {
  ModelConfig c;
  c.vocab = parent.vocab;
  c.context = parent.context;
  c.d_model = static_cast<int>(channels.size());
  c.n_layer = static_cast<int>(layers.size());
  int max_heads = 0;
  for (const auto& h : heads) max_heads = std::max(max_heads, static_cast<int>(h.size()));
  c.n_head = max_heads;
  // The head dimension is the parent's; spelled out only when d_model / n_head differs from it.
  if (c.d_model % c.n_head != 0 || c.d_model / c.n_head != parent.head_dim()) {
    c.d_head = parent.head_dim();
  }
  bool uniform_heads = true, uniform_mlp = true;
  for (size_t l = 0; l < layers.size(); ++l) {
    uniform_heads &= static_cast<int>(heads[l].size()) == max_heads;
    uniform_mlp &= neurons[l].size() == neurons[0].size();
  }
  if (!uniform_heads) {
    for (const auto& h : heads) c.layer_n_head.push_back(static_cast<int>(h.size()));
  }
  const int mlp0 = static_cast<int>(neurons[0].size());
  if (uniform_mlp) {
    if (mlp0 != 4 * c.d_model) c.d_mlp = mlp0;
  } else {
    for (const auto& n : neurons) c.layer_d_mlp.push_back(static_cast<int>(n.size()));
  }
  return c;
}

bool AlignmentMap::operator==(const AlignmentMap& o) const {
  return parent == o.parent && layers == o.layers && channels == o.channels && heads == o.heads &&
         neurons == o.neurons;
}

std::vector<TensorAlignment> TensorAlignments(const AlignmentMap& map) {
  const ModelConfig& P = map.parent;
  const int HD = P.head_dim();
  auto all = [](int64_t n) {
    std::vector<int64_t> v(n);
    std::iota(v.begin(), v.end(), 0);
    return v;
  };
  const std::vector<int64_t> ch(map.channels.begin(), map.channels.end());
  std::vector<TensorAlignment> out;
  out.push_back({"wte.weight", "wte.weight", {all(P.vocab), ch}});
  out.push_back({"wpe.weight", "wpe.weight", {all(P.context), ch}});
  for (size_t l = 0; l < map.layers.size(); ++l) {
    const int p = map.layers[l];
    const int64_t A = P.attn_width(p);
    // Columns of the kept heads within one A-wide part, and within q, k, v side by side.
    std::vector<int64_t> head_cols, qkv_cols;
    for (int h : map.heads[l]) {
      for (int j = 0; j < HD; ++j) head_cols.push_back(static_cast<int64_t>(h) * HD + j);
    }
    for (int part = 0; part < 3; ++part) {
      for (int64_t c : head_cols) qkv_cols.push_back(part * A + c);
    }
    const std::vector<int64_t> nr(map.neurons[l].begin(), map.neurons[l].end());
    auto add = [&](const char* name, std::vector<std::vector<int64_t>> index) {
      out.push_back({Block(static_cast<int>(l), name), Block(p, name), std::move(index)});
    };
    add("ln_1.weight", {ch});
    add("ln_1.bias", {ch});
    add("attn.c_attn.weight", {ch, qkv_cols});
    add("attn.c_attn.bias", {qkv_cols});
    add("attn.c_proj.weight", {head_cols, ch});
    add("attn.c_proj.bias", {ch});
    add("ln_2.weight", {ch});
    add("ln_2.bias", {ch});
    add("mlp.c_fc.weight", {ch, nr});
    add("mlp.c_fc.bias", {nr});
    add("mlp.c_proj.weight", {nr, ch});
    add("mlp.c_proj.bias", {ch});
  }
  out.push_back({"ln_f.weight", "ln_f.weight", {ch}});
  out.push_back({"ln_f.bias", "ln_f.bias", {ch}});
  return out;
}

std::vector<size_t> ParentOffsets(const AlignmentMap& map) {
  const ParamLayout parent = GptLayout(map.parent);
  const ParamLayout child = GptLayout(map.ChildConfig());
  std::vector<size_t> offsets(child.total());
  for (const TensorAlignment& t : TensorAlignments(map)) {
    const TensorSpec* c = child.Find(t.child_name);
    const TensorSpec* p = parent.Find(t.parent_name);
    TANDEM_CHECK(c != nullptr && p != nullptr && c->shape.size() == t.index.size());
    size_t* dst = offsets.data() + c->offset;
    if (t.index.size() == 1) {
      TANDEM_CHECK(static_cast<int64_t>(t.index[0].size()) == c->shape[0]);
      for (int64_t i : t.index[0]) *dst++ = p->offset + static_cast<size_t>(i);
    } else {
      TANDEM_CHECK(static_cast<int64_t>(t.index[0].size()) == c->shape[0] &&
                   static_cast<int64_t>(t.index[1].size()) == c->shape[1]);
      const size_t cols = static_cast<size_t>(p->shape[1]);
      for (int64_t i : t.index[0]) {
        const size_t row = p->offset + static_cast<size_t>(i) * cols;
        for (int64_t j : t.index[1]) *dst++ = row + static_cast<size_t>(j);
      }
    }
  }
  return offsets;
}

// --- Serialisation -----------------------------------------------------------------------

std::string AlignmentMapToJson(const AlignmentMap& map) {
  const ModelConfig& P = map.parent;
  json parent = {{"vocab", P.vocab},     {"context", P.context}, {"d_model", P.d_model},
                 {"n_layer", P.n_layer}, {"n_head", P.n_head},   {"d_head", P.head_dim()}};
  json layer_heads = json::array(), layer_mlp = json::array();
  for (int l = 0; l < P.n_layer; ++l) {
    layer_heads.push_back(P.heads(l));
    layer_mlp.push_back(P.mlp_width(l));
  }
  parent["layer_n_head"] = layer_heads;
  parent["layer_d_mlp"] = layer_mlp;
  json heads = json::array(), neurons = json::array();
  for (const auto& h : map.heads) heads.push_back(ToRuns(h));
  for (const auto& n : map.neurons) neurons.push_back(ToRuns(n));
  json j = {{"format", "tandem-alignment"},
            {"version", 1},
            {"parent", parent},
            {"layers", map.layers},
            {"channels", ToRuns(map.channels)},
            {"heads", heads},
            {"neurons", neurons}};
  return j.dump();
}

StatusOr<AlignmentMap> AlignmentMapFromJson(const std::string& text, const std::string& what) {
  const std::string where = what + ": alignment map";
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Corruption(where + " is not a JSON object");
  }
  if (j.value("format", "") != "tandem-alignment" || !j.contains("version") ||
      !j["version"].is_number_integer() || j["version"].get<int64_t>() != 1) {
    return Status::Corruption(where + " is not format 'tandem-alignment' version 1");
  }
  if (!j.contains("parent") || !j["parent"].is_object()) {
    return Status::Corruption(where + ": 'parent' is missing");
  }
  const json& pj = j["parent"];
  const std::string pwhere = where + ": parent";
  AlignmentMap map;
  ModelConfig& P = map.parent;
  TANDEM_ASSIGN_OR_RETURN(P.vocab, GetInt(pj, "vocab", pwhere));
  TANDEM_ASSIGN_OR_RETURN(P.context, GetInt(pj, "context", pwhere));
  TANDEM_ASSIGN_OR_RETURN(P.d_model, GetInt(pj, "d_model", pwhere));
  TANDEM_ASSIGN_OR_RETURN(P.n_layer, GetInt(pj, "n_layer", pwhere));
  TANDEM_ASSIGN_OR_RETURN(P.n_head, GetInt(pj, "n_head", pwhere));
  TANDEM_ASSIGN_OR_RETURN(P.d_head, GetInt(pj, "d_head", pwhere));
  if (P.n_layer > 4096) return Status::Corruption(pwhere + ": n_layer is out of range");
  TANDEM_ASSIGN_OR_RETURN(P.layer_n_head, GetIntList(pj, "layer_n_head", P.n_layer, pwhere));
  TANDEM_ASSIGN_OR_RETURN(P.layer_d_mlp, GetIntList(pj, "layer_d_mlp", P.n_layer, pwhere));
  Status parent_ok = P.Validate();
  if (!parent_ok.ok()) return Status::Corruption(pwhere + ": " + parent_ok.message());

  if (!j.contains("layers") || !j["layers"].is_array()) {
    return Status::Corruption(where + ": 'layers' is missing or not a list");
  }
  for (const json& x : j["layers"]) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= P.n_layer) {
      return Status::Corruption(where + ": 'layers' holds " + x.dump() +
                                ", not a parent block in [0, " + std::to_string(P.n_layer) + ")");
    }
    map.layers.push_back(x.get<int>());
  }
  if (!j.contains("channels")) return Status::Corruption(where + ": 'channels' is missing");
  TANDEM_ASSIGN_OR_RETURN(map.channels, FromRuns(j["channels"], P.d_model, where + ": channels"));
  for (const char* key : {"heads", "neurons"}) {
    if (!j.contains(key) || !j[key].is_array() || j[key].size() != map.layers.size()) {
      return Status::Corruption(where + ": '" + key + "' is missing or does not have one entry " +
                                "per kept block (" + std::to_string(map.layers.size()) + ")");
    }
  }
  for (size_t l = 0; l < map.layers.size(); ++l) {
    const int p = map.layers[l];
    const std::string at = "[" + std::to_string(l) + "]";
    TANDEM_ASSIGN_OR_RETURN(std::vector<int> h,
                            FromRuns(j["heads"][l], P.heads(p), where + ": heads" + at));
    TANDEM_ASSIGN_OR_RETURN(std::vector<int> n,
                            FromRuns(j["neurons"][l], P.mlp_width(p), where + ": neurons" + at));
    map.heads.push_back(std::move(h));
    map.neurons.push_back(std::move(n));
  }
  Status valid = map.Validate();
  if (!valid.ok()) return Status::Corruption(what + ": " + valid.message());
  return map;
}

Status SavePrunedGpt(const std::string& path, const GptWeights& child, const AlignmentMap& map,
                     std::map<std::string, std::string> extra_metadata) {
  TANDEM_RETURN_IF_ERROR(map.Validate());
  if (!(child.config() == map.ChildConfig())) {
    return Status::InvalidArgument("the child's shape (" + child.config().ToString() +
                                   ") is not its alignment map's (" +
                                   map.ChildConfig().ToString() + ")");
  }
  extra_metadata[kAlignmentMetadataKey] = AlignmentMapToJson(map);
  return SaveGpt(path, child, extra_metadata);
}

StatusOr<AlignmentMap> ReadAlignmentMap(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  auto it = file.metadata.find(kAlignmentMetadataKey);
  if (it == file.metadata.end()) {
    return Status::NotFound(path + ": no alignment map (metadata key '" +
                            std::string(kAlignmentMetadataKey) +
                            "'): not a checkpoint written by `tandem prune`");
  }
  TANDEM_ASSIGN_OR_RETURN(AlignmentMap map, AlignmentMapFromJson(it->second, path));
  // The map must describe this very checkpoint: every tensor of its child shape, as shaped.
  const ParamLayout child = GptLayout(map.ChildConfig());
  for (const TensorSpec& spec : child.tensors()) {
    auto t = file.tensors.find(spec.name);
    if (t == file.tensors.end() || t->second.shape != spec.shape) {
      return Status::Corruption(path + ": the alignment map describes a child (" +
                                map.ChildConfig().ToString() + ") whose tensor '" + spec.name +
                                "' the checkpoint " +
                                (t == file.tensors.end() ? "lacks" : "has in another shape"));
    }
  }
  return map;
}

}  // namespace tandem

#include "models/gpt_weights.h"

#include <algorithm>
#include <cmath>

#include "core/rng.h"

namespace tandem {
namespace {

const char* const kLinearNames[GptWeights::kNumLinear] = {"attn.c_attn", "attn.c_proj",
                                                          "mlp.c_fc", "mlp.c_proj"};
const char* const kBlockTensorNames[GptWeights::kNumBlockTensors] = {
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
const GptWeights::BlockTensor kLinearWeight[GptWeights::kNumLinear] = {
    GptWeights::kQkvW, GptWeights::kProjW, GptWeights::kFcW, GptWeights::kFcProjW};
const GptWeights::BlockTensor kLinearBias[GptWeights::kNumLinear] = {
    GptWeights::kQkvB, GptWeights::kProjB, GptWeights::kFcB, GptWeights::kFcProjB};

std::string BlockName(int layer, const char* rest) {
  return "h." + std::to_string(layer) + "." + rest;
}

}  // namespace

ParamLayout GptLayout(const ModelConfig& config) {
  ParamLayout layout;
  const int64_t C = config.d_model, V = config.vocab;
  layout.Add("wte.weight", {V, C}, true);
  layout.Add("wpe.weight", {config.context, C}, true);
  for (int l = 0; l < config.n_layer; ++l) {
    const int64_t A = config.attn_width(l), M = config.mlp_width(l);
    layout.Add(BlockName(l, "ln_1.weight"), {C}, false);
    layout.Add(BlockName(l, "ln_1.bias"), {C}, false);
    layout.Add(BlockName(l, "attn.c_attn.weight"), {C, 3 * A}, true);
    layout.Add(BlockName(l, "attn.c_attn.bias"), {3 * A}, false);
    layout.Add(BlockName(l, "attn.c_proj.weight"), {A, C}, true);
    layout.Add(BlockName(l, "attn.c_proj.bias"), {C}, false);
    layout.Add(BlockName(l, "ln_2.weight"), {C}, false);
    layout.Add(BlockName(l, "ln_2.bias"), {C}, false);
    layout.Add(BlockName(l, "mlp.c_fc.weight"), {C, M}, true);
    layout.Add(BlockName(l, "mlp.c_fc.bias"), {M}, false);
    layout.Add(BlockName(l, "mlp.c_proj.weight"), {M, C}, true);
    layout.Add(BlockName(l, "mlp.c_proj.bias"), {C}, false);
  }
  layout.Add("ln_f.weight", {C}, false);
  layout.Add("ln_f.bias", {C}, false);
  return layout;
}

struct GptWeights::LoraState {
  LoraConfig config;
  ParamLayout layout;
  std::vector<float> params;
  bool merged = false;
  // Offset of A and B per (layer, linear kind), or SIZE_MAX when that linear has no adapter.
  std::vector<size_t> a_offset, b_offset;
};

const char* GptWeights::LinearName(int kind) { return kLinearNames[kind]; }
const char* GptWeights::BlockTensorName(int tensor) { return kBlockTensorNames[tensor]; }
GptWeights::BlockTensor GptWeights::LinearWeight(int kind) { return kLinearWeight[kind]; }
GptWeights::BlockTensor GptWeights::LinearBias(int kind) { return kLinearBias[kind]; }

GptWeights::GptWeights(const ModelConfig& config) : config_(config) {
  TANDEM_CHECK(config_.Validate().ok());
  layout_ = GptLayout(config_);
  params_.assign(layout_.total(), 0.0f);
  wte_offset_ = layout_.Find("wte.weight")->offset;
  wpe_offset_ = layout_.Find("wpe.weight")->offset;
  lnf_w_offset_ = layout_.Find("ln_f.weight")->offset;
  lnf_b_offset_ = layout_.Find("ln_f.bias")->offset;
  block_offsets_.resize(config_.n_layer);
  for (int l = 0; l < config_.n_layer; ++l) {
    for (int k = 0; k < kNumBlockTensors; ++k) {
      block_offsets_[l].push_back(layout_.Find(BlockName(l, kBlockTensorNames[k]))->offset);
    }
  }
}

GptWeights::GptWeights(const GptWeights& other)
    : config_(other.config_),
      layout_(other.layout_),
      params_(other.params_),
      block_offsets_(other.block_offsets_),
      wte_offset_(other.wte_offset_),
      wpe_offset_(other.wpe_offset_),
      lnf_w_offset_(other.lnf_w_offset_),
      lnf_b_offset_(other.lnf_b_offset_) {
  if (other.lora_) lora_ = std::make_unique<LoraState>(*other.lora_);
}

GptWeights::~GptWeights() = default;

void GptWeights::InitWeights(uint64_t seed) {
  Rng rng(seed);
  const float proj_std = 0.02f / std::sqrt(2.0f * config_.n_layer);
  for (const auto& t : layout_.tensors()) {
    float* p = params_.data() + t.offset;
    const bool is_ln_gain = t.name.find("ln_") != std::string::npos &&
                            t.name.find(".weight") != std::string::npos;
    const bool is_bias = t.name.size() >= 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    if (is_ln_gain) {
      std::fill(p, p + t.size, 1.0f);
    } else if (is_bias) {
      std::fill(p, p + t.size, 0.0f);
    } else {
      const bool residual_proj = t.name.find("c_proj.weight") != std::string::npos;
      const float stddev = residual_proj ? proj_std : 0.02f;
      for (size_t i = 0; i < t.size; ++i) p[i] = static_cast<float>(rng.Normal()) * stddev;
    }
  }
}

float* GptWeights::param(const std::string& name) {
  const TensorSpec* t = layout_.Find(name);
  TANDEM_CHECK(t != nullptr);
  return params_.data() + t->offset;
}

const float* GptWeights::param(const std::string& name) const {
  const TensorSpec* t = layout_.Find(name);
  TANDEM_CHECK(t != nullptr);
  return params_.data() + t->offset;
}

BlockWeights GptWeights::block(int l) const {
  const float* p = params_.data();
  const std::vector<size_t>& o = block_offsets_[l];
  return {p + o[kLn1W],  p + o[kLn1B],  p + o[kQkvW], p + o[kQkvB],
          p + o[kProjW], p + o[kProjB], p + o[kLn2W], p + o[kLn2B],
          p + o[kFcW],   p + o[kFcB],   p + o[kFcProjW], p + o[kFcProjB]};
}

int GptWeights::linear_in(int layer, int kind) const {
  switch (kind) {
    case kAttnProj: return config_.attn_width(layer);
    case kFcProj: return config_.mlp_width(layer);
    default: return config_.d_model;
  }
}

int GptWeights::linear_out(int layer, int kind) const {
  switch (kind) {
    case kQkv: return 3 * config_.attn_width(layer);
    case kFc: return config_.mlp_width(layer);
    default: return config_.d_model;
  }
}

// --- LoRA ---------------------------------------------------------------------------------

Status GptWeights::EnableLora(const LoraConfig& lora, uint64_t seed) {
  TANDEM_RETURN_IF_ERROR(lora.Validate());
  if (lora_) return Status::FailedPrecondition("LoRA adapters are already enabled");
  if (!lora.layers.empty() && lora.layers.back() >= config_.n_layer) {
    return Status::InvalidArgument("lora layer " + std::to_string(lora.layers.back()) +
                                   " is beyond the model's " + std::to_string(config_.n_layer) +
                                   " blocks");
  }
  auto state = std::make_unique<LoraState>();
  state->config = lora;
  state->a_offset.assign(static_cast<size_t>(config_.n_layer) * kNumLinear, SIZE_MAX);
  state->b_offset.assign(state->a_offset.size(), SIZE_MAX);
  for (int l = 0; l < config_.n_layer; ++l) {
    if (!lora.has_layer(l)) continue;
    for (int k = 0; k < kNumLinear; ++k) {
      if (std::find(lora.targets.begin(), lora.targets.end(), kLinearNames[k]) ==
          lora.targets.end()) {
        continue;
      }
      const std::string base = BlockName(l, kLinearNames[k]);
      state->a_offset[l * kNumLinear + k] =
          state->layout.Add(base + ".lora_A", {linear_in(l, k), lora.rank}, false);
      state->b_offset[l * kNumLinear + k] =
          state->layout.Add(base + ".lora_B", {lora.rank, linear_out(l, k)}, false);
    }
  }
  state->params.assign(state->layout.total(), 0.0f);
  // A ~ N(0, 1/fan_in) keeps inp @ A at the scale of inp; B = 0 so a new adapter adds nothing.
  Rng rng(seed);
  for (const auto& t : state->layout.tensors()) {
    if (t.name.find("lora_A") == std::string::npos) continue;
    const float stddev = 1.0f / std::sqrt(static_cast<float>(t.shape[0]));
    for (size_t i = 0; i < t.size; ++i) {
      state->params[t.offset + i] = static_cast<float>(rng.Normal()) * stddev;
    }
  }
  lora_ = std::move(state);
  return Status::Ok();
}

const LoraConfig& GptWeights::lora_config() const {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->config;
}
const ParamLayout& GptWeights::lora_layout() const {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->layout;
}
std::span<float> GptWeights::lora_params() {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->params;
}
std::span<const float> GptWeights::lora_params() const {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->params;
}
size_t GptWeights::lora_a_offset(int layer, int kind) const {
  return lora_ ? lora_->a_offset[static_cast<size_t>(layer) * kNumLinear + kind] : SIZE_MAX;
}
size_t GptWeights::lora_b_offset(int layer, int kind) const {
  return lora_ ? lora_->b_offset[static_cast<size_t>(layer) * kNumLinear + kind] : SIZE_MAX;
}
bool GptWeights::lora_merged() const { return lora_ != nullptr && lora_->merged; }

void GptWeights::MergeLora() {
  TANDEM_CHECK(lora_ != nullptr && !lora_->merged);
  for (int l = 0; l < config_.n_layer; ++l) {
    for (int k = 0; k < kNumLinear; ++k) {
      const size_t a = lora_a_offset(l, k);
      if (a == SIZE_MAX) continue;
      LoraMerge(params_.data() + block_offsets_[l][kLinearWeight[k]], lora_->params.data() + a,
                lora_->params.data() + lora_b_offset(l, k), linear_in(l, k), lora_->config.rank,
                linear_out(l, k), lora_->config.scale(), +1.0f);
    }
  }
  lora_->merged = true;
}

void GptWeights::UnmergeLora() {
  TANDEM_CHECK(lora_ != nullptr && lora_->merged);
  lora_->merged = false;
  for (int l = 0; l < config_.n_layer; ++l) {
    for (int k = 0; k < kNumLinear; ++k) {
      const size_t a = lora_a_offset(l, k);
      if (a == SIZE_MAX) continue;
      LoraMerge(params_.data() + block_offsets_[l][kLinearWeight[k]], lora_->params.data() + a,
                lora_->params.data() + lora_b_offset(l, k), linear_in(l, k), lora_->config.rank,
                linear_out(l, k), lora_->config.scale(), -1.0f);
    }
  }
}

}  // namespace tandem

#include "models/gpt.h"

#include <cmath>
#include <cstring>

#include <omp.h>

#include "core/rng.h"
#include "models/attention.h"
#include "models/cross_entropy.h"
#include "models/embedding.h"
#include "models/gelu.h"
#include "models/gemm.h"
#include "models/layernorm.h"
#include "models/linear.h"
#include "models/tensor_map.h"

namespace tandem {
namespace {

// The four linear layers of a block, in the order of kLinearNames.
enum LinearKind { kQkv = 0, kAttnProj = 1, kFc = 2, kFcProj = 3, kNumLinear = 4 };
const char* const kLinearNames[kNumLinear] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                              "mlp.c_proj"};

std::string BlockName(int layer, const char* rest) {
  return "h." + std::to_string(layer) + "." + rest;
}

// A block's tensors, in the order of their names in kBlockTensorNames.
enum BlockTensor {
  kLn1W, kLn1B, kQkvW, kQkvB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFcProjW, kFcProjB,
  kNumBlockTensors
};
const char* const kBlockTensorNames[kNumBlockTensors] = {
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
// Weight and bias of each LinearKind.
const BlockTensor kLinearWeight[kNumLinear] = {kQkvW, kProjW, kFcW, kFcProjW};
const BlockTensor kLinearBias[kNumLinear] = {kQkvB, kProjB, kFcB, kFcProjB};

}  // namespace

// Activations of one Forward, kept for Backward, plus gradient scratch. One arena.
struct Gpt::Activations {
  int B = 0, T = 0;
  std::vector<float> arena;
  std::vector<int32_t> tokens, targets;  // (B,T) copies of the last inputs

  float* encoded;  // (N,C)
  struct Layer {
    float *ln1, *ln1_mean, *ln1_rstd;  // (N,C) (N) (N)
    float* qkv;                        // (N,3C)
    float* att;                        // (B,NH,T,T)
    float* atty;                       // (N,C)
    float* res2;                       // (N,C) residual after attention
    float *ln2, *ln2_mean, *ln2_rstd;  // (N,C) (N) (N)
    float* fch;                        // (N,4C)
    float* fch_gelu;                   // (N,4C)
    float* res3;                       // (N,C) residual after the MLP: the block's output
    float* lora_xa[kNumLinear];        // (N,r) per adapted linear, or null
  };
  std::vector<Layer> layers;
  float *lnf, *lnf_mean, *lnf_rstd;  // (N,C) (N) (N)
  float* logits;                     // (N,V)
  float* probs;                      // (N,V); dlogits in place during Backward
  float* losses;                     // (N)
  // Gradient scratch, reused by every layer.
  float* dres;   // (N,C) gradient of the residual stream
  float* dbig;   // (N,4C)
  float* dbig2;  // (N,4C)
  float* dqkv;   // (N,3C)
  float* dsmall; // (N,C)
  float* dxa;    // (N,r)
  // Gradient buffers of shards 1.. (shard 0 uses the model's own), added in after Backward.
  std::vector<std::vector<float>> shard_grads, shard_lora_grads;
};

struct Gpt::LoraState {
  LoraConfig config;
  ParamLayout layout;
  std::vector<float> params, grads;
  bool merged = false;
  // Offset of A and B per (layer, linear kind), or SIZE_MAX when that linear has no adapter.
  std::vector<size_t> a_offset, b_offset;
};

struct Gpt::LinearSlot {
  float* w;
  float* b;
  float* dw;
  float* db;
  int in, out;
  float* lora_a = nullptr;
  float* lora_b = nullptr;
  float* lora_da = nullptr;
  float* lora_db = nullptr;
  float* lora_xa = nullptr;  // (N,r): where the forward keeps inp @ A
};

Gpt::Gpt(const ModelConfig& config) : config_(config) {
  TANDEM_CHECK(config_.Validate().ok());
  const int64_t C = config_.d_model, V = config_.vocab;
  layout_.Add("wte.weight", {V, C}, true);
  layout_.Add("wpe.weight", {config_.context, C}, true);
  for (int l = 0; l < config_.n_layer; ++l) {
    layout_.Add(BlockName(l, "ln_1.weight"), {C}, false);
    layout_.Add(BlockName(l, "ln_1.bias"), {C}, false);
    layout_.Add(BlockName(l, "attn.c_attn.weight"), {C, 3 * C}, true);
    layout_.Add(BlockName(l, "attn.c_attn.bias"), {3 * C}, false);
    layout_.Add(BlockName(l, "attn.c_proj.weight"), {C, C}, true);
    layout_.Add(BlockName(l, "attn.c_proj.bias"), {C}, false);
    layout_.Add(BlockName(l, "ln_2.weight"), {C}, false);
    layout_.Add(BlockName(l, "ln_2.bias"), {C}, false);
    layout_.Add(BlockName(l, "mlp.c_fc.weight"), {C, 4 * C}, true);
    layout_.Add(BlockName(l, "mlp.c_fc.bias"), {4 * C}, false);
    layout_.Add(BlockName(l, "mlp.c_proj.weight"), {4 * C, C}, true);
    layout_.Add(BlockName(l, "mlp.c_proj.bias"), {C}, false);
  }
  layout_.Add("ln_f.weight", {C}, false);
  layout_.Add("ln_f.bias", {C}, false);
  params_.assign(layout_.total(), 0.0f);
  grads_.assign(layout_.total(), 0.0f);
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

Gpt::~Gpt() = default;

Gpt::Gpt(const Gpt& other)
    : block_offsets_(other.block_offsets_),
      wte_offset_(other.wte_offset_),
      wpe_offset_(other.wpe_offset_),
      lnf_w_offset_(other.lnf_w_offset_),
      lnf_b_offset_(other.lnf_b_offset_),
      config_(other.config_),
      layout_(other.layout_),
      params_(other.params_),
      grads_(other.grads_),
      train_base_(other.train_base_) {
  if (other.lora_) lora_ = std::make_unique<LoraState>(*other.lora_);
}

void Gpt::InitWeights(uint64_t seed) {
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

float* Gpt::param(const std::string& name) {
  const TensorSpec* t = layout_.Find(name);
  TANDEM_CHECK(t != nullptr);
  return params_.data() + t->offset;
}
const float* Gpt::param(const std::string& name) const {
  const TensorSpec* t = layout_.Find(name);
  TANDEM_CHECK(t != nullptr);
  return params_.data() + t->offset;
}
float* Gpt::grad(const std::string& name) {
  const TensorSpec* t = layout_.Find(name);
  TANDEM_CHECK(t != nullptr);
  return grads_.data() + t->offset;
}

BlockWeights Gpt::block(int l) const {
  const float* p = params_.data();
  const std::vector<size_t>& o = block_offsets_[l];
  return {p + o[kLn1W],  p + o[kLn1B],  p + o[kQkvW], p + o[kQkvB],
          p + o[kProjW], p + o[kProjB], p + o[kLn2W], p + o[kLn2B],
          p + o[kFcW],   p + o[kFcB],   p + o[kFcProjW], p + o[kFcProjB]};
}

// --- LoRA ---------------------------------------------------------------------------------

Status Gpt::EnableLora(const LoraConfig& lora, uint64_t seed) {
  TANDEM_RETURN_IF_ERROR(lora.Validate());
  if (lora_) return Status::FailedPrecondition("LoRA adapters are already enabled");
  auto state = std::make_unique<LoraState>();
  state->config = lora;
  const int C = config_.d_model;
  const int ins[kNumLinear] = {C, C, C, 4 * C};
  const int outs[kNumLinear] = {3 * C, C, 4 * C, C};
  state->a_offset.assign(static_cast<size_t>(config_.n_layer) * kNumLinear, SIZE_MAX);
  state->b_offset.assign(state->a_offset.size(), SIZE_MAX);
  for (int l = 0; l < config_.n_layer; ++l) {
    for (int k = 0; k < kNumLinear; ++k) {
      if (std::find(lora.targets.begin(), lora.targets.end(), kLinearNames[k]) ==
          lora.targets.end()) {
        continue;
      }
      const std::string base = BlockName(l, kLinearNames[k]);
      state->a_offset[l * kNumLinear + k] =
          state->layout.Add(base + ".lora_A", {ins[k], lora.rank}, false);
      state->b_offset[l * kNumLinear + k] =
          state->layout.Add(base + ".lora_B", {lora.rank, outs[k]}, false);
    }
  }
  state->params.assign(state->layout.total(), 0.0f);
  state->grads.assign(state->layout.total(), 0.0f);
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
  train_base_ = false;
  acts_.reset();  // the arena needs room for the adapters' activations
  return Status::Ok();
}

const LoraConfig& Gpt::lora_config() const {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->config;
}
const ParamLayout& Gpt::lora_layout() const {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->layout;
}
std::span<float> Gpt::lora_params() {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->params;
}
std::span<const float> Gpt::lora_params() const {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->params;
}
std::span<float> Gpt::lora_grads() {
  TANDEM_CHECK(lora_ != nullptr);
  return lora_->grads;
}
bool Gpt::lora_merged() const { return lora_ != nullptr && lora_->merged; }

void Gpt::MergeLora() {
  TANDEM_CHECK(lora_ != nullptr && !lora_->merged);
  for (int l = 0; l < config_.n_layer; ++l) {
    for (int k = 0; k < kNumLinear; ++k) {
      LinearSlot s = Linear(l, k, nullptr);
      if (s.lora_a == nullptr) continue;
      LoraMerge(s.w, s.lora_a, s.lora_b, s.in, lora_->config.rank, s.out, lora_->config.scale(),
                +1.0f);
    }
  }
  lora_->merged = true;
}

void Gpt::UnmergeLora() {
  TANDEM_CHECK(lora_ != nullptr && lora_->merged);
  lora_->merged = false;
  for (int l = 0; l < config_.n_layer; ++l) {
    for (int k = 0; k < kNumLinear; ++k) {
      LinearSlot s = Linear(l, k, nullptr);
      if (s.lora_a == nullptr) continue;
      LoraMerge(s.w, s.lora_a, s.lora_b, s.in, lora_->config.rank, s.out, lora_->config.scale(),
                -1.0f);
    }
  }
}

// --- Forward and backward -----------------------------------------------------------------

Gpt::LinearSlot Gpt::Linear(int layer, int kind, float* g, float* gl) {
  const int C = config_.d_model;
  const int ins[kNumLinear] = {C, C, C, 4 * C};
  const int outs[kNumLinear] = {3 * C, C, 4 * C, C};
  if (g == nullptr) g = grads_.data();
  const size_t w = block_offsets_[layer][kLinearWeight[kind]];
  const size_t b = block_offsets_[layer][kLinearBias[kind]];
  LinearSlot s{params_.data() + w, params_.data() + b, g + w, g + b, ins[kind], outs[kind]};
  if (lora_ && !lora_->merged) {
    const size_t idx = static_cast<size_t>(layer) * kNumLinear + kind;
    if (lora_->a_offset[idx] != SIZE_MAX) {
      if (gl == nullptr) gl = lora_->grads.data();
      s.lora_a = lora_->params.data() + lora_->a_offset[idx];
      s.lora_b = lora_->params.data() + lora_->b_offset[idx];
      s.lora_da = gl + lora_->a_offset[idx];
      s.lora_db = gl + lora_->b_offset[idx];
      if (acts_) s.lora_xa = acts_->layers[layer].lora_xa[kind];
    }
  }
  return s;
}

void Gpt::LinearFwd(const LinearSlot& s, float* out, const float* inp, int N, bool accumulate,
                    size_t xa_offset) {
  LinearForward(out, inp, s.w, s.b, N, s.in, s.out, accumulate);
  if (s.lora_a != nullptr) {
    LoraForward(out, s.lora_xa + xa_offset, inp, s.lora_a, s.lora_b, N, s.in,
                lora_->config.rank, s.out, lora_->config.scale());
  }
}

void Gpt::LinearBwd(const LinearSlot& s, float* dinp, const float* dout, const float* inp, int N,
                    size_t xa_offset) {
  LinearBackward(dinp, train_base_ ? s.dw : nullptr, train_base_ ? s.db : nullptr, dout, inp, s.w,
                 N, s.in, s.out);
  if (s.lora_a != nullptr) {
    LoraBackward(dinp, s.lora_da, s.lora_db, acts_->dxa + xa_offset, dout, inp,
                 s.lora_xa + xa_offset, s.lora_a, s.lora_b, N, s.in, lora_->config.rank, s.out,
                 lora_->config.scale());
  }
}

void Gpt::EnsureActivations(int B, int T) {
  if (acts_ && acts_->B == B && acts_->T == T) return;
  const size_t N = static_cast<size_t>(B) * T;
  const size_t C = config_.d_model, V = config_.vocab, NH = config_.n_head;
  const size_t r = lora_ ? static_cast<size_t>(lora_->config.rank) : 0;
  auto a = std::make_unique<Activations>();
  a->B = B;
  a->T = T;
  a->tokens.resize(N);
  a->targets.resize(N);
  a->layers.resize(config_.n_layer);

  // Two passes over the same carving: the first counts, the second hands out pointers.
  size_t total = 0;
  float* base = nullptr;
  auto take = [&](size_t n) {
    float* p = base ? base + total : nullptr;
    total += (n + 15) & ~size_t{15};  // keep every tensor 64-byte aligned
    return p;
  };
  for (int pass = 0; pass < 2; ++pass) {
    total = 0;
    a->encoded = take(N * C);
    for (auto& L : a->layers) {
      L.ln1 = take(N * C);
      L.ln1_mean = take(N);
      L.ln1_rstd = take(N);
      L.qkv = take(N * 3 * C);
      L.att = take(static_cast<size_t>(B) * NH * T * T);
      L.atty = take(N * C);
      L.res2 = take(N * C);
      L.ln2 = take(N * C);
      L.ln2_mean = take(N);
      L.ln2_rstd = take(N);
      L.fch = take(N * 4 * C);
      L.fch_gelu = take(N * 4 * C);
      L.res3 = take(N * C);
      for (int k = 0; k < kNumLinear; ++k) L.lora_xa[k] = r > 0 ? take(N * r) : nullptr;
    }
    a->lnf = take(N * C);
    a->lnf_mean = take(N);
    a->lnf_rstd = take(N);
    a->logits = take(N * V);
    a->probs = take(N * V);
    a->losses = take(N);
    a->dres = take(N * C);
    a->dbig = take(N * 4 * C);
    a->dbig2 = take(N * 4 * C);
    a->dqkv = take(N * 3 * C);
    a->dsmall = take(N * C);
    a->dxa = take(std::max<size_t>(N * r, 1));
    if (pass == 0) {
      a->arena.assign(total + 16, 0.0f);
      // Align the base to 64 bytes.
      uintptr_t addr = reinterpret_cast<uintptr_t>(a->arena.data());
      base = a->arena.data() + ((64 - addr % 64) % 64) / sizeof(float);
    }
  }
  acts_ = std::move(a);
}

float Gpt::Forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  TANDEM_CHECK(B > 0 && T > 0 && T <= config_.context);
  const int V = config_.vocab;
  const int N = B * T;
  for (int i = 0; i < N; ++i) TANDEM_CHECK(tokens[i] >= 0 && tokens[i] < V);
  if (targets != nullptr) {
    for (int i = 0; i < N; ++i) {
      TANDEM_CHECK(targets[i] == kIgnoreTarget || (targets[i] >= 0 && targets[i] < V));
    }
  }
  EnsureActivations(B, T);
  Activations& a = *acts_;
  B_ = B;
  T_ = T;
  std::memcpy(a.tokens.data(), tokens, sizeof(int32_t) * N);
  has_targets_ = targets != nullptr;
  if (has_targets_) std::memcpy(a.targets.data(), targets, sizeof(int32_t) * N);

  // The batch is split into one shard of sequences per thread; each thread runs the whole
  // network on its shard with single-threaded kernels, so threads meet only at the end.
  const int shards = NumShards(B);
  std::vector<double> loss_sum(shards, 0.0);
  std::vector<int> count(shards, 0);
  if (shards == 1) {
    ForwardShard(0, B, &loss_sum[0], &count[0]);
  } else {
    // A loop rather than one shard per thread id: the runtime may grant fewer threads than asked
    // (OMP_THREAD_LIMIT, OMP_DYNAMIC), and every shard must still run.
#pragma omp parallel for schedule(static, 1) num_threads(shards)
    for (int s = 0; s < shards; ++s) {
      const int b0 = s * B / shards, b1 = (s + 1) * B / shards;
      ForwardShard(b0, b1 - b0, &loss_sum[s], &count[s]);
    }
  }
  double total = 0.0;
  loss_count_ = 0;
  for (int s = 0; s < shards; ++s) {
    total += loss_sum[s];
    loss_count_ += count[s];
  }
  if (!has_targets_ || loss_count_ == 0) return 0.0f;
  return static_cast<float>(total / loss_count_);
}

int Gpt::NumShards(int B) const { return std::max(1, std::min(B, omp_get_max_threads())); }

void Gpt::ForwardShard(int b0, int nb, double* loss_sum, int* count) {
  const int T = T_, C = config_.d_model, V = config_.vocab, NH = config_.n_head;
  const int N = nb * T;
  const size_t row0 = static_cast<size_t>(b0) * T;  // first row of this shard
  const size_t r = lora_ ? static_cast<size_t>(lora_->config.rank) : 0;
  Activations& a = *acts_;
  const int32_t* tokens = a.tokens.data() + row0;

  float* encoded = a.encoded + row0 * C;
  const float* p = params_.data();
  EmbeddingForward(encoded, tokens, p + wte_offset_, p + wpe_offset_, nb, T, C);
  const float* residual = encoded;
  for (int l = 0; l < config_.n_layer; ++l) {
    Activations::Layer& L = a.layers[l];
    const BlockWeights w = block(l);
    float* ln1 = L.ln1 + row0 * C;
    float* qkv = L.qkv + row0 * 3 * C;
    float* atty = L.atty + row0 * C;
    float* res2 = L.res2 + row0 * C;
    float* ln2 = L.ln2 + row0 * C;
    float* fch = L.fch + row0 * 4 * C;
    float* fch_gelu = L.fch_gelu + row0 * 4 * C;
    float* res3 = L.res3 + row0 * C;
    LayerNormForward(ln1, L.ln1_mean + row0, L.ln1_rstd + row0, residual, w.ln1_w, w.ln1_b, N, C);
    LinearFwd(Linear(l, kQkv, nullptr), qkv, ln1, N, false, row0 * r);
    AttentionForward(atty, L.att + static_cast<size_t>(b0) * NH * T * T, qkv, nb, T, C, NH);
    std::memcpy(res2, residual, sizeof(float) * N * C);
    LinearFwd(Linear(l, kAttnProj, nullptr), res2, atty, N, /*accumulate=*/true, row0 * r);
    LayerNormForward(ln2, L.ln2_mean + row0, L.ln2_rstd + row0, res2, w.ln2_w, w.ln2_b, N, C);
    LinearFwd(Linear(l, kFc, nullptr), fch, ln2, N, false, row0 * r);
    GeluForward(fch_gelu, fch, static_cast<size_t>(N) * 4 * C);
    std::memcpy(res3, res2, sizeof(float) * N * C);
    LinearFwd(Linear(l, kFcProj, nullptr), res3, fch_gelu, N, /*accumulate=*/true, row0 * r);
    residual = res3;
  }
  float* lnf = a.lnf + row0 * C;
  float* logits = a.logits + row0 * V;
  LayerNormForward(lnf, a.lnf_mean + row0, a.lnf_rstd + row0, residual, p + lnf_w_offset_,
                   p + lnf_b_offset_, N, C);
  // Tied head: logits (N,V) = lnf (N,C) @ wte^T.
  Gemm(false, true, N, V, C, 1.0f, lnf, C, p + wte_offset_, C, 0.0f, logits, V);
  if (has_targets_) {
    const float mean = CrossEntropyForward(a.probs + row0 * V, a.losses + row0, logits,
                                           a.targets.data() + row0, N, V, count);
    *loss_sum = static_cast<double>(mean) * *count;
  }
}

const float* Gpt::logits() const {
  TANDEM_CHECK(acts_ != nullptr);
  return acts_->logits;
}

const float* Gpt::losses() const {
  TANDEM_CHECK(acts_ != nullptr && has_targets_);
  return acts_->losses;
}

void Gpt::ZeroGrad() {
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  if (lora_) std::fill(lora_->grads.begin(), lora_->grads.end(), 0.0f);
}

void Gpt::Backward() {
  TANDEM_CHECK(acts_ != nullptr && has_targets_);
  const int N = B_ * T_;
  CrossEntropyBackward(acts_->probs, acts_->probs, acts_->targets.data(), N, config_.vocab,
                       loss_count_);
  BackwardFromLogits(acts_->probs);
}

void Gpt::BackwardFromLogits(const float* dlogits) {
  TANDEM_CHECK(acts_ != nullptr);
  TANDEM_CHECK(!lora_merged());  // merged adapters receive no gradient: unmerge to train
  Activations& a = *acts_;
  const int B = B_;
  const int shards = NumShards(B);
  if (shards == 1) {
    BackwardShard(0, B, dlogits, grads_.data(), lora_ ? lora_->grads.data() : nullptr);
    return;
  }
  // Shard 0 accumulates into grads_; the others into their own buffers, added in at the end.
  // Buffers are sized here, before the parallel region, whatever the team size turns out to be.
  const size_t P = train_base_ ? grads_.size() : 0, PL = lora_ ? lora_->grads.size() : 0;
  a.shard_grads.resize(shards - 1);
  a.shard_lora_grads.resize(shards - 1);
  for (int s = 1; s < shards; ++s) {
    if (a.shard_grads[s - 1].size() != P) a.shard_grads[s - 1].assign(P, 0.0f);
    if (a.shard_lora_grads[s - 1].size() != PL) a.shard_lora_grads[s - 1].assign(PL, 0.0f);
  }
#pragma omp parallel for schedule(static, 1) num_threads(shards)
  for (int s = 0; s < shards; ++s) {
    const int b0 = s * B / shards, b1 = (s + 1) * B / shards;
    float* g = grads_.data();
    float* gl = lora_ ? lora_->grads.data() : nullptr;
    if (s > 0) {
      auto& mine = a.shard_grads[s - 1];
      auto& mine_lora = a.shard_lora_grads[s - 1];
      std::fill(mine.begin(), mine.end(), 0.0f);
      std::fill(mine_lora.begin(), mine_lora.end(), 0.0f);
      g = mine.data();
      gl = lora_ ? mine_lora.data() : nullptr;
    }
    BackwardShard(b0, b1 - b0, dlogits, g, gl);
  }
  // Add the other shards' gradients into the model's, element by element in shard order.
  const long np = static_cast<long>(P), nl = static_cast<long>(PL);
  float* grads = grads_.data();
#pragma omp parallel for schedule(static)
  for (long i = 0; i < np; ++i) {
    for (int o = 0; o < shards - 1; ++o) grads[i] += a.shard_grads[o][i];
  }
  if (lora_) {
    float* lgrads = lora_->grads.data();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < nl; ++i) {
      for (int o = 0; o < shards - 1; ++o) lgrads[i] += a.shard_lora_grads[o][i];
    }
  }
}

void Gpt::BackwardShard(int b0, int nb, const float* dlogits_all, float* g, float* gl) {
  Activations& a = *acts_;
  const int T = T_, N = nb * T;
  const int C = config_.d_model, V = config_.vocab, NH = config_.n_head;
  const size_t row0 = static_cast<size_t>(b0) * T;
  const size_t r = lora_ ? static_cast<size_t>(lora_->config.rank) : 0;
  const float* wte = params_.data() + wte_offset_;
  const bool base = train_base_;
  const float* dlogits = dlogits_all + row0 * V;
  float* dres = a.dres + row0 * C;
  float* dsmall = a.dsmall + row0 * C;
  float* dbig = a.dbig + row0 * 4 * C;
  float* dbig2 = a.dbig2 + row0 * 4 * C;
  float* dqkv = a.dqkv + row0 * 3 * C;
  const float* lnf = a.lnf + row0 * C;

  // Tied head: dlnf (N,C) = dlogits @ wte; dwte (V,C) += dlogits^T @ lnf.
  Gemm(false, false, N, C, V, 1.0f, dlogits, V, wte, C, 0.0f, dsmall, C);
  if (base) Gemm(true, false, V, C, N, 1.0f, dlogits, V, lnf, C, 1.0f, g + wte_offset_, C);
  const float* last =
      (config_.n_layer > 0 ? a.layers.back().res3 : a.encoded) + row0 * C;
  std::memset(dres, 0, sizeof(float) * N * C);
  LayerNormBackward(dres, base ? g + lnf_w_offset_ : nullptr, base ? g + lnf_b_offset_ : nullptr,
                    dsmall, last, params_.data() + lnf_w_offset_, a.lnf_mean + row0, a.lnf_rstd + row0, N,
                    C);

  for (int l = config_.n_layer - 1; l >= 0; --l) {
    Activations::Layer& L = a.layers[l];
    const BlockWeights w = block(l);
    const std::vector<size_t>& o = block_offsets_[l];
    const float* residual = (l == 0 ? a.encoded : a.layers[l - 1].res3) + row0 * C;
    const float* fch = L.fch + row0 * 4 * C;
    const float* fch_gelu = L.fch_gelu + row0 * 4 * C;
    const float* ln2 = L.ln2 + row0 * C;
    const float* res2 = L.res2 + row0 * C;
    const float* atty = L.atty + row0 * C;
    const float* qkv = L.qkv + row0 * 3 * C;
    const float* ln1 = L.ln1 + row0 * C;
    // MLP, in reverse: res3 = res2 + c_proj(gelu(c_fc(ln2(res2)))).
    LinearBwd(Linear(l, kFcProj, g, gl), dbig, dres, fch_gelu, N, row0 * r);  // d fch_gelu
    GeluBackward(dbig2, fch, dbig, static_cast<size_t>(N) * 4 * C);          // d fch
    LinearBwd(Linear(l, kFc, g, gl), dsmall, dbig2, ln2, N, row0 * r);        // d ln2
    LayerNormBackward(dres, base ? g + o[kLn2W] : nullptr, base ? g + o[kLn2B] : nullptr, dsmall,
                      res2, w.ln2_w, L.ln2_mean + row0, L.ln2_rstd + row0, N, C);  // d res2
    // Attention, in reverse: res2 = residual + c_proj(attn(c_attn(ln1(residual)))).
    LinearBwd(Linear(l, kAttnProj, g, gl), dsmall, dres, atty, N, row0 * r);  // d atty
    AttentionBackward(dqkv, dsmall, qkv, L.att + static_cast<size_t>(b0) * NH * T * T, nb, T, C,
                      NH);                                                      // d qkv
    LinearBwd(Linear(l, kQkv, g, gl), dsmall, dqkv, ln1, N, row0 * r);        // d ln1
    LayerNormBackward(dres, base ? g + o[kLn1W] : nullptr, base ? g + o[kLn1B] : nullptr, dsmall,
                      residual, w.ln1_w, L.ln1_mean + row0, L.ln1_rstd + row0, N, C);  // d input
  }
  if (base) {
    EmbeddingBackward(g + wte_offset_, g + wpe_offset_, dres,
                      a.tokens.data() + row0, nb, T, C);
  }
}

}  // namespace tandem

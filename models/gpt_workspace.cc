#include "models/gpt_workspace.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <omp.h>

#include "models/attention.h"
#include "models/cross_entropy.h"
#include "models/embedding.h"
#include "models/gelu.h"
#include "models/gemm.h"
#include "models/layernorm.h"
#include "models/linear.h"

namespace tandem {

using W = GptWeights;

namespace {

// Buffers are carved 64-byte aligned: Eigen's vectorised reductions (the softmax's max and sum)
// start their packets at the first aligned element, so an arbitrary malloc address would make
// the low bits of a result depend on where a buffer happened to land.
size_t Align16(size_t floats) { return (floats + 15) & ~size_t{15}; }
float* AlignedStart(float* p) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  return p + ((64 - addr % 64) % 64) / sizeof(float);
}

}  // namespace

// Activations of one Forward, kept for Backward, plus gradient scratch. One arena. Per block,
// A = attn_width(l), NH = heads(l), M = mlp_width(l); Amax, Mmax are their largest values.
struct GptWorkspace::Activations {
  int B = 0, T = 0;
  int lora_rank = 0;  // adapters' rank the arena was carved for (0: none)
  std::vector<float> arena;
  std::vector<int32_t> tokens, targets;  // (B,T) copies of the last inputs

  float* encoded;  // (N,C)
  struct Layer {
    float *ln1, *ln1_mean, *ln1_rstd;  // (N,C) (N) (N)
    float* qkv;                        // (N,3A)
    float* att;                        // (B,NH,T,T)
    float* atty;                       // (N,A)
    float* res2;                       // (N,C) residual after attention
    float *ln2, *ln2_mean, *ln2_rstd;  // (N,C) (N) (N)
    float* fch;                        // (N,M)
    float* fch_gelu;                   // (N,M)
    float* res3;                       // (N,C) residual after the MLP: the block's output
    float* lora_xa[W::kNumLinear];     // (N,r) per adapted linear, or null
  };
  std::vector<Layer> layers;
  float *lnf, *lnf_mean, *lnf_rstd;  // (N,C) (N) (N)
  float* logits;                     // (N,V)
  float* probs;                      // (N,V); dlogits in place during Backward
  float* losses;                     // (N)
  // Gradient scratch, reused by every layer.
  float* dres;    // (N,C) gradient of the residual stream
  float* dbig;    // (N,Mmax)
  float* dbig2;   // (N,Mmax)
  float* dqkv;    // (N,3Amax)
  float* dsmall;  // (N,max(C,Amax))
  float* dxa;     // (N,r)
  // Gradient buffers of shards 1.. (shard 0 uses the workspace's own), added in after Backward.
  std::vector<std::vector<float>> shard_grads, shard_lora_grads;
};

// Buffers of cached decoding: the cache holds every fed position's q, k and v (the c_attn
// output) per block; the rest is scratch for up to `rows` tokens per Decode.
struct GptWorkspace::DecodeState {
  int rows = 0;
  int lora_rank = 0;
  std::vector<float> cache;      // per block (context,3A), blocks one after another
  std::vector<size_t> cache_at;  // offset of each block's cache
  std::vector<float> scratch;
  float *x, *ln, *mean, *rstd;  // (k,C) (k,C) (k) (k)
  float* atty;                  // (k,Amax)
  float* att;                   // (NHmax,k,context)
  float *fch, *fch_gelu;        // (k,Mmax)
  float* logits;                // (k,V)
  float* xa;                    // (k,r) adapters' inp @ A, overwritten by every linear
};

struct GptWorkspace::LinearSlot {
  const float* w;
  const float* b;
  float* dw;  // null: frozen
  float* db;
  int in, out;
  const float* lora_a = nullptr;
  const float* lora_b = nullptr;
  float* lora_da = nullptr;  // null: adapters frozen
  float* lora_db = nullptr;
  float* lora_xa = nullptr;  // (N,r): where the forward keeps inp @ A
};

GptWorkspace::GptWorkspace(std::shared_ptr<const GptWeights> weights)
    : weights_(std::move(weights)) {
  TANDEM_CHECK(weights_ != nullptr);
  set_trainable(weights_->has_lora() ? Trainable::AdaptersOnly()
                                     : Trainable::All(weights_->layout()));
}

GptWorkspace::~GptWorkspace() = default;

void GptWorkspace::set_trainable(const Trainable& trainable) {
  const ParamLayout& layout = weights_->layout();
  TANDEM_CHECK(!trainable.any_base() || trainable.layout_tensors() == layout.tensors().size());
  trainable_ = trainable;
  // Resolve per tensor once, so Backward does no lookups.
  const ModelConfig& c = weights_->config();
  auto trains = [&](size_t offset) {
    for (const ParamRange& r : trainable_.ranges()) {
      if (offset >= r.begin && offset < r.end) return true;
    }
    return false;
  };
  train_block_.assign(c.n_layer, std::vector<char>(W::kNumBlockTensors, 0));
  lowest_trained_layer_ = c.n_layer;
  for (int l = c.n_layer - 1; l >= 0; --l) {
    for (int k = 0; k < W::kNumBlockTensors; ++k) {
      train_block_[l][k] = trains(weights_->block_offset(l, k));
      if (train_block_[l][k]) lowest_trained_layer_ = l;
    }
  }
  train_wte_ = trains(weights_->wte_offset());
  train_wpe_ = trains(weights_->wpe_offset());
  train_lnf_w_ = trains(weights_->lnf_w_offset());
  train_lnf_b_ = trains(weights_->lnf_b_offset());
  if (train_wte_ || train_wpe_) lowest_trained_layer_ = 0;
}

std::span<float> GptWorkspace::grads() {
  EnsureGrads();
  return grads_;
}

float* GptWorkspace::grad(const std::string& name) {
  const TensorSpec* t = weights_->layout().Find(name);
  TANDEM_CHECK(t != nullptr);
  EnsureGrads();
  return grads_.data() + t->offset;
}

std::span<float> GptWorkspace::lora_grads() {
  TANDEM_CHECK(weights_->has_lora());
  EnsureGrads();
  return lora_grads_;
}

void GptWorkspace::EnsureGrads() {
  if (grads_.size() != weights_->layout().total()) grads_.assign(weights_->layout().total(), 0.0f);
  const size_t nl = weights_->has_lora() ? weights_->lora_layout().total() : 0;
  if (lora_grads_.size() != nl) lora_grads_.assign(nl, 0.0f);
}

void GptWorkspace::ZeroGrad() {
  EnsureGrads();
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  std::fill(lora_grads_.begin(), lora_grads_.end(), 0.0f);
}

// --- Linear layers with optional adapters ------------------------------------------------

GptWorkspace::LinearSlot GptWorkspace::Linear(int layer, int kind, float* g, float* gl,
                                              float* xa) const {
  const GptWeights& w = *weights_;
  const size_t wo = w.block_offset(layer, W::LinearWeight(kind));
  const size_t bo = w.block_offset(layer, W::LinearBias(kind));
  const float* p = w.params().data();
  LinearSlot s{p + wo,
               p + bo,
               g != nullptr && train_block_[layer][W::LinearWeight(kind)] ? g + wo : nullptr,
               g != nullptr && train_block_[layer][W::LinearBias(kind)] ? g + bo : nullptr,
               w.linear_in(layer, kind),
               w.linear_out(layer, kind)};
  if (w.has_lora() && !w.lora_merged()) {
    const size_t a = w.lora_a_offset(layer, kind);
    if (a != SIZE_MAX) {
      const size_t b = w.lora_b_offset(layer, kind);
      const float* lp = w.lora_params().data();
      s.lora_a = lp + a;
      s.lora_b = lp + b;
      if (gl != nullptr) {
        s.lora_da = gl + a;
        s.lora_db = gl + b;
      }
      s.lora_xa = xa;
    }
  }
  return s;
}

void GptWorkspace::LinearFwd(const LinearSlot& s, float* out, const float* inp, int N,
                             bool accumulate) const {
  LinearForward(out, inp, s.w, s.b, N, s.in, s.out, accumulate);
  if (s.lora_a != nullptr) {
    const LoraConfig& lc = weights_->lora_config();
    LoraForward(out, s.lora_xa, inp, s.lora_a, s.lora_b, N, s.in, lc.rank, s.out, lc.scale());
  }
}

void GptWorkspace::LinearBwd(const LinearSlot& s, float* dinp, const float* dout,
                             const float* inp, int N, float* dxa) const {
  LinearBackward(dinp, s.dw, s.db, dout, inp, s.w, N, s.in, s.out);
  if (s.lora_a != nullptr) {
    const LoraConfig& lc = weights_->lora_config();
    LoraBackward(dinp, s.lora_da, s.lora_db, dxa, dout, inp, s.lora_xa, s.lora_a, s.lora_b, N,
                 s.in, lc.rank, s.out, lc.scale());
  }
}

// --- Forward ------------------------------------------------------------------------------

void GptWorkspace::EnsureActivations(int B, int T) {
  const int rank = weights_->has_lora() ? weights_->lora_config().rank : 0;
  if (acts_ && acts_->B == B && acts_->T == T && acts_->lora_rank == rank) return;
  const ModelConfig& c = weights_->config();
  const size_t N = static_cast<size_t>(B) * T;
  const size_t C = c.d_model, V = c.vocab;
  const size_t Amax = c.max_attn_width(), Mmax = c.max_mlp_width();
  const size_t r = static_cast<size_t>(rank);
  auto a = std::make_unique<Activations>();
  a->B = B;
  a->T = T;
  a->lora_rank = rank;
  a->tokens.resize(N);
  a->targets.resize(N);
  a->layers.resize(c.n_layer);

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
    for (int l = 0; l < c.n_layer; ++l) {
      auto& L = a->layers[l];
      const size_t A = c.attn_width(l), NH = c.heads(l), M = c.mlp_width(l);
      L.ln1 = take(N * C);
      L.ln1_mean = take(N);
      L.ln1_rstd = take(N);
      L.qkv = take(N * 3 * A);
      L.att = take(static_cast<size_t>(B) * NH * T * T);
      L.atty = take(N * A);
      L.res2 = take(N * C);
      L.ln2 = take(N * C);
      L.ln2_mean = take(N);
      L.ln2_rstd = take(N);
      L.fch = take(N * M);
      L.fch_gelu = take(N * M);
      L.res3 = take(N * C);
      for (int k = 0; k < W::kNumLinear; ++k) L.lora_xa[k] = r > 0 ? take(N * r) : nullptr;
    }
    a->lnf = take(N * C);
    a->lnf_mean = take(N);
    a->lnf_rstd = take(N);
    a->logits = take(N * V);
    a->probs = take(N * V);
    a->losses = take(N);
    a->dres = take(N * C);
    a->dbig = take(N * Mmax);
    a->dbig2 = take(N * Mmax);
    a->dqkv = take(N * 3 * Amax);
    a->dsmall = take(N * std::max(C, Amax));
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

float GptWorkspace::Forward(const int32_t* tokens, const int32_t* targets, int B, int T) {
  const ModelConfig& c = weights_->config();
  TANDEM_CHECK(B > 0 && T > 0 && T <= c.context);
  const int V = c.vocab;
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

GptWorkspace::BlockActivations GptWorkspace::block_activations(int layer) const {
  TANDEM_CHECK(acts_ != nullptr && layer >= 0 && layer < config().n_layer);
  const Activations::Layer& L = acts_->layers[layer];
  return {layer == 0 ? acts_->encoded : acts_->layers[layer - 1].res3,
          L.ln1, L.atty, L.ln2, L.fch_gelu, L.res3};
}

int GptWorkspace::NumShards(int B) const {
  return std::max(1, std::min(B, omp_get_max_threads()));
}

void GptWorkspace::ForwardShard(int b0, int nb, double* loss_sum, int* count) {
  const GptWeights& w = *weights_;
  const ModelConfig& c = w.config();
  const int T = T_, C = c.d_model, V = c.vocab, HD = c.head_dim();
  const int N = nb * T;
  const size_t row0 = static_cast<size_t>(b0) * T;  // first row of this shard
  const size_t r = static_cast<size_t>(acts_->lora_rank);
  Activations& a = *acts_;
  const int32_t* tokens = a.tokens.data() + row0;

  float* encoded = a.encoded + row0 * C;
  const float* p = w.params().data();
  EmbeddingForward(encoded, tokens, p + w.wte_offset(), p + w.wpe_offset(), nb, T, C);
  const float* residual = encoded;
  for (int l = 0; l < c.n_layer; ++l) {
    Activations::Layer& L = a.layers[l];
    const BlockWeights bw = w.block(l);
    const int A = c.attn_width(l), NH = c.heads(l), M = c.mlp_width(l);
    float* ln1 = L.ln1 + row0 * C;
    float* qkv = L.qkv + row0 * 3 * A;
    float* atty = L.atty + row0 * A;
    float* res2 = L.res2 + row0 * C;
    float* ln2 = L.ln2 + row0 * C;
    float* fch = L.fch + row0 * M;
    float* fch_gelu = L.fch_gelu + row0 * M;
    float* res3 = L.res3 + row0 * C;
    auto xa = [&](int k) { return L.lora_xa[k] ? L.lora_xa[k] + row0 * r : nullptr; };
    LayerNormForward(ln1, L.ln1_mean + row0, L.ln1_rstd + row0, residual, bw.ln1_w, bw.ln1_b, N,
                     C);
    LinearFwd(Linear(l, W::kQkv, nullptr, nullptr, xa(W::kQkv)), qkv, ln1, N, false);
    AttentionForward(atty, L.att + static_cast<size_t>(b0) * NH * T * T, qkv, nb, T, NH, HD);
    std::memcpy(res2, residual, sizeof(float) * N * C);
    LinearFwd(Linear(l, W::kAttnProj, nullptr, nullptr, xa(W::kAttnProj)), res2, atty, N,
              /*accumulate=*/true);
    LayerNormForward(ln2, L.ln2_mean + row0, L.ln2_rstd + row0, res2, bw.ln2_w, bw.ln2_b, N, C);
    LinearFwd(Linear(l, W::kFc, nullptr, nullptr, xa(W::kFc)), fch, ln2, N, false);
    GeluForward(fch_gelu, fch, static_cast<size_t>(N) * M);
    std::memcpy(res3, res2, sizeof(float) * N * C);
    LinearFwd(Linear(l, W::kFcProj, nullptr, nullptr, xa(W::kFcProj)), res3, fch_gelu, N,
              /*accumulate=*/true);
    residual = res3;
  }
  float* lnf = a.lnf + row0 * C;
  float* logits = a.logits + row0 * V;
  LayerNormForward(lnf, a.lnf_mean + row0, a.lnf_rstd + row0, residual, p + w.lnf_w_offset(),
                   p + w.lnf_b_offset(), N, C);
  // Tied head: logits (N,V) = lnf (N,C) @ wte^T.
  Gemm(false, true, N, V, C, 1.0f, lnf, C, p + w.wte_offset(), C, 0.0f, logits, V);
  if (has_targets_) {
    const float mean = CrossEntropyForward(a.probs + row0 * V, a.losses + row0, logits,
                                           a.targets.data() + row0, N, V, count);
    *loss_sum = static_cast<double>(mean) * *count;
  }
}

const float* GptWorkspace::logits() const {
  TANDEM_CHECK(acts_ != nullptr);
  return acts_->logits;
}

const float* GptWorkspace::losses() const {
  TANDEM_CHECK(acts_ != nullptr && has_targets_);
  return acts_->losses;
}

// --- Backward -----------------------------------------------------------------------------

void GptWorkspace::Backward() {
  TANDEM_CHECK(acts_ != nullptr && has_targets_);
  const int N = B_ * T_;
  CrossEntropyBackward(acts_->probs, acts_->probs, acts_->targets.data(), N,
                       weights_->config().vocab, loss_count_);
  BackwardFromLogits(acts_->probs);
}

void GptWorkspace::BackwardFromLogits(const float* dlogits) { BackwardFromLogits(dlogits, {}); }

void GptWorkspace::BackwardFromLogits(const float* dlogits, std::span<const HiddenGrad> hidden) {
  TANDEM_CHECK(acts_ != nullptr);
  for (const HiddenGrad& h : hidden) {
    TANDEM_CHECK(h.layer >= 0 && h.layer < weights_->config().n_layer && h.d != nullptr);
  }
  // The arena must match the weights' adapters (enabled after the last Forward?).
  TANDEM_CHECK(acts_->lora_rank == (weights_->has_lora() ? weights_->lora_config().rank : 0));
  EnsureGrads();
  Activations& a = *acts_;
  const bool adapters = weights_->has_lora() && trainable_.adapters();
  // Merged adapters receive no gradient: unmerge to train them.
  TANDEM_CHECK(!(adapters && weights_->lora_merged()));
  const int B = B_;
  const int shards = NumShards(B);
  float* lora_g = adapters ? lora_grads_.data() : nullptr;
  if (shards == 1) {
    BackwardShard(0, B, dlogits, hidden, grads_.data(), lora_g);
    return;
  }
  // Shard 0 accumulates into grads_; the others into their own buffers, added in at the end.
  // Buffers are sized here, before the parallel region, whatever the team size turns out to be.
  const size_t P = trainable_.any_base() ? grads_.size() : 0;
  const size_t PL = adapters ? lora_grads_.size() : 0;
  const std::vector<ParamRange>& ranges = trainable_.ranges();
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
    float* gl = lora_g;
    if (s > 0) {
      auto& mine = a.shard_grads[s - 1];
      auto& mine_lora = a.shard_lora_grads[s - 1];
      // Only trainable ranges are written, so only they need clearing.
      if (P > 0) {
        for (const ParamRange& r : ranges) {
          std::fill(mine.begin() + r.begin, mine.begin() + r.end, 0.0f);
        }
      }
      std::fill(mine_lora.begin(), mine_lora.end(), 0.0f);
      g = P > 0 ? mine.data() : nullptr;
      gl = adapters ? mine_lora.data() : nullptr;
    }
    BackwardShard(b0, b1 - b0, dlogits, hidden, g, gl);
  }
  // Add the other shards' gradients in, element by element in shard order.
  float* grads = grads_.data();
  if (P > 0) {
    for (const ParamRange& r : ranges) {
      const long begin = static_cast<long>(r.begin), end = static_cast<long>(r.end);
#pragma omp parallel for schedule(static)
      for (long i = begin; i < end; ++i) {
        for (int o = 0; o < shards - 1; ++o) grads[i] += a.shard_grads[o][i];
      }
    }
  }
  if (PL > 0) {
    const long nl = static_cast<long>(PL);
    float* lgrads = lora_grads_.data();
#pragma omp parallel for schedule(static)
    for (long i = 0; i < nl; ++i) {
      for (int o = 0; o < shards - 1; ++o) lgrads[i] += a.shard_lora_grads[o][i];
    }
  }
}

// g: this shard's base gradient buffer (null when no base tensor trains); gl: its adapters'
// (null when they do not train).
void GptWorkspace::BackwardShard(int b0, int nb, const float* dlogits_all,
                                 std::span<const HiddenGrad> hidden, float* g, float* gl) {
  const GptWeights& w = *weights_;
  const ModelConfig& c = w.config();
  Activations& a = *acts_;
  const int T = T_, N = nb * T;
  const int C = c.d_model, V = c.vocab, HD = c.head_dim();
  const size_t row0 = static_cast<size_t>(b0) * T;
  const size_t r = static_cast<size_t>(a.lora_rank);
  const float* p = w.params().data();
  const float* wte = p + w.wte_offset();
  auto gp = [&](bool trains, size_t offset) { return g != nullptr && trains ? g + offset : nullptr; };
  const float* dlogits = dlogits_all + row0 * V;
  float* dres = a.dres + row0 * C;
  float* dxa = a.dxa + row0 * r;
  const float* lnf = a.lnf + row0 * C;

  // dsmall holds (N,C) or (N,A) by turns: each shard owns rows of the widest, S floats each.
  const size_t S = std::max(C, c.max_attn_width());
  const size_t Amax = c.max_attn_width(), Mmax = c.max_mlp_width();
  // Tied head: dlnf (N,C) = dlogits @ wte; dwte (V,C) += dlogits^T @ lnf.
  float* dsmall = a.dsmall + row0 * S;
  Gemm(false, false, N, C, V, 1.0f, dlogits, V, wte, C, 0.0f, dsmall, C);
  if (float* dwte = gp(train_wte_, w.wte_offset())) {
    Gemm(true, false, V, C, N, 1.0f, dlogits, V, lnf, C, 1.0f, dwte, C);
  }
  const float* last = a.layers.back().res3 + row0 * C;
  std::memset(dres, 0, sizeof(float) * N * C);
  LayerNormBackward(dres, gp(train_lnf_w_, w.lnf_w_offset()), gp(train_lnf_b_, w.lnf_b_offset()),
                    dsmall, last, p + w.lnf_w_offset(), a.lnf_mean + row0, a.lnf_rstd + row0, N,
                    C);

  // Nothing below the lowest trainable block needs a gradient (adapters sit in every block).
  const int floor = gl != nullptr ? 0 : lowest_trained_layer_;
  for (int l = c.n_layer - 1; l >= floor; --l) {
    Activations::Layer& L = a.layers[l];
    const BlockWeights bw = w.block(l);
    const std::vector<char>& train = train_block_[l];
    // dres is d(loss)/d(this block's output) here: add what the loss has on it directly.
    for (const HiddenGrad& h : hidden) {
      if (h.layer != l) continue;
      const float* d = h.d + row0 * C;
      for (size_t i = 0; i < static_cast<size_t>(N) * C; ++i) dres[i] += d[i];
    }
    const int A = c.attn_width(l), NH = c.heads(l), M = c.mlp_width(l);
    // Shards are not in step (one may be a block below another), so each owns rows of the
    // widest block's scratch; this block's (N,M), (N,3A) ... sit at the start of them.
    float* dsmall_c = a.dsmall + row0 * S;  // (N,C)
    float* dsmall_a = a.dsmall + row0 * S;  // (N,A), used after dsmall_c is consumed
    float* dbig = a.dbig + row0 * Mmax;     // (N,M)
    float* dbig2 = a.dbig2 + row0 * Mmax;   // (N,M)
    float* dqkv = a.dqkv + row0 * 3 * Amax; // (N,3A)
    const float* residual = (l == 0 ? a.encoded : a.layers[l - 1].res3) + row0 * C;
    const float* fch = L.fch + row0 * M;
    const float* fch_gelu = L.fch_gelu + row0 * M;
    const float* ln2 = L.ln2 + row0 * C;
    const float* res2 = L.res2 + row0 * C;
    const float* atty = L.atty + row0 * A;
    const float* qkv = L.qkv + row0 * 3 * A;
    const float* ln1 = L.ln1 + row0 * C;
    auto slot = [&](int k) {
      return Linear(l, k, g, gl, L.lora_xa[k] ? L.lora_xa[k] + row0 * r : nullptr);
    };
    // MLP, in reverse: res3 = res2 + c_proj(gelu(c_fc(ln2(res2)))).
    LinearBwd(slot(W::kFcProj), dbig, dres, fch_gelu, N, dxa);         // d fch_gelu
    GeluBackward(dbig2, fch, dbig, static_cast<size_t>(N) * M);        // d fch
    LinearBwd(slot(W::kFc), dsmall_c, dbig2, ln2, N, dxa);             // d ln2
    LayerNormBackward(dres, gp(train[W::kLn2W], w.block_offset(l, W::kLn2W)),
                      gp(train[W::kLn2B], w.block_offset(l, W::kLn2B)), dsmall_c, res2, bw.ln2_w,
                      L.ln2_mean + row0, L.ln2_rstd + row0, N, C);     // d res2
    // Attention, in reverse: res2 = residual + c_proj(attn(c_attn(ln1(residual)))).
    LinearBwd(slot(W::kAttnProj), dsmall_a, dres, atty, N, dxa);       // d atty
    AttentionBackward(dqkv, dsmall_a, qkv, L.att + static_cast<size_t>(b0) * NH * T * T, nb, T,
                      NH, HD);                                          // d qkv
    LinearBwd(slot(W::kQkv), dsmall_c, dqkv, ln1, N, dxa);             // d ln1
    LayerNormBackward(dres, gp(train[W::kLn1W], w.block_offset(l, W::kLn1W)),
                      gp(train[W::kLn1B], w.block_offset(l, W::kLn1B)), dsmall_c, residual,
                      bw.ln1_w, L.ln1_mean + row0, L.ln1_rstd + row0, N, C);  // d input
  }
  if (floor == 0 && (train_wte_ || train_wpe_) && g != nullptr) {
    EmbeddingBackward(gp(train_wte_, w.wte_offset()), gp(train_wpe_, w.wpe_offset()), dres,
                      a.tokens.data() + row0, nb, T, C);
  }
}

// --- Cached decoding ----------------------------------------------------------------------

void GptWorkspace::Truncate(int position) {
  TANDEM_CHECK(position >= 0 && position <= pos_);
  pos_ = position;
}

void GptWorkspace::EnsureDecodeState(int rows, int rank) {
  const ModelConfig& c = weights_->config();
  const int C = c.d_model, V = c.vocab, ctx = c.context;
  if (!decode_ || decode_->rows < rows || decode_->lora_rank != rank) {
    // Keep the cache when only the scratch grows.
    auto d = std::make_unique<DecodeState>();
    if (decode_) {
      d->cache = std::move(decode_->cache);
      d->cache_at = std::move(decode_->cache_at);
    } else {
      size_t at = 0;
      for (int l = 0; l < c.n_layer; ++l) {
        d->cache_at.push_back(at);
        at += Align16(static_cast<size_t>(ctx) * 3 * c.attn_width(l));
      }
      d->cache.assign(at + 16, 0.0f);
    }
    const int n_rows = std::max(rows, decode_ ? decode_->rows : 1);
    d->rows = n_rows;
    d->lora_rank = rank;
    const size_t n = n_rows;
    const size_t sizes[] = {n * C, n * C, n, n, n * c.max_attn_width(),
                            static_cast<size_t>(c.max_heads()) * n * ctx, n * c.max_mlp_width(),
                            n * c.max_mlp_width(), n * V, std::max<size_t>(n * rank, 1)};
    float** ptrs[] = {&d->x,    &d->ln,  &d->mean,     &d->rstd,   &d->atty,
                      &d->att,  &d->fch, &d->fch_gelu, &d->logits, &d->xa};
    size_t total = 0;
    for (size_t s : sizes) total += Align16(s);
    d->scratch.assign(total + 16, 0.0f);
    float* base = AlignedStart(d->scratch.data());
    total = 0;
    for (size_t i = 0; i < std::size(sizes); ++i) {
      *ptrs[i] = base + total;
      total += Align16(sizes[i]);
    }
    decode_ = std::move(d);
  }
}

float* GptWorkspace::DecodeCache(int layer) {
  return AlignedStart(decode_->cache.data()) + decode_->cache_at[layer];
}

const float* GptWorkspace::Decode(const int32_t* tokens, int k) {
  const GptWeights& w = *weights_;
  const ModelConfig& c = w.config();
  const int C = c.d_model, V = c.vocab, HD = c.head_dim(), ctx = c.context;
  TANDEM_CHECK(k >= 1 && pos_ + k <= ctx);
  for (int i = 0; i < k; ++i) TANDEM_CHECK(tokens[i] >= 0 && tokens[i] < V);
  EnsureDecodeState(k, w.has_lora() && !w.lora_merged() ? w.lora_config().rank : 0);
  DecodeState& d = *decode_;
  const int p0 = pos_;
  const float* p = w.params().data();
  // The same layer kernels as Forward, on k rows of one sequence at positions [p0, p0 + k).
  EmbeddingForward(d.x, tokens, p + w.wte_offset(), p + w.wpe_offset() + static_cast<size_t>(p0) * C,
                   1, k, C);
  for (int l = 0; l < c.n_layer; ++l) {
    const BlockWeights bw = w.block(l);
    const int A = c.attn_width(l), NH = c.heads(l), M = c.mlp_width(l);
    // (context,3A): rows [0, p0) already cached.
    float* qkv = AlignedStart(d.cache.data()) + d.cache_at[l];
    LayerNormForward(d.ln, d.mean, d.rstd, d.x, bw.ln1_w, bw.ln1_b, k, C);
    LinearFwd(Linear(l, W::kQkv, nullptr, nullptr, d.xa), qkv + static_cast<size_t>(p0) * 3 * A,
              d.ln, k, false);
    AttentionForward(d.atty, d.att, qkv, 1, k, NH, HD, /*past=*/p0);
    LinearFwd(Linear(l, W::kAttnProj, nullptr, nullptr, d.xa), d.x, d.atty, k,
              /*accumulate=*/true);
    LayerNormForward(d.ln, d.mean, d.rstd, d.x, bw.ln2_w, bw.ln2_b, k, C);
    LinearFwd(Linear(l, W::kFc, nullptr, nullptr, d.xa), d.fch, d.ln, k, false);
    GeluForward(d.fch_gelu, d.fch, static_cast<size_t>(k) * M);
    LinearFwd(Linear(l, W::kFcProj, nullptr, nullptr, d.xa), d.x, d.fch_gelu, k,
              /*accumulate=*/true);
  }
  LayerNormForward(d.ln, d.mean, d.rstd, d.x, p + w.lnf_w_offset(), p + w.lnf_b_offset(), k, C);
  Gemm(false, true, k, V, C, 1.0f, d.ln, C, p + w.wte_offset(), C, 0.0f, d.logits, V);
  pos_ += k;
  return d.logits;
}

// --- Batched decoding ---------------------------------------------------------------------

// Buffers of one batched pass over N rows (all steps' rows, padded), as DecodeState's.
struct BatchDecoder::Scratch {
  int rows = 0, lora_rank = 0;
  std::vector<float> buffer;
  float *x, *ln, *mean, *rstd;  // (N,C) (N,C) (N) (N)
  float* qkv;                   // (N,3Amax) this pass's rows of c_attn, copied into the caches
  float* atty;                  // (N,Amax)
  float* scores;                // (context) one query's attention weights at a time
  float *fch, *fch_gelu;        // (N,Mmax)
  float *gelu_in, *gelu_out;    // (Mmax) one row, 64-byte aligned
  float* lora_tmp;              // (max(C,3Amax,Mmax)) one row's xa @ B
  float* logits;                // (N,V)
  float* xa;                    // (N,r)
};

namespace {

// Causal attention of the query at position `P` of one sequence, in one fixed order whatever
// else its pass holds: scores over positions [0, P] one dot product at a time, a scalar softmax,
// then the values added in position order. cache (context,3A) holds q, k, v of rows [0, P];
// out (A): heads concatenated; scores (P+1) scratch.
void AttendOne(float* out, float* scores, const float* cache, int P, int NH, int HD) {
  const int A = NH * HD;
  const size_t A3 = 3 * static_cast<size_t>(A);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  for (int h = 0; h < NH; ++h) {
    const float* q = cache + P * A3 + h * HD;
    float mx = -std::numeric_limits<float>::infinity();
    for (int j = 0; j <= P; ++j) {
      const float* k = cache + j * A3 + A + h * HD;
      float dot = 0.0f;
      for (int e = 0; e < HD; ++e) dot += q[e] * k[e];
      scores[j] = dot * scale;
      mx = std::max(mx, scores[j]);
    }
    float sum = 0.0f;
    for (int j = 0; j <= P; ++j) {
      scores[j] = std::exp(scores[j] - mx);
      sum += scores[j];
    }
    float* o = out + h * HD;
    std::fill(o, o + HD, 0.0f);
    for (int j = 0; j <= P; ++j) {
      const float p = scores[j] / sum;
      const float* v = cache + j * A3 + 2 * A + h * HD;
      for (int e = 0; e < HD; ++e) o[e] += p * v[e];
    }
  }
}

}  // namespace

BatchDecoder::BatchDecoder(std::shared_ptr<const GptWeights> weights)
    : weights_(std::move(weights)) {
  TANDEM_CHECK(weights_ != nullptr);
  const ModelConfig& c = weights_->config();
  columns_by_8_ = c.d_model % 8 == 0 && c.vocab % 8 == 0;
  for (int l = 0; l < c.n_layer; ++l) {
    columns_by_8_ = columns_by_8_ && (3 * c.attn_width(l)) % 8 == 0 && c.mlp_width(l) % 8 == 0;
  }
}

BatchDecoder::~BatchDecoder() = default;

std::span<const float* const> BatchDecoder::Decode(std::span<const Step> steps) {
  const GptWeights& w = *weights_;
  const ModelConfig& c = w.config();
  const int C = c.d_model, V = c.vocab, HD = c.head_dim(), ctx = c.context;
  const int rank = w.has_lora() && !w.lora_merged() ? w.lora_config().rank : 0;
  TANDEM_CHECK(!steps.empty());
  // Rows: step j's k_j rows from first_row_[j]; the total padded to a multiple of the kernel's
  // row block, so that the matrix products compute every row in a full block (header): 2 rows
  // when every product's column count is a multiple of 8, else 4.
  const size_t block = columns_by_8_ ? 2 : 4;
  first_row_.resize(steps.size());
  size_t n = 0;
  for (size_t j = 0; j < steps.size(); ++j) {
    const Step& s = steps[j];
    TANDEM_CHECK(s.workspace != nullptr && s.workspace->weights_.get() == weights_.get());
    TANDEM_CHECK(s.k >= 1 && s.workspace->pos_ + s.k <= ctx);
    for (int i = 0; i < s.k; ++i) TANDEM_CHECK(s.tokens[i] >= 0 && s.tokens[i] < V);
    for (size_t o = 0; o < j; ++o) TANDEM_CHECK(steps[o].workspace != s.workspace);
    first_row_[j] = n;
    n += s.k;
  }
  const int N = static_cast<int>((n + block - 1) / block * block);
  if (!scratch_ || scratch_->rows < N || scratch_->lora_rank != rank) {
    auto d = std::make_unique<Scratch>();
    d->rows = std::max(N, scratch_ ? scratch_->rows : 0);
    d->lora_rank = rank;
    const size_t r = d->rows, A = c.max_attn_width(), M = c.max_mlp_width();
    const size_t widest = std::max({static_cast<size_t>(C), 3 * A, M});
    const size_t sizes[] = {r * C, r * C, r, r, r * 3 * A, r * A, static_cast<size_t>(ctx),
                            r * M, r * M, M, M, widest, r * V, std::max<size_t>(r * rank, 1)};
    float** ptrs[] = {&d->x,      &d->ln,       &d->mean,     &d->rstd,     &d->qkv,
                      &d->atty,   &d->scores,   &d->fch,      &d->fch_gelu, &d->gelu_in,
                      &d->gelu_out, &d->lora_tmp, &d->logits, &d->xa};
    size_t total = 0;
    for (size_t s : sizes) total += Align16(s);
    d->buffer.assign(total + 16, 0.0f);
    float* base = AlignedStart(d->buffer.data());
    total = 0;
    for (size_t i = 0; i < std::size(sizes); ++i) {
      *ptrs[i] = base + total;
      total += Align16(sizes[i]);
    }
    scratch_ = std::move(d);
  }
  Scratch& d = *scratch_;
  const float* p = w.params().data();
  // Padding rows start at zero and stay finite; nothing reads their results.
  std::memset(d.x, 0, sizeof(float) * N * C);
  for (size_t j = 0; j < steps.size(); ++j) {
    GptWorkspace& ws = *steps[j].workspace;
    ws.EnsureDecodeState(1, rank);
    EmbeddingForward(d.x + first_row_[j] * C, steps[j].tokens, p + w.wte_offset(),
                     p + w.wpe_offset() + static_cast<size_t>(ws.pos_) * C, 1, steps[j].k, C);
  }
  // The linear layers' slots depend on the weights alone: any of the workspaces gives them.
  // out (N,out) = inp (N,in) @ w + b (+ out with accumulate), then the adapter's
  // scale * (inp @ A) @ B row by row in a fixed order (Eigen's products block by row count).
  const GptWorkspace& any = *steps[0].workspace;
  const float lora_scale = rank > 0 ? w.lora_config().scale() : 0.0f;
  auto linear = [&](int l, int kind, float* out, const float* inp, bool accumulate) {
    const GptWorkspace::LinearSlot s = any.Linear(l, kind, nullptr, nullptr, nullptr);
    LinearForward(out, inp, s.w, s.b, N, s.in, s.out, accumulate);
    if (s.lora_a == nullptr) return;
    for (int i = 0; i < N; ++i) {
      float* xa = d.xa + static_cast<size_t>(i) * rank;  // (r)
      const float* x = inp + static_cast<size_t>(i) * s.in;
      std::fill(xa, xa + rank, 0.0f);
      for (int c = 0; c < s.in; ++c) {
        for (int t = 0; t < rank; ++t) xa[t] += x[c] * s.lora_a[static_cast<size_t>(c) * rank + t];
      }
      float* tmp = d.lora_tmp;  // (out)
      std::fill(tmp, tmp + s.out, 0.0f);
      for (int t = 0; t < rank; ++t) {
        const float* b = s.lora_b + static_cast<size_t>(t) * s.out;
        for (int o = 0; o < s.out; ++o) tmp[o] += xa[t] * b[o];
      }
      float* y = out + static_cast<size_t>(i) * s.out;
      for (int o = 0; o < s.out; ++o) y[o] += lora_scale * tmp[o];
    }
  };
  for (int l = 0; l < c.n_layer; ++l) {
    const BlockWeights bw = w.block(l);
    const int A = c.attn_width(l), NH = c.heads(l), M = c.mlp_width(l);
    LayerNormForward(d.ln, d.mean, d.rstd, d.x, bw.ln1_w, bw.ln1_b, N, C);
    linear(l, W::kQkv, d.qkv, d.ln, false);
    std::memset(d.atty, 0, sizeof(float) * N * A);
    for (size_t j = 0; j < steps.size(); ++j) {
      GptWorkspace& ws = *steps[j].workspace;
      const int k = steps[j].k, p0 = ws.pos_;
      float* cache = ws.DecodeCache(l);  // (context,3A): rows [0, p0) already cached
      std::memcpy(cache + static_cast<size_t>(p0) * 3 * A, d.qkv + first_row_[j] * 3 * A,
                  sizeof(float) * k * 3 * A);
      for (int i = 0; i < k; ++i) {
        AttendOne(d.atty + (first_row_[j] + i) * A, d.scores, cache, p0 + i, NH, HD);
      }
    }
    linear(l, W::kAttnProj, d.x, d.atty, /*accumulate=*/true);
    LayerNormForward(d.ln, d.mean, d.rstd, d.x, bw.ln2_w, bw.ln2_b, N, C);
    linear(l, W::kFc, d.fch, d.ln, false);
    // Row by row from a 64-byte aligned start, so that the vectorised GELU treats every row
    // alike wherever it sits.
    std::memset(d.fch_gelu, 0, sizeof(float) * N * M);
    for (size_t j = 0; j < steps.size(); ++j) {
      for (size_t row = first_row_[j]; row < first_row_[j] + steps[j].k; ++row) {
        float* out = d.fch_gelu + row * M;
        const float* in = d.fch + row * M;
        if (M % 16 == 0) {  // every row is aligned already
          GeluForward(out, in, M);
          continue;
        }
        std::memcpy(d.gelu_in, in, sizeof(float) * M);
        GeluForward(d.gelu_out, d.gelu_in, M);
        std::memcpy(out, d.gelu_out, sizeof(float) * M);
      }
    }
    linear(l, W::kFcProj, d.x, d.fch_gelu, /*accumulate=*/true);
  }
  LayerNormForward(d.ln, d.mean, d.rstd, d.x, p + w.lnf_w_offset(), p + w.lnf_b_offset(), N, C);
  // Tied head: logits (N,V) = lnf (N,C) @ wte^T.
  Gemm(false, true, N, V, C, 1.0f, d.ln, C, p + w.wte_offset(), C, 0.0f, d.logits, V);
  logits_.resize(steps.size());
  for (size_t j = 0; j < steps.size(); ++j) {
    steps[j].workspace->pos_ += steps[j].k;
    logits_[j] = d.logits + first_row_[j] * V;
  }
  return logits_;
}

}  // namespace tandem

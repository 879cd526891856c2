// Everything a GPT computes with besides its weights (DESIGN.md "Models"; llama.cpp's context):
// activations kept for the backward pass, gradients, scratch, and a key/value cache for
// incremental decoding. Forward and backward are written by hand after llm.c's train_gpt2.c.
//
// Training: Forward (B,T) -> logits, Backward accumulates d(loss)/d(weights) into grads() (and
// lora_grads()) for the tensors trainable() selects. Activations are kept in an arena sized for
// the last (B,T), reallocated only when that shape changes, so a training step allocates nothing
// once warm. The batch is split into one shard of sequences per OpenMP thread; each shard has
// its own gradient buffer, so results are bit-for-bit the same whatever the scheduling.
//
// Decoding: Decode feeds k tokens of one sequence at the next positions of the cache and returns
// their k rows of logits, through the same layer kernels as Forward; Truncate rolls the cache
// back (rejected speculative drafts). Decoding uses its own buffers, so a workspace may decode
// between training steps without disturbing the activations Backward needs. BatchDecoder (below)
// advances several workspaces' sequences in one pass: one matrix product per linear layer over
// all their rows.
//
// Ownership: a workspace shares ownership of its weights and only reads them.
// Thread safety: a workspace is used by one thread at a time (its kernels use OpenMP inside).
// Different workspaces may run at once on the same weights, provided nothing writes the
// weights meanwhile (see gpt_weights.h).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "models/gpt_weights.h"
#include "models/trainable.h"

namespace tandem {

class GptWorkspace {
 public:
  // Trainable::All without adapters on the weights, AdaptersOnly with them.
  explicit GptWorkspace(std::shared_ptr<const GptWeights> weights);
  ~GptWorkspace();
  GptWorkspace(const GptWorkspace&) = delete;
  GptWorkspace& operator=(const GptWorkspace&) = delete;

  const GptWeights& weights() const { return *weights_; }
  const std::shared_ptr<const GptWeights>& shared_weights() const { return weights_; }
  const ModelConfig& config() const { return weights_->config(); }

  // What Backward computes gradients for. A set built from a layout must be built from
  // weights().layout().
  void set_trainable(const Trainable& trainable);
  const Trainable& trainable() const { return trainable_; }

  // --- Training and evaluation ------------------------------------------------------------
  // tokens (B,T) in [0, vocab), T <= context. targets (B,T) in [0, vocab) or -1 (ignored), or
  // null for inference. Returns the mean cross-entropy over non-ignored targets (0 if none or
  // null). logits() then holds (B,T,V).
  float Forward(const int32_t* tokens, const int32_t* targets, int B, int T);
  const float* logits() const;
  // (B*T) per-position losses of the last Forward with targets (0 where ignored).
  const float* losses() const;
  int loss_count() const { return loss_count_; }

  // One block's activations from the last Forward, (B*T, ...) row-major, valid until the next
  // Forward or Backward (Backward overwrites none of them): what probes of a model read, such as
  // the importance scores of prune/importance.h. Requires a Forward since the weights were set.
  struct BlockActivations {
    const float* input;     // (N,C) the residual stream entering the block
    const float* ln1;       // (N,C)
    const float* atty;      // (N,A) attention output, heads concatenated, before c_proj
    const float* ln2;       // (N,C)
    const float* fch_gelu;  // (N,M) MLP hidden activations, after the GELU
    const float* output;    // (N,C) the residual stream leaving the block
  };
  BlockActivations block_activations(int layer) const;

  // Gradients, laid out like weights().params() and weights().lora_params(). Tensors that are
  // not trainable keep whatever they held (zero after ZeroGrad).
  std::span<float> grads();
  std::span<const float> grads() const { return grads_; }
  float* grad(const std::string& name);
  std::span<float> lora_grads();
  std::span<const float> lora_grads() const { return lora_grads_; }
  void ZeroGrad();
  // Accumulates d(mean loss)/d(parameters). Requires the last Forward to have had targets.
  void Backward();
  // Accumulates gradients given dlogits (B,T,V) of any loss of the last Forward's logits (the
  // entry point for distillation losses).
  void BackwardFromLogits(const float* dlogits);
  // A loss's gradient with respect to one block's output: d (B,T,C), added to the residual
  // stream's gradient where that block's output enters the blocks above (what hidden-state
  // matching such as an emulator's alignment to its parent injects).
  struct HiddenGrad {
    int layer = 0;              // in [0, n_layer)
    const float* d = nullptr;   // (B,T,C) of the last Forward's shape
  };
  // BackwardFromLogits, plus the gradients `hidden` of the same loss at block outputs. Layers
  // below the lowest trained block receive theirs with nothing left to train.
  void BackwardFromLogits(const float* dlogits, std::span<const HiddenGrad> hidden);

  // --- Cached decoding --------------------------------------------------------------------
  // Feeds tokens[0..k) at positions [position(), position() + k) of one sequence and returns
  // their logits (k,V): row i predicts the token after tokens[i]. Requires k >= 1 and
  // position() + k <= context. The pointer is valid until the next Decode.
  const float* Decode(const int32_t* tokens, int k);
  // Tokens in the cache.
  int position() const { return pos_; }
  // Forgets positions [position, position()): the next Decode continues from `position`.
  void Truncate(int position);

 private:
  friend class BatchDecoder;
  struct Activations;
  struct DecodeState;
  struct LinearSlot;

  void EnsureGrads();
  void EnsureActivations(int B, int T);
  int NumShards(int B) const;
  void ForwardShard(int b0, int nb, double* loss_sum, int* count);
  void BackwardShard(int b0, int nb, const float* dlogits, std::span<const HiddenGrad> hidden,
                     float* g, float* gl);
  // A linear layer's weights and adapter; gradients point into g and gl (null: frozen), and the
  // adapter's inp @ A into xa.
  LinearSlot Linear(int layer, int kind, float* g, float* gl, float* xa) const;
  // The key/value cache, and Decode's scratch for at least `rows` rows, for adapters of `rank`.
  void EnsureDecodeState(int rows, int rank);
  // Block `layer`'s cache (context,3A): row t holds position t's q, k and v.
  float* DecodeCache(int layer);
  void LinearFwd(const LinearSlot& s, float* out, const float* inp, int N, bool accumulate) const;
  void LinearBwd(const LinearSlot& s, float* dinp, const float* dout, const float* inp, int N,
                 float* dxa) const;

  std::shared_ptr<const GptWeights> weights_;
  Trainable trainable_;
  // trainable_ resolved per tensor: [layer][BlockTensor], and the tensors outside the blocks.
  std::vector<std::vector<char>> train_block_;
  bool train_wte_ = false, train_wpe_ = false, train_lnf_w_ = false, train_lnf_b_ = false;
  // Backward stops after this block: nothing below it trains.
  int lowest_trained_layer_ = 0;

  std::vector<float> grads_;
  std::vector<float> lora_grads_;
  std::unique_ptr<Activations> acts_;
  int B_ = 0, T_ = 0;  // shape of the last Forward
  bool has_targets_ = false;
  int loss_count_ = 0;

  std::unique_ptr<DecodeState> decode_;
  int pos_ = 0;
};

// Cached decoding of several independent sequences in one pass (the cloud inference service's
// batch; llama.cpp's llama_batch over several sequences). Each sequence lives in a workspace of
// its own — its key/value cache and position — and a step feeds k_j tokens to workspace j. The
// rows of all steps go through every linear layer (c_attn, attention c_proj, c_fc, MLP c_proj,
// the tied head) as ONE matrix product of (sum of k_j) rows; attention runs per sequence against
// its own cache; layer norms and the GELU run per row.
//
// Bits. On one compute thread a row's logits are a function of its sequence's tokens alone: not
// of what else the batch holds, nor of how the sequence was split into steps (so a cache kept
// from an earlier request, rolled back with Truncate, continues with the bits a fresh one would
// compute). That takes three things Decode does not do:
// - Matrix products in full row blocks. OpenBLAS's sgemm (0.3.21, SkylakeX kernel, one thread)
//   computes rows in blocks of 16, 8, 4 and 2 in one summation order, and a lone last row — and,
//   when a product's column count is not a multiple of 8, a last pair — in others. Rows are
//   padded to a multiple of 2 (of 4 when some column count is not a multiple of 8); a pair costs
//   the kernel about what a lone row does.
// - Attention one query at a time in a fixed scalar order (Decode's Eigen products and softmax
//   block by the number of queries and the buffers' alignment).
// - The GELU row by row from an aligned start, and LoRA adapters' products row by row in a fixed
//   order (Eigen's products, which Decode uses for them, block by the row count).
// Against Decode the logits agree to 5e-7 on logits of scale 1 (5e-6 with large adapters;
// tests/models/batch_decode_test.cc).
// On several threads OpenBLAS splits the rows among them at other boundaries, and only that
// tolerance holds.
//
// Thread safety: one thread at a time uses a decoder and the workspaces it is given.
class BatchDecoder {
 public:
  // `weights`: what every workspace given to Decode must share (the same object).
  explicit BatchDecoder(std::shared_ptr<const GptWeights> weights);
  ~BatchDecoder();
  BatchDecoder(const BatchDecoder&) = delete;
  BatchDecoder& operator=(const BatchDecoder&) = delete;

  const GptWeights& weights() const { return *weights_; }

  struct Step {
    GptWorkspace* workspace = nullptr;  // on weights(); each workspace in one step at most
    const int32_t* tokens = nullptr;    // (k) in [0, vocab)
    int k = 0;                          // >= 1; workspace->position() + k <= context
  };
  // Feeds every step's tokens at its workspace's next positions (as workspace->Decode(tokens, k)
  // would) and returns, per step, its logits (k_j,V). Requires at least one step. The pointers
  // are valid until the next Decode.
  std::span<const float* const> Decode(std::span<const Step> steps);

 private:
  struct Scratch;
  std::shared_ptr<const GptWeights> weights_;
  bool columns_by_8_ = false;  // every product's column count is a multiple of 8
  std::unique_ptr<Scratch> scratch_;
  std::vector<size_t> first_row_;  // per step
  std::vector<const float*> logits_;  // per step
};

}  // namespace tandem

// Client-side pieces of the algorithms whose clients keep a model of their own that never leaves
// them (distill-up, fedmkt, distill-down with local SLMs): the own model for a task, its
// predictions on public windows (what goes up), and its scores on held-out data.
#pragma once

#include <cstdint>
#include <vector>

#include "client/context.h"
#include "data/public_windows.h"
#include "distill/ensemble.h"
#include "wire/message.h"

namespace tandem {

inline constexpr char kOwnEvalTask[] = "distill.eval";

// Checks that the task is for this client's architecture; the own model, made on first use
// (from the client's init weights, or fresh from `seed`).
StatusOr<Gpt*> OwnModelFor(ClientContext* context, const wire::TaskAssign& task, uint64_t seed);

// The model's probabilities at `temperature` on each window: (windows · T · V), window by window
// (distill/ensemble.h's mean-of-probabilities contribution).
std::vector<float> PredictWindows(Gpt& model, const PublicWindows& windows, float temperature);

// What the client uploads for the ensemble on the windows (N = windows · T positions): its
// probabilities (PredictWindows), its confidence contribution [w·p (N,V) | w (N)]
// (distill/confidence.h), or its votes for its top `vote_top_k` tokens (N,V) (distill/votes.h).
// InvalidArgument when vote_top_k is not in [1, V].
StatusOr<std::vector<float>> PredictUpload(Gpt& model, const PublicWindows& windows,
                                           float temperature, EnsembleUpload upload,
                                           int vote_top_k);

// "distill.eval": the own model on the client's own held-out records (own_val_loss, weighted by
// their tokens) and on every client's (all_val_loss). Parameters: eval_tokens, seed, model.
Status EvaluateOwnModel(ClientContext* context, const wire::TaskAssign& task,
                        wire::TaskResult* result);

}  // namespace tandem

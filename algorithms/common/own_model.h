// Client-side pieces of the algorithms whose clients keep a model of their own that never leaves
// them (distill-up, fedmkt, distill-down with local SLMs): the own model for a task, its
// predictions on public windows (what goes up), and its scores on held-out data.
#pragma once

#include <cstdint>
#include <vector>

#include "client/context.h"
#include "data/public_windows.h"
#include "wire/message.h"

namespace tandem {

inline constexpr char kOwnEvalTask[] = "distill.eval";

// Checks that the task is for this client's architecture; the own model, made on first use
// (from the client's init weights, or fresh from `seed`).
StatusOr<Gpt*> OwnModelFor(ClientContext* context, const wire::TaskAssign& task, uint64_t seed);

// The model's probabilities at `temperature` on each window: (windows · T · V), window by window
// (distill/ensemble.h's mean-of-probabilities contribution).
std::vector<float> PredictWindows(Gpt& model, const PublicWindows& windows, float temperature);

// "distill.eval": the own model on the client's own held-out records (own_val_loss, weighted by
// their tokens) and on every client's (all_val_loss). Parameters: eval_tokens, seed, model.
Status EvaluateOwnModel(ClientContext* context, const wire::TaskAssign& task,
                        wire::TaskResult* result);

}  // namespace tandem

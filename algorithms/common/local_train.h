// Local training as algorithms configure it and tasks carry it: the `[client]` section (how many
// steps, batch, learning rate...) read once on the coordinator, encoded into a task's parameters,
// and decoded and range-checked on the client. Both halves use these functions, so they cannot
// disagree about a parameter's name, type or range.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "wire/message.h"

namespace tandem {

class Config;

// The `[client]` section; task parameters carry the same names (docs/protocol.md "Tasks").
struct LocalTrainConfig {
  int64_t local_steps = 50;   // client.local_steps; or
  double local_epochs = 0.0;  // client.local_epochs: passes over the client's partition (> 0 wins)
  int batch = 16;             // client.batch
  double lr = 1e-3;           // client.lr (AdamW, fresh each round)
  double weight_decay = 0.0;  // client.weight_decay
  double grad_clip = 1.0;     // client.grad_clip (0 = off)
};

// Reads [client]; at least one of local_steps and local_epochs must be above 0.
StatusOr<LocalTrainConfig> LocalTrainConfigFromConfig(const Config& config);

// What a training task carries: the local training and the seed that, with the client's index
// and the round, fixes its batches (a replayed round is identical).
struct LocalTrainParams {
  LocalTrainConfig train;
  uint64_t seed = 1;

  void Encode(wire::Params* params) const;
  static StatusOr<LocalTrainParams> Decode(const wire::Params& params);
  // Steps to take over a partition of `tokens` tokens in (B,T) windows: local_steps, or
  // ceil(local_epochs · tokens / (B·T)) (at least 1) when local_epochs > 0.
  int64_t Steps(size_t tokens, int context) const;
};

}  // namespace tandem

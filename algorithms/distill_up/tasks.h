// The tasks of `distill-up` (FedDF), encoded and decoded by both halves:
//   "distill.up":   the client's own SLM trains on its data for the round (local training), then
//                   uploads its predictions on the public windows kd.windows (of kd.context
//                   tokens) as a contribution of weight 1, as kd.ensemble says (absent: "mean"):
//                     "mean"        its probabilities at kd.temperature, tensor "probs";
//                     "confidence"  w·p and w per position, tensor "confidence"
//                                   (distill/confidence.h);
//                     "votes"       a vote for its top kd.vote_top_k tokens per position, tensor
//                                   "votes" (distill/votes.h).
//   "distill.eval": the own SLM scored on the client's own and on all held-out records
//                   (algorithms/common/own_model.h).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "algorithms/common/local_train.h"
#include "core/status.h"
#include "distill/ensemble.h"
#include "models/model_config.h"
#include "wire/message.h"

namespace tandem {

inline constexpr char kDistillUpTask[] = "distill.up";

struct DistillUpTask {
  std::string model;              // the clients' architecture (ModelConfig::ToString)
  LocalTrainParams local;
  float temperature = 2.0f;       // kd.temperature of the uploaded probabilities
  std::vector<uint32_t> windows;  // kd.windows: public-stream offsets
  int context = 0;                // kd.context: the windows' length
  EnsembleUpload ensemble = EnsembleUpload::kMean;  // kd.ensemble (sent unless "mean")
  int vote_top_k = 1;             // kd.vote_top_k (sent with "votes")

  void Encode(wire::Params* params, std::vector<wire::Tensor>* tensors) const;
  // The windows are decoded against the client's public stream by DecodeWindows
  // (algorithms/common/task_parts.h); this reads the rest.
  static StatusOr<DistillUpTask> Decode(const wire::Params& params);
};

// The contribution's tensor name for an upload: "probs", "confidence" or "votes".
const char* EnsembleTensorName(EnsembleUpload upload);

}  // namespace tandem

// `tandem generate --draft DEVICE --cloud ENDPOINT --gamma N`: speculative decoding with the
// verifier in the cloud inference service (serve/remote.h RemoteVerifier). The device drafts in
// this process; every emitted token follows the served model's sampling distribution, and at
// temperature 0 the text is the served model's greedy text. Prints the text, then on stderr the
// acceptance statistics, the round trips and the bytes per token.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "route/speculative_command.h"
#include "train/commands.h"

namespace tandem::serve {

struct RemoteGenerateOptions {
  std::string endpoint;   // the service (`tandem serve` or a coordinator with serve.enabled)
  std::string keys_dir;   // CURVE keys: <keys>/client-<id>.key and <keys>/coordinator.pub
  int id = 0;
  uint32_t timeout_ms = 30000;  // per verification
};

Status RunRemoteSpeculativeGenerate(const GenerateOptions& options,
                                    const SpeculativeGenerateOptions& speculative,
                                    const RemoteGenerateOptions& remote);

}  // namespace tandem::serve

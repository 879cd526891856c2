// `tandem generate --draft CKPT --gamma N`: the checkpoint given with --checkpoint is the cloud
// (the verifier, in this process for now), the draft checkpoint the device; prints the text and
// then, on stderr, the acceptance statistics. apps/ only parses flags.
#pragma once

#include <string>

#include "core/status.h"
#include "route/speculative.h"
#include "train/commands.h"

namespace tandem {

struct SpeculativeGenerateOptions {
  std::string draft;  // the device's checkpoint (safetensors)
  int gamma = 4;
  float top_p = 1.0f;
};

// Errors: invalid options, unreadable checkpoints, vocabularies that differ or are not the byte
// tokenizer's, a prompt longer than the cloud's context.
Status RunSpeculativeGenerate(const GenerateOptions& options,
                              const SpeculativeGenerateOptions& speculative);

}  // namespace tandem

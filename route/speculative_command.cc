#include "route/speculative_command.h"

#include <cstdio>
#include <memory>
#include <vector>

#include "models/gpt_checkpoint.h"
#include "models/tokenizer.h"

namespace tandem {

Status RunSpeculativeGenerate(const GenerateOptions& options,
                              const SpeculativeGenerateOptions& speculative) {
  SpeculativeOptions spec;
  spec.gamma = speculative.gamma;
  spec.sampling = SamplingOptions{options.temperature, options.top_k, speculative.top_p};
  TANDEM_RETURN_IF_ERROR(spec.Validate());
  if (options.max_tokens < 1) return Status::InvalidArgument("--max-tokens must be >= 1");
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> cloud, LoadGpt(options.checkpoint));
  if (!options.lora.empty()) {
    TANDEM_RETURN_IF_ERROR(LoadLora(options.lora, cloud.get()));
    cloud->MergeLora();
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> device, LoadGpt(speculative.draft));
  for (const Gpt* m : {cloud.get(), device.get()}) {
    if (m->config().vocab != ByteTokenizer::kVocabSize) {
      return Status::InvalidArgument(
          std::string(m == cloud.get() ? "--checkpoint" : "--draft") + ": model vocabulary is " +
          std::to_string(m->config().vocab) + ", but tandem's byte tokenizer needs 256");
    }
  }
  std::vector<int32_t> prompt = {ByteTokenizer::kEndOfText};
  ByteTokenizer::EncodeAppend(options.prompt, &prompt);
  LocalVerifier verifier(cloud->shared_weights(), spec.sampling, options.seed ^ 0x5eed);
  SpeculativeDecoder decoder(device->shared_weights(), &verifier, spec);
  Rng rng(options.seed);
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> out,
                          decoder.Generate(prompt, options.max_tokens, rng));
  std::printf("%s%s\n", options.prompt.c_str(), ByteTokenizer::Decode(out).c_str());
  const SpeculativeStats& s = decoder.stats();
  std::fprintf(stderr,
               "speculative: gamma %d, drafted %lld, accepted %lld (acceptance %.3f), "
               "verifier calls %lld, %.2f tokens per call\n",
               spec.gamma, static_cast<long long>(s.drafted), static_cast<long long>(s.accepted),
               s.acceptance_rate(), static_cast<long long>(s.verifier_calls),
               s.tokens_per_call());
  return Status::Ok();
}

}  // namespace tandem

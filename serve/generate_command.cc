// `tandem generate --cloud`; see serve/generate_command.h.
#include "serve/generate_command.h"

#include <cstdio>
#include <memory>
#include <vector>

#include "core/timer.h"
#include "models/gpt_checkpoint.h"
#include "models/tokenizer.h"
#include "serve/remote.h"
#include "wire/transport_config.h"

namespace tandem::serve {

Status RunRemoteSpeculativeGenerate(const GenerateOptions& options,
                                    const SpeculativeGenerateOptions& speculative,
                                    const RemoteGenerateOptions& remote) {
  SpeculativeOptions spec;
  spec.gamma = speculative.gamma;
  spec.sampling = SamplingOptions{options.temperature, options.top_k, speculative.top_p};
  TANDEM_RETURN_IF_ERROR(spec.Validate());
  if (options.max_tokens < 1) return Status::InvalidArgument("--max-tokens must be >= 1");
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> device, LoadGpt(speculative.draft));
  if (device->config().vocab != ByteTokenizer::kVocabSize) {
    return Status::InvalidArgument("--draft: model vocabulary is " +
                                   std::to_string(device->config().vocab) +
                                   ", but tandem's byte tokenizer needs 256");
  }
  TANDEM_RETURN_IF_ERROR(wire::CheckCoordinatorAddress(remote.endpoint));
  // No config here: CURVE follows the endpoint (on for tcp://, off for ipc://), keys from --keys.
  wire::TransportConfig transport;
  transport.keys_dir = remote.keys_dir.empty() ? "keys" : remote.keys_dir;
  transport.curve = wire::CurveFor(transport, remote.endpoint);
  RemoteOptions ro;
  TANDEM_ASSIGN_OR_RETURN(ro.transport,
                          wire::ClientTransportOptions(transport, remote.endpoint, remote.id));
  ro.timeout = std::chrono::milliseconds(remote.timeout_ms);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<RemoteCloud> cloud, RemoteCloud::Connect(ro));
  if (cloud->info().vocab != device->config().vocab) {
    return Status::InvalidArgument("the service's model has vocabulary " +
                                   std::to_string(cloud->info().vocab) + ", the draft's " +
                                   std::to_string(device->config().vocab));
  }
  if (spec.gamma > cloud->info().max_gamma) {
    return Status::InvalidArgument("--gamma " + std::to_string(spec.gamma) +
                                   " exceeds the service's limit of " +
                                   std::to_string(cloud->info().max_gamma) + " (serve.max_gamma)");
  }
  std::vector<int32_t> prompt = {ByteTokenizer::kEndOfText};
  ByteTokenizer::EncodeAppend(options.prompt, &prompt);
  RemoteVerifier verifier(cloud.get(), spec.sampling, options.seed ^ 0x5eed);
  SpeculativeDecoder decoder(device->shared_weights(), &verifier, spec);
  Rng rng(options.seed);
  const wire::TransportStats before = cloud->transport_stats();
  Stopwatch watch;
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> out,
                          decoder.Generate(prompt, options.max_tokens, rng));
  const double seconds = watch.Seconds();
  const wire::TransportStats after = cloud->transport_stats();
  std::printf("%s%s\n", options.prompt.c_str(), ByteTokenizer::Decode(out).c_str());
  const SpeculativeStats& s = decoder.stats();
  const double bytes = static_cast<double>(after.bytes_sent - before.bytes_sent +
                                           after.bytes_received - before.bytes_received);
  std::fprintf(stderr,
               "speculative (remote): gamma %d, drafted %lld, accepted %lld (acceptance %.3f), "
               "round trips %lld, %.2f tokens per round trip, %.0f bytes per token, %.1f "
               "tokens/s\n",
               spec.gamma, static_cast<long long>(s.drafted), static_cast<long long>(s.accepted),
               s.acceptance_rate(), static_cast<long long>(s.verifier_calls), s.tokens_per_call(),
               s.generated > 0 ? bytes / s.generated : 0.0,
               seconds > 0 ? s.generated / seconds : 0.0);
  return Status::Ok();
}

}  // namespace tandem::serve

// `tandem ask`; see serve/ask.h.
#include "serve/ask.h"

#include <cstdio>

#include "core/config.h"
#include "core/timer.h"
#include "models/gpt_checkpoint.h"
#include "models/tokenizer.h"
#include "wire/transport_config.h"

namespace tandem::serve {

const char* AnswererName(Answerer who) {
  switch (who) {
    case Answerer::kDevice: return "device";
    case Answerer::kCloud: return "cloud";
    case Answerer::kDeviceAfterCap: return "device after cap";
    case Answerer::kDeviceAfterTimeout: return "device after timeout";
  }
  return "unknown";
}

StatusOr<AskResult> AskOne(std::shared_ptr<const GptWeights> device, std::string_view prompt,
                           int max_tokens, const SamplingOptions& sampling, Rng& rng,
                           HandOffCap& cap, RemoteCloud* cloud) {
  Stopwatch watch;
  AskResult out;
  bool cloud_failed = false;
  // The cloud's answer, or the device's own when the service cannot give one: a hand-off never
  // leaves the device without an answer.
  CloudAnswer answer_from_cloud = [&](std::string_view p) -> StatusOr<std::string> {
    if (cloud != nullptr) {
      CompleteRequest request;
      request.prompt = {ByteTokenizer::kEndOfText};
      ByteTokenizer::EncodeAppend(p, &request.prompt);
      request.max_tokens = max_tokens;
      request.sampling.temperature = 0.0f;
      request.stop = '\n';
      StatusOr<CompleteReply> reply = cloud->Complete(request);
      if (reply.ok()) return ParseCompletion(ByteTokenizer::Decode(reply->tokens)).answer;
      out.cloud_error = reply.status().message();
    } else {
      out.cloud_error = "no cloud";
    }
    cloud_failed = true;
    return FallbackAnswer(device, p, max_tokens, sampling, rng);
  };
  TANDEM_ASSIGN_OR_RETURN(RoutedAnswer routed, AnswerQuery(device, prompt, max_tokens, sampling,
                                                           rng, cap, answer_from_cloud));
  out.answer = std::move(routed.answer);
  out.completion = std::move(routed.completion);
  switch (routed.decision) {
    case RouteDecision::kAnswer: out.who = Answerer::kDevice; break;
    case RouteDecision::kHandOff:
      out.who = cloud_failed ? Answerer::kDeviceAfterTimeout : Answerer::kCloud;
      break;
    case RouteDecision::kHandOffRefused: out.who = Answerer::kDeviceAfterCap; break;
  }
  out.seconds = watch.Seconds();
  return out;
}

Status RunAsk(const Config& config, const AskOptions& options) {
  if (options.prompts.empty()) return Status::InvalidArgument("tandem ask: no prompts");
  if (options.max_tokens < 1) return Status::InvalidArgument("--max-tokens must be >= 1");
  HandOffBudget budget;
  budget.max_fraction = options.budget;
  TANDEM_RETURN_IF_ERROR(budget.Validate());
  SamplingOptions sampling;
  sampling.temperature = options.temperature;
  TANDEM_RETURN_IF_ERROR(sampling.Validate());
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> device, LoadGpt(options.checkpoint));
  if (device->config().vocab != ByteTokenizer::kVocabSize) {
    return Status::InvalidArgument("--checkpoint: the device's vocabulary is " +
                                   std::to_string(device->config().vocab) +
                                   ", but tandem's byte tokenizer needs 256");
  }
  TANDEM_ASSIGN_OR_RETURN(std::string name, config.GetString("name", "run"));
  TANDEM_ASSIGN_OR_RETURN(std::string out_dir, config.GetString("out_dir", "runs"));
  TANDEM_ASSIGN_OR_RETURN(wire::TransportConfig transport,
                          wire::TransportConfigFromConfig(config, out_dir + "/" + name));
  if (!options.keys_dir.empty()) transport.keys_dir = options.keys_dir;
  TANDEM_RETURN_IF_ERROR(wire::CheckCoordinatorAddress(options.connect));
  RemoteOptions remote;
  TANDEM_ASSIGN_OR_RETURN(remote.transport,
                          wire::ClientTransportOptions(transport, options.connect, options.id));
  remote.timeout = std::chrono::milliseconds(options.timeout_ms);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<RemoteCloud> cloud,
                          RemoteCloud::Connect(std::move(remote)));
  if (cloud->info().vocab != device->config().vocab) {
    return Status::InvalidArgument("the service's model has vocabulary " +
                                   std::to_string(cloud->info().vocab) + ", the device's " +
                                   std::to_string(device->config().vocab));
  }
  HandOffCap cap(budget);
  Rng rng(options.seed);
  int counts[4] = {0, 0, 0, 0};
  for (const std::string& prompt : options.prompts) {
    TANDEM_ASSIGN_OR_RETURN(AskResult r, AskOne(device->shared_weights(), prompt,
                                                options.max_tokens, sampling, rng, cap,
                                                cloud.get()));
    ++counts[static_cast<int>(r.who)];
    std::string shown = prompt;
    for (char& c : shown) if (c == '\n' || c == '\t') c = ' ';
    std::printf("%s\t%s\t%.1f ms\t%s\n", shown.c_str(), AnswererName(r.who), r.seconds * 1000.0,
                r.answer.c_str());
    std::fflush(stdout);
  }
  std::fprintf(stderr,
               "ask: %zu prompts: device %d, cloud %d, device after cap %d, device after "
               "timeout %d (budget %.3g)\n",
               options.prompts.size(), counts[0], counts[1], counts[2], counts[3], options.budget);
  return Status::Ok();
}

}  // namespace tandem::serve

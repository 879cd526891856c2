// `tandem ask`: a device answering prompts with its own model, handing off to the cloud
// inference service when its completion says so (route/handoff.h's marker) and the test-time
// cap allows, and answering itself when the cap refuses or the service does not reply in time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/rng.h"
#include "core/status.h"
#include "models/gpt_weights.h"
#include "route/handoff.h"
#include "route/sampling.h"
#include "serve/remote.h"

namespace tandem {
class Config;
}

namespace tandem::serve {

// Who answered one prompt.
enum class Answerer {
  kDevice,              // the device answered
  kCloud,               // the device handed off, within the budget, and the service answered
  kDeviceAfterCap,      // the device handed off over the budget and answered itself
  kDeviceAfterTimeout,  // the service did not answer in time (or refused): the device answered
};
const char* AnswererName(Answerer who);  // "device", "cloud", "device after cap", ...

struct AskResult {
  Answerer who = Answerer::kDevice;
  std::string answer;
  std::string completion;  // the device's first completion
  std::string cloud_error;  // why the service did not answer (kDeviceAfterTimeout)
  double seconds = 0.0;     // wall time of the whole query
};

// One prompt end to end (route/handoff.h AnswerQuery, with the cloud behind the service). The
// device decodes with `sampling`; the cloud answers greedily, up to max_tokens, its line as
// ParseCompletion reads it. A hand-off the service does not answer (timeout, refusal, lost
// session) falls back to the device's answer without the marker (FallbackAnswer). `cloud` may be
// null: every granted hand-off then falls back the same way.
StatusOr<AskResult> AskOne(std::shared_ptr<const GptWeights> device, std::string_view prompt,
                           int max_tokens, const SamplingOptions& sampling, Rng& rng,
                           HandOffCap& cap, RemoteCloud* cloud);

struct AskOptions {
  std::string connect;     // the service's endpoint
  std::string keys_dir;    // overrides federation.keys_dir
  int id = 0;              // this device's key: <keys>/client-<id>.key
  std::string checkpoint;  // the device model
  std::vector<std::string> prompts;
  double budget = 0.3;     // HandOffBudget::max_fraction
  int max_tokens = 16;
  uint32_t timeout_ms = 10000;  // how long a hand-off waits for the cloud
  uint64_t seed = 1;
  float temperature = 0.0f;  // the device's sampling (greedy by default)
};

// Prints, per prompt, one tab-separated line: the prompt, who answered, the latency in ms and
// the answer; then a summary on stderr.
Status RunAsk(const Config& config, const AskOptions& options);

}  // namespace tandem::serve

// Speculative decoding (route/speculative.h) against cloud-only decoding, measured in the same
// run: tokens/s of each, their ratio, the acceptance rate and tokens per verifier call, for
// γ ∈ {1, 2, 4, 8} and an injected delay per cloud call of 0, 5 and 50 ms standing in for the
// round trip to a remote cloud (cloud-only decoding pays it once per token, speculative decoding
// once per verification).
//
// Models: by default a cloud (slm-small, 1.8 M parameters) and a device (slm-micro, 0.1 M)
// trained here for a few hundred steps on the same arithmetic text ("512+309=821\n..."), so the
// device has learnt something of what the cloud would say; or checkpoints (--cloud, --draft).
// Both decode at the same temperature; the speculative output follows the cloud's distribution
// exactly, so the comparison is between two samplers of the same text distribution.
//
//   tandem_speculative_bench [--cloud CKPT --draft CKPT] [--train-steps 200] [--tokens 96]
//                            [--prompts 6] [--temperature 1] [--delays 0,5,50] [--gammas 1,2,4,8]
//                            [--threads 1] [--save DIR]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_models.h"
#include "core/threads.h"
#include "data/arithmetic.h"
#include "data/batcher.h"
#include "models/generate.h"
#include "models/gpt_checkpoint.h"
#include "models/tokenizer.h"
#include "route/speculative.h"
#include "train/local_trainer.h"

namespace tandem {
namespace {

using bench::Clock;
using bench::ParseList;
using bench::Seconds;

// A verifier behind a fixed delay per call: the stand-in for a network round trip.
class DelayedVerifier : public Verifier {
 public:
  DelayedVerifier(Verifier* inner, int delay_ms) : inner_(inner), delay_ms_(delay_ms) {}
  int vocab() const override { return inner_->vocab(); }
  int context_length() const override { return inner_->context_length(); }
  StatusOr<Verdict> Verify(std::span<const int32_t> context, std::span<const int32_t> draft,
                           std::span<const float> q) override {
    if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    return inner_->Verify(context, draft, q);
  }

 private:
  Verifier* inner_;
  int delay_ms_;
};

int Main(int argc, char** argv) {
  std::string cloud_path, draft_path, save_dir;
  int train_steps = 200, tokens = 96, prompts = 6, threads = 1;
  float temperature = 1.0f;
  std::vector<int> delays = {0, 5, 50}, gammas = {1, 2, 4, 8};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--cloud") cloud_path = next();
    else if (a == "--draft") draft_path = next();
    else if (a == "--save") save_dir = next();
    else if (a == "--train-steps") train_steps = std::atoi(next().c_str());
    else if (a == "--tokens") tokens = std::atoi(next().c_str());
    else if (a == "--prompts") prompts = std::atoi(next().c_str());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--temperature") temperature = std::strtof(next().c_str(), nullptr);
    else if (a == "--delays") delays = ParseList(next());
    else if (a == "--gammas") gammas = ParseList(next());
    else {
      std::fprintf(stderr, "unknown flag %s (see the comment at the top of speculative_bench.cc)\n",
                   a.c_str());
      return 2;
    }
  }
  // Training uses the cores this process may use; decoding one sequence at these sizes is
  // fastest on one thread (OpenMP's barriers cost more than the work, more so on a loaded host).
  SetComputeThreads(ComputeThreads());
  std::unique_ptr<Gpt> cloud, device;
  if (!bench::LoadOrTrainPair(cloud_path, draft_path, train_steps, &cloud, &device)) return 1;
  SetComputeThreads(threads);
  if (!save_dir.empty()) {
    TANDEM_CHECK(SaveGpt(save_dir + "/cloud.safetensors", *cloud).ok());
    TANDEM_CHECK(SaveGpt(save_dir + "/device.safetensors", *device).ok());
  }
  const int context = std::min(cloud->config().context, device->config().context);
  auto examples = MakeArithmeticExamples(3, prompts, 99);
  TANDEM_CHECK(examples.ok());
  std::vector<std::vector<int32_t>> prompt_tokens;
  for (const auto& e : *examples) {
    std::vector<int32_t> p = ByteTokenizer::Encode(e.prompt + e.answer + "\n");
    prompt_tokens.push_back(p);
  }
  const int max_new = std::min(tokens, context - static_cast<int>(prompt_tokens[0].size()) - 1);
  SamplingConfig plain;
  plain.temperature = temperature;
  plain.top_k = 0;
  const SamplingOptions sampling{temperature, 0, 1.0f};

  std::printf("\n%d prompts x up to %d new tokens, temperature %.2f, %d thread(s)\n", prompts,
              max_new, temperature, threads);
  std::printf("%-9s %-6s %12s %12s %8s %11s %15s\n", "delay_ms", "gamma", "tokens/s",
              "cloud tok/s", "ratio", "acceptance", "tokens/call");
  for (int delay : delays) {
    // Cloud alone: one forward pass, and one round trip, per token.
    Generator reference(*cloud);
    Rng rng(5);
    int64_t ref_tokens = 0;
    auto t0 = Clock::now();
    for (const auto& p : prompt_tokens) {
      reference.Reset();
      const float* logits = nullptr;
      for (int32_t t : p) logits = reference.Feed(t);
      for (int i = 0; i < max_new; ++i) {
        if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
        const int32_t next = SampleToken(logits, cloud->config().vocab, plain, rng);
        ++ref_tokens;
        if (next == ByteTokenizer::kEndOfText) break;
        logits = reference.Feed(next);
      }
    }
    const double ref_tps = ref_tokens / Seconds(t0, Clock::now());
    for (int gamma : gammas) {
      LocalVerifier local(cloud->shared_weights(), sampling, 7);
      DelayedVerifier verifier(&local, delay);
      SpeculativeDecoder decoder(device->shared_weights(), &verifier, {gamma, sampling});
      Rng drng(6);
      int64_t n = 0;
      t0 = Clock::now();
      for (const auto& p : prompt_tokens) {
        auto out = decoder.Generate(p, max_new, drng);
        TANDEM_CHECK(out.ok());
        n += static_cast<int64_t>(out->size());
      }
      const double tps = n / Seconds(t0, Clock::now());
      const SpeculativeStats& s = decoder.stats();
      std::printf("%-9d %-6d %12.1f %12.1f %8.2f %11.3f %15.2f\n", delay, gamma, tps, ref_tps,
                  tps / ref_tps, s.acceptance_rate(), s.tokens_per_call());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) { return tandem::Main(argc, argv); }

#include "train/commands.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "models/generate.h"
#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"
#include "models/tokenizer.h"
#include "train/data_setup.h"
#include "train/evaluate.h"
#include "train/proxy_tune.h"
#include "train/run_dir.h"

namespace tandem {

namespace fs = std::filesystem;
namespace {

StatusOr<std::unique_ptr<Gpt>> LoadModel(const std::string& checkpoint, const std::string& lora) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model, LoadGpt(checkpoint));
  if (model->config().vocab < ByteTokenizer::kVocabSize) {
    return Status::InvalidArgument(checkpoint + ": model vocabulary is " +
                                   std::to_string(model->config().vocab) +
                                   "; tandem's byte tokenizer needs at least 256");
  }
  if (!lora.empty()) {
    TANDEM_RETURN_IF_ERROR(LoadLora(lora, model.get()));
    model->MergeLora();
  }
  return model;
}

}  // namespace

Status RunEval(const Config& config, const std::string& checkpoint, const std::string& lora,
               int64_t max_tokens, int exact_match_per_category, const std::string& json_out,
               const ProxyEval& proxy) {
  TANDEM_ASSIGN_OR_RETURN(DataConfig data, DataConfigFromConfig(config));
  config.MarkUsed("");  // the rest of a training config is not needed here (all keys)
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model, LoadModel(checkpoint, lora));
  if (proxy.tuned.empty() != proxy.base.empty()) {
    return Status::InvalidArgument("proxy-tuning needs both --proxy-tuned and --proxy-base");
  }
  std::unique_ptr<Gpt> tuned, base;
  if (!proxy.tuned.empty()) {
    TANDEM_ASSIGN_OR_RETURN(tuned, LoadGpt(proxy.tuned));
    TANDEM_ASSIGN_OR_RETURN(base, LoadGpt(proxy.base));
    if (!(tuned->config() == base->config())) {
      return Status::InvalidArgument("--proxy-tuned holds " + tuned->config().ToString() +
                                     " but --proxy-base holds " + base->config().ToString());
    }
  }
  CorpusFingerprint corpus;
  TANDEM_ASSIGN_OR_RETURN(DatasetSplits splits, LoadSplits(data, &corpus));
  nlohmann::json out = {{"checkpoint", checkpoint}, {"model", model->config().ToString()},
                        {"tandem_version", TandemVersion()},
                        {"data", {{"source", corpus.source}, {"files", corpus.files},
                                  {"sha256", corpus.sha256}}}};
  std::printf("tandem %s; data %s (%zu files), sha256 %s\n", TandemVersion(),
              corpus.source.c_str(), corpus.files.size(), corpus.sha256.c_str());
  // A checkpoint in runs/<name>/checkpoints/: what its run was trained with.
  const std::string run_dir = fs::path(checkpoint).parent_path().parent_path().string();
  for (const std::string& line : DescribeRunRecord(run_dir)) {
    std::printf("trained by %s: %s\n", run_dir.c_str(), line.c_str());
  }
  ProxyTuneOptions proxy_options;
  proxy_options.alpha = proxy.alpha;
  proxy_options.batch = 16;
  proxy_options.max_tokens = max_tokens;
  std::printf("%-16s %10s %12s %12s\n", "split", "loss", "perplexity", "tokens");
  for (const auto& [name, records] : {std::pair{"validation", &splits.validation},
                                      std::pair{"test", &splits.test}}) {
    if (records->empty()) continue;
    TANDEM_ASSIGN_OR_RETURN(LossResult r, EvaluateLoss(*model, *records, 16, max_tokens));
    std::printf("%-16s %10.4f %12.3f %12lld\n", name, r.loss, r.perplexity,
                static_cast<long long>(r.tokens));
    out[name] = {{"loss", r.loss}, {"perplexity", r.perplexity}, {"tokens", r.tokens}};
    if (tuned) {
      TANDEM_ASSIGN_OR_RETURN(LossResult p,
                              EvaluateProxyTuned(*model, *tuned, *base, *records, proxy_options));
      const std::string label = std::string(name) + "+proxy";
      std::printf("%-16s %10.4f %12.3f %12lld\n", label.c_str(), p.loss, p.perplexity,
                  static_cast<long long>(p.tokens));
      out[std::string(name) + "_proxy_tuned"] = {
          {"loss", p.loss}, {"perplexity", p.perplexity}, {"tokens", p.tokens},
          {"alpha", proxy.alpha}};
    }
  }
  // The cross-lingual setup: every language's held-out sets on their own (the public corpus's
  // watches forgetting).
  if (data.cross_lingual()) {
    std::printf("\n%-16s %10s %10s\n", "language", "validation", "test");
    const auto validation = RecordsByLanguage(splits.validation);
    const auto test = RecordsByLanguage(splits.test);
    for (const auto& [language, records] : validation) {
      TANDEM_ASSIGN_OR_RETURN(LossResult v, EvaluateLoss(*model, records, 16, max_tokens));
      double t = std::nan("");
      if (auto it = test.find(language); it != test.end()) {
        TANDEM_ASSIGN_OR_RETURN(LossResult r, EvaluateLoss(*model, it->second, 16, max_tokens));
        t = r.loss;
      }
      std::printf("%-16s %10.4f %10.4f\n", language.c_str(), v.loss, t);
      out["languages"][language] = {{"validation", v.loss}, {"test", t}};
      if (tuned && test.count(language)) {
        // Proxy-tuning per language: the test records only (the table's column).
        TANDEM_ASSIGN_OR_RETURN(LossResult p, EvaluateProxyTuned(*model, *tuned, *base,
                                                                 test.at(language), proxy_options));
        std::printf("%-16s %10s %10.4f\n", (language + "+proxy").c_str(), "", p.loss);
        out["languages"][language]["test_proxy_tuned"] = p.loss;
      }
    }
  }
  // Exact match is meaningful only for prompt/answer tasks, not for free text that happens to
  // contain an '='.
  if (exact_match_per_category > 0 && data.source == "arithmetic") {
    auto em = EvaluateExactMatch(*model, splits.test, exact_match_per_category);
    if (!em.empty()) std::printf("\n%-12s %10s %8s\n", "category", "accuracy", "n");
    for (const auto& [cat, r] : em) {
      std::printf("%-12s %10.3f %8lld\n", cat.c_str(), r.accuracy(),
                  static_cast<long long>(r.total));
      out["exact_match"][cat] = {{"accuracy", r.accuracy()}, {"n", r.total}};
    }
  }
  if (!json_out.empty()) {
    const std::string text = out.dump(2) + "\n";
    TANDEM_RETURN_IF_ERROR(WriteFileAtomic(json_out, {text.begin(), text.end()}));
  }
  return Status::Ok();
}

Status RunGenerate(const GenerateOptions& options) {
  SamplingConfig sampling;
  sampling.temperature = options.temperature;
  sampling.top_k = options.top_k;
  TANDEM_RETURN_IF_ERROR(sampling.Validate());
  if (options.max_tokens < 1) return Status::InvalidArgument("--max-tokens must be >= 1");
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model, LoadModel(options.checkpoint, options.lora));
  if (model->config().vocab != ByteTokenizer::kVocabSize) {
    return Status::InvalidArgument("model vocabulary is " + std::to_string(model->config().vocab) +
                                   ", but tandem's byte tokenizer needs 256");
  }
  std::vector<int32_t> prompt = {ByteTokenizer::kEndOfText};
  ByteTokenizer::EncodeAppend(options.prompt, &prompt);
  Generator gen(*model);
  Rng rng(options.seed);
  auto out = gen.Generate(prompt, options.max_tokens, sampling, rng);
  std::printf("%s%s\n", options.prompt.c_str(), ByteTokenizer::Decode(out).c_str());
  return Status::Ok();
}

}  // namespace tandem

// What the tests of algorithms' halves share: one tiny run — slm-micro clients, an in-memory
// corpus, a three-block LLM checkpoint written to a temp dir for the algorithms that need one —
// whose coordinator halves are built through the registry (`server.create` over a ServerContext,
// as the coordinator builds them) and whose client halves run over a ClientContext.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/common/task_parts.h"
#include "algorithms/registry.h"
#include <filesystem>

#include "core/config.h"
#include "distill/topk.h"
#include "models/gpt_checkpoint.h"
#include "tests/coordinator/distill_fixtures.h"
#include "tests/temp_dir.h"
#include "train/evaluate.h"

namespace tandem::testing {

// The cloud LLM of the tests: slm-micro's width and context with one more block.
inline ModelConfig LlmConfig() {
  ModelConfig c = Micro();
  c.n_layer = 3;
  return c;
}

// route-gapg's device beside the LLM checkpoint: a slm-micro (the clients' model) that
// HalvesTest writes.
inline std::string HalvesDevicePath(const std::string& llm) {
  return (std::filesystem::path(llm).parent_path() / "halves-device.safetensors").string();
}

// The sections every algorithm of the registry reads, small enough for unit tests. `llm` is the
// LLM checkpoint; `down` is appended to [distill-down] ("slms = \"local\"\n"), `extra` to the end
// of the text, which is the [eval] section (keys of [eval], then any further sections).
inline std::string HalvesConfigText(const std::string& llm, const std::string& extra = "",
                                    const std::string& down = "") {
  return "name = \"halves\"\nseed = 5\n"
         "[client]\nlocal_steps = 4\nbatch = 4\nlr = 0.003\n"
         "[strategy]\nname = \"fedadam\"\nserver_lr = 0.01\n"
         "[distill-down]\nteacher = \"" + llm + "\"\ntop_k = 8\nwindows = 2\nalpha = 0.0\n" + down +
         "[distill-up]\nllm = \"" + llm + "\"\nwindows = 2\nserver_steps = 2\nserver_batch = 2\n"
         "server_lr = 0.001\n"
         "[fedmkt]\nllm = \"" + llm + "\"\nwindows = 2\ntop_k = 8\nserver_steps = 2\n"
         "server_batch = 2\nserver_lr = 0.001\nclient_alpha = 0.0\n"
         "[fedcollm]\nllm = \"" + llm + "\"\nwindows = 2\nserver_steps = 2\nserver_batch = 2\n"
         "server_lr = 0.001\n"
         "[offsite]\nbottom = 1\ntop = 0\n"
         "[fedbiot]\nbottom = 1\ntop = 0\nserver_steps = 2\nwindows = 2\nserver_batch = 2\n"
         "[model.lora]\nrank = 2\nalpha = 4.0\n"
         "[route-gapg]\ndevice_checkpoint = \"" + HalvesDevicePath(llm) + "\"\n"
         "cloud_checkpoint = \"" + llm + "\"\nmax_tokens = 4\n"
         "[serve]\nenabled = true\n"
         "[eval]\ntokens = 256\n" + extra;
}

// The run's splits: a public split of a few contexts, held-out records of every client category.
inline DatasetSplits HalvesSplits() {
  DatasetSplits s;
  s.public_ = Corpus("public", 30);
  s.validation = Corpus("val-a", 3);
  for (const Record& r : Corpus("val-b", 3)) s.validation.push_back(r);
  s.train = Corpus("train", 8);
  return s;
}

// Client `index`'s data: its own records (category "own-<index>"), its own held-out records, the
// run's public split and every client's held-out records.
inline ClientData HalvesClientData(const DatasetSplits& splits, int index) {
  ClientData d;
  d.train = Corpus("own-" + std::to_string(index), 12);
  d.validation = Corpus("own-val-" + std::to_string(index), 3);
  d.public_ = splits.public_;
  d.all_validation = splits.validation;
  return d;
}

inline std::vector<float> Copy(std::span<const float> v) { return {v.begin(), v.end()}; }

inline bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline wire::TaskAssign Assign(const TaskSpec& spec) {
  return wire::TaskAssign{spec.kind, spec.params, spec.tensors, 0};
}

// Mean cross-entropy of `model` on `records` (all of them).
inline double Loss(Gpt& model, const std::vector<Record>& records) {
  auto r = EvaluateLoss(model, records, 8, 0);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? r->loss : NAN;
}

// Mean cross-entropy, over every position of the task's windows, from the teacher's top-k
// targets the task carries (densified: the tail spread over the other tokens) to `model`'s
// distribution at the targets' temperature: lower is closer to the teacher.
inline double CrossEntropyToTargets(Gpt& model, const wire::TaskAssign& task,
                                    const TokenDataset& public_tokens) {
  auto kd = DecodeKd(task.params);
  EXPECT_TRUE(kd.ok());
  auto windows = DecodeWindows(task, public_tokens, model.config().context);
  EXPECT_TRUE(windows.ok()) << windows.status().ToString();
  if (!kd.ok() || !windows.ok()) return NAN;
  const int T = windows->context(), V = model.config().vocab;
  auto targets = DecodeTopKFor(task, *windows, V, kd->options.temperature);
  EXPECT_TRUE(targets.ok()) << targets.status().ToString();
  if (!targets.ok()) return NAN;
  std::vector<float> teacher(static_cast<size_t>(targets->rows) * V);
  DensifyTopK(teacher.data(), *targets);
  std::vector<int32_t> tokens(T), next(T);
  double ce = 0.0;
  for (int w = 0; w < windows->count(); ++w) {
    windows->Gather(w, tokens.data(), next.data());
    model.Forward(tokens.data(), nullptr, 1, T);
    for (int t = 0; t < T; ++t) {
      const float* z = model.logits() + static_cast<size_t>(t) * V;
      double max = z[0], sum = 0.0;
      for (int v = 0; v < V; ++v) max = std::max<double>(max, z[v] / kd->options.temperature);
      for (int v = 0; v < V; ++v) sum += std::exp(z[v] / kd->options.temperature - max);
      const float* p = teacher.data() + (static_cast<size_t>(w) * T + t) * V;
      for (int v = 0; v < V; ++v) {
        ce -= p[v] * (z[v] / kd->options.temperature - max - std::log(sum));
      }
    }
  }
  return ce / (static_cast<double>(windows->count()) * T);
}

// Checks that `probs` is `model`'s next-token distribution at `temperature` on every position of
// the task's windows (softmax(z / T), computed here in double), one row per position, each row a
// distribution. Returns the largest difference.
inline double ExpectPredictionsAt(Gpt& model, const wire::TaskAssign& task,
                                  const TokenDataset& public_tokens, double temperature,
                                  const std::vector<float>& probs) {
  auto windows = DecodeWindows(task, public_tokens, model.config().context);
  EXPECT_TRUE(windows.ok()) << windows.status().ToString();
  if (!windows.ok()) return INFINITY;
  const int T = windows->context(), V = model.config().vocab;
  EXPECT_EQ(probs.size(), static_cast<size_t>(windows->count()) * T * V);
  if (probs.size() != static_cast<size_t>(windows->count()) * T * V) return INFINITY;
  std::vector<int32_t> tokens(T), next(T);
  double worst = 0.0, worst_sum = 0.0;
  for (int w = 0; w < windows->count(); ++w) {
    windows->Gather(w, tokens.data(), next.data());
    model.Forward(tokens.data(), nullptr, 1, T);
    for (int t = 0; t < T; ++t) {
      const float* z = model.logits() + static_cast<size_t>(t) * V;
      const float* p = probs.data() + (static_cast<size_t>(w) * T + t) * V;
      double max = z[0], sum = 0.0, row = 0.0;
      for (int v = 0; v < V; ++v) max = std::max<double>(max, z[v] / temperature);
      for (int v = 0; v < V; ++v) sum += std::exp(z[v] / temperature - max);
      for (int v = 0; v < V; ++v) {
        EXPECT_TRUE(p[v] >= 0.0f && p[v] <= 1.0f);
        worst = std::max(worst, std::fabs(std::exp(z[v] / temperature - max) / sum - p[v]));
        row += p[v];
      }
      worst_sum = std::max(worst_sum, std::fabs(row - 1.0));
    }
  }
  EXPECT_LT(worst_sum, 1e-4) << "a row is not a distribution";
  return worst;
}

// A fixture with an LLM checkpoint in a temp dir, the config over it, and one client context.
class HalvesTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    llm_path_ = Path("llm.safetensors");
    Gpt llm(LlmConfig());
    llm.InitWeights(11);
    // A fresh model's logits are nearly flat at T = 2; a final LayerNorm 8 times as strong makes
    // them peaked, so distillation to it is a signal a few local steps can follow.
    float* gain = llm.param("ln_f.weight");
    for (int c = 0; c < llm.config().d_model; ++c) gain[c] *= 8.0f;
    ASSERT_TRUE(SaveGpt(llm_path_, llm).ok());
    Gpt device(Micro());
    device.InitWeights(13);
    ASSERT_TRUE(SaveGpt(HalvesDevicePath(llm_path_), device).ok());
    splits_ = HalvesSplits();
    SetConfig("");
  }

  void SetConfig(const std::string& extra, const std::string& down = "") {
    auto parsed = Config::Parse(HalvesConfigText(llm_path_, extra, down));
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    config_ = std::make_unique<Config>(std::move(*parsed));
  }

  // The coordinator half of `name`, built as the coordinator builds it, with shared objects of
  // its own unless `shared` is given (two halves of separate runs never share an LLM object).
  std::unique_ptr<ServerAlgorithm> Server(const std::string& name,
                                          const ModelConfig& model = Micro(),
                                          const std::string& group = "",
                                          std::vector<ModelConfig> client_models = {},
                                          SharedObjects* shared = nullptr) {
    auto algorithm = FindAlgorithm(name);
    EXPECT_TRUE(algorithm.ok()) << algorithm.status().ToString();
    if (!algorithm.ok()) return nullptr;
    if (shared == nullptr) {
      shared_.push_back(std::make_unique<SharedObjects>());
      shared = shared_.back().get();
    }
    ServerContext context;
    context.config = config_.get();
    context.seed = 5;
    context.splits = &splits_;
    context.model = model;
    context.group = group;
    context.client_models = std::move(client_models);
    context.shared = shared;
    auto server = (*algorithm)->server.create(context);
    EXPECT_TRUE(server.ok()) << name << ": " << server.status().ToString();
    if (!server.ok()) return nullptr;
    return std::move(server).value();
  }

  std::unique_ptr<ClientContext> Context(int index, const ModelConfig& model = Micro()) {
    return std::make_unique<ClientContext>(index, model, HalvesClientData(splits_, index),
                                           std::vector<float>{});
  }

  std::unique_ptr<TaskHandler> Handler(const std::string& name, ClientContext* context) {
    auto algorithm = FindAlgorithm(name);
    EXPECT_TRUE(algorithm.ok());
    if (!algorithm.ok()) return nullptr;
    auto handler = (*algorithm)->client.create(context);
    EXPECT_TRUE(handler.ok()) << handler.status().ToString();
    if (!handler.ok()) return nullptr;
    return std::move(handler).value();
  }

  // Round `round`'s first task of `name`'s coordinator half for a cohort of one (client-K).
  TaskSpec FirstTask(ServerAlgorithm& server, uint64_t round, int index = 0) {
    ClientInfo client{"client-" + std::to_string(index), index, server.RequiredCapabilities()};
    auto spec = server.BeginRound(round, {client});
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    return spec.ok() ? *spec : TaskSpec{};
  }

  std::string llm_path_;
  DatasetSplits splits_;
  std::unique_ptr<Config> config_;
  std::vector<std::unique_ptr<SharedObjects>> shared_;
};

}  // namespace tandem::testing

// `tandem route train|eval` (see route_run.h).
#include "route/route_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/batcher.h"
#include "models/gpt.h"
#include "models/gpt_checkpoint.h"
#include "models/gpt_workspace.h"
#include "models/param_layout.h"
#include "models/safetensors.h"
#include "models/tokenizer.h"
#include "route/gapg.h"
#include "route/handoff.h"
#include "route/policy_gradient.h"
#include "route/router.h"
#include "train/local_trainer.h"
#include "train/run_dir.h"

namespace tandem {

StatusOr<RouteConfig> RouteConfigFromConfig(const Config& config) {
  RouteConfig r;
  TANDEM_ASSIGN_OR_RETURN(r.name, config.GetString("name", r.name));
  TANDEM_ASSIGN_OR_RETURN(r.out_dir, config.GetString("out_dir", r.out_dir));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, config.GetInt("seed", 1, 0));
  r.seed = static_cast<uint64_t>(seed);
  TANDEM_ASSIGN_OR_RETURN(r.device_checkpoint, config.RequireString("route.device_checkpoint"));
  TANDEM_ASSIGN_OR_RETURN(r.cloud_checkpoint, config.RequireString("route.cloud_checkpoint"));
  TANDEM_ASSIGN_OR_RETURN(std::vector<int64_t> levels,
                          config.GetIntList("route.levels", {1}, 1, kArithmeticMaxLevel));
  if (levels.empty()) return Status::InvalidArgument("route.levels must name at least one level");
  r.levels.assign(levels.begin(), levels.end());
  TANDEM_ASSIGN_OR_RETURN(r.examples_per_level,
                          config.GetInt("route.examples_per_level", r.examples_per_level, 1,
                                        10'000'000));
  TANDEM_ASSIGN_OR_RETURN(r.test_fraction,
                          config.GetDouble("route.test_fraction", r.test_fraction, 0.01, 0.99));
  TANDEM_ASSIGN_OR_RETURN(int64_t task_seed, config.GetInt("route.task_data_seed", 0, 0));
  r.task_data_seed = static_cast<uint64_t>(task_seed);
  TANDEM_ASSIGN_OR_RETURN(r.task_data_examples_per_level,
                          config.GetInt("route.task_data_examples_per_level",
                                        r.task_data_examples_per_level, 0, 10'000'000));
  TANDEM_ASSIGN_OR_RETURN(int64_t max_tokens,
                          config.GetInt("route.max_tokens", r.max_tokens, 1, 64));
  r.max_tokens = static_cast<int>(max_tokens);

  TANDEM_ASSIGN_OR_RETURN(r.warm_start_steps,
                          config.GetInt("route.warm_start_steps", r.warm_start_steps, 0));
  TANDEM_ASSIGN_OR_RETURN(r.warm_start_handoff_fraction,
                          config.GetDouble("route.warm_start_handoff_fraction",
                                           r.warm_start_handoff_fraction, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(r.warm_start_lr,
                          config.GetDouble("route.warm_start_lr", r.warm_start_lr, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t ws_batch,
                          config.GetInt("route.warm_start_batch", r.warm_start_batch, 1, 4096));
  r.warm_start_batch = static_cast<int>(ws_batch);

  TANDEM_ASSIGN_OR_RETURN(r.trainable,
                          config.GetChoice("route.trainable", r.trainable, {"marker", "top", "all"}));
  TANDEM_ASSIGN_OR_RETURN(r.mode, config.GetChoice("route.mode", r.mode, {"gapg", "grpo"}));
  TANDEM_ASSIGN_OR_RETURN(r.steps, config.GetInt("route.steps", r.steps, 0));
  TANDEM_ASSIGN_OR_RETURN(r.lr, config.GetDouble("route.lr", r.lr, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(int64_t g, config.GetInt("route.group_size", r.group_size, 2, 1024));
  r.group_size = static_cast<int>(g);
  TANDEM_ASSIGN_OR_RETURN(int64_t pps,
                          config.GetInt("route.prompts_per_step", r.prompts_per_step, 1, 4096));
  r.prompts_per_step = static_cast<int>(pps);
  TANDEM_ASSIGN_OR_RETURN(r.temperature,
                          config.GetDouble("route.temperature", r.temperature, 0.01, 100.0));
  TANDEM_ASSIGN_OR_RETURN(r.answer_correct,
                          config.GetDouble("route.answer_correct", r.answer_correct));
  TANDEM_ASSIGN_OR_RETURN(r.handoff_correct,
                          config.GetDouble("route.handoff_correct", r.handoff_correct));
  GapgRewards rewards{r.answer_correct, r.handoff_correct};
  if (Status s = rewards.Validate(); !s.ok()) {
    return Status::InvalidArgument("route.answer_correct and route.handoff_correct: " +
                                   s.message());
  }
  TANDEM_ASSIGN_OR_RETURN(r.rho, config.GetDouble("route.rho", r.rho, 0.0, 1e6));
  TANDEM_ASSIGN_OR_RETURN(r.filter_every,
                          config.GetInt("route.filter_every", r.filter_every, 0));
  TANDEM_ASSIGN_OR_RETURN(r.checkpoint_every,
                          config.GetInt("route.checkpoint_every", r.checkpoint_every, 0));

  TANDEM_ASSIGN_OR_RETURN(
      r.baseline, config.GetChoice("route.baseline", r.baseline,
                                   {"policy", "device", "cloud", "random", "router", "oracle"}));
  TANDEM_ASSIGN_OR_RETURN(r.budget, config.GetDouble("route.budget", r.budget, 0.0, 1.0));
  TANDEM_ASSIGN_OR_RETURN(r.cap, config.GetChoice("route.cap", r.cap, {"online", "ranked"}));
  TANDEM_ASSIGN_OR_RETURN(r.policy_answers, config.GetChoice("route.policy_answers",
                                                             r.policy_answers,
                                                             {"policy", "device"}));
  TANDEM_ASSIGN_OR_RETURN(r.policy_checkpoint,
                          config.GetString("route.policy_checkpoint", r.policy_checkpoint));
  TANDEM_ASSIGN_OR_RETURN(r.eval_prompts, config.GetInt("route.eval_prompts", r.eval_prompts, 0));
  TANDEM_ASSIGN_OR_RETURN(r.eval_split,
                          config.GetChoice("route.eval_split", r.eval_split, {"test", "train"}));
  TANDEM_RETURN_IF_ERROR(config.CheckAllKeysUsed());
  return r;
}

std::string RouteRunDirectory(const RouteConfig& rc) { return rc.out_dir + "/" + rc.name; }

namespace {

// SplitMix64's finaliser: a well-mixed 64-bit hash.
uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t HashText(std::string_view s, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ Mix(seed);  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return Mix(h);
}

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IoError("cannot write " + path);
  return Status::Ok();
}

Status AppendLine(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  out << line << "\n";
  out.close();
  if (!out) return Status::IoError("cannot append to " + path);
  return Status::Ok();
}


// Every prompt and max_tokens new tokens fit the model's context.
Status CheckFits(const ModelConfig& model, const RoutePrompts& prompts, int max_tokens,
                 const std::string& which) {
  size_t longest = 0;
  for (const auto* set : {&prompts.train, &prompts.test}) {
    for (const auto& e : *set) longest = std::max(longest, e.prompt.size() + 1);
  }
  if (static_cast<int>(longest) + max_tokens > model.context) {
    return Status::InvalidArgument(which + ": prompts of up to " + std::to_string(longest) +
                                   " tokens and route.max_tokens " + std::to_string(max_tokens) +
                                   " do not fit its context of " +
                                   std::to_string(model.context));
  }
  return Status::Ok();
}

// The cloud in this process: its greedy answer, cached by prompt.
CloudAnswer LocalCloud(std::shared_ptr<const GptWeights> cloud, int max_tokens) {
  auto cache = std::make_shared<std::unordered_map<std::string, std::string>>();
  return [cloud, max_tokens, cache](std::string_view prompt) -> StatusOr<std::string> {
    auto it = cache->find(std::string(prompt));
    if (it != cache->end()) return it->second;
    Rng rng(0);  // greedy: never drawn from
    SamplingOptions greedy;
    greedy.temperature = 0.0f;
    const std::vector<int32_t> line =
        DecodeLine(cloud, PromptTokens(prompt), max_tokens, greedy, rng);
    std::string answer = ParseCompletion(ByteTokenizer::Decode(line)).answer;
    cache->emplace(std::string(prompt), answer);
    return answer;
  };
}

StatusOr<std::unique_ptr<Gpt>> LoadModel(const std::string& path, const std::string& what) {
  auto model = LoadGpt(path);
  if (!model.ok()) return Status(model.status().code(), what + ": " + model.status().message());
  return std::move(*model);
}

// The train state beside the checkpoint: parameters, AdamW moments, the step and the rng.
Status SaveRouteState(const std::string& path, const Gpt& model, const AdamW& opt, int64_t step,
                      const Rng& rng) {
  const auto params = model.params();
  const int64_t n = static_cast<int64_t>(params.size());
  std::vector<TensorToWrite> tensors = {{"params", DType::kF32, {n}, params.data()},
                                        {"adamw.m", DType::kF32, {n}, opt.m().data()},
                                        {"adamw.v", DType::kF32, {n}, opt.v().data()}};
  return WriteSafetensors(path, tensors,
                          {{"format", "tandem-route-state"},
                           {"step", std::to_string(step)},
                           {"adamw_step", std::to_string(opt.step())},
                           {"rng", rng.SaveState()},
                           {"config", model.config().ToString()}});
}

Status LoadRouteState(const std::string& path, Gpt* model, AdamW* opt, int64_t* step, Rng* rng) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  auto meta = [&](const std::string& k) -> StatusOr<std::string> {
    auto it = file.metadata.find(k);
    if (it == file.metadata.end()) return Status::Corruption(path + ": no metadata '" + k + "'");
    return it->second;
  };
  TANDEM_ASSIGN_OR_RETURN(std::string config, meta("config"));
  if (config != model->config().ToString()) {
    return Status::FailedPrecondition(path + ": state is for model " + config + ", not " +
                                      model->config().ToString());
  }
  auto copy = [&](const std::string& name, std::span<float> dest) -> Status {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end() || it->second.elements() != dest.size()) {
      return Status::Corruption(path + ": tensor '" + name + "' missing or of the wrong size");
    }
    TANDEM_ASSIGN_OR_RETURN(std::vector<float> v, it->second.ToFloat());
    std::copy(v.begin(), v.end(), dest.begin());
    return Status::Ok();
  };
  TANDEM_RETURN_IF_ERROR(copy("params", model->params()));
  TANDEM_RETURN_IF_ERROR(copy("adamw.m", opt->m()));
  TANDEM_RETURN_IF_ERROR(copy("adamw.v", opt->v()));
  TANDEM_ASSIGN_OR_RETURN(std::string s, meta("step"));
  TANDEM_ASSIGN_OR_RETURN(std::string a, meta("adamw_step"));
  TANDEM_ASSIGN_OR_RETURN(std::string r, meta("rng"));
  try {
    *step = std::stoll(s);
    opt->set_step(std::stoll(a));
  } catch (const std::exception&) {
    return Status::Corruption(path + ": step metadata is not a number");
  }
  return rng->LoadState(r);
}

// The warm start's records: training prompts drawn with repetition, a fraction with the answer
// replaced by the hand-off marker.
std::vector<Record> WarmStartRecords(const std::vector<ArithmeticExample>& train, double fraction,
                                     uint64_t seed) {
  Rng rng(Mix(seed ^ 0x5741524Dull));
  const size_t n = std::max<size_t>(4000, train.size() * 20);
  std::vector<Record> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    ArithmeticExample e = train[rng.Below(train.size())];
    Record r = e.ToRecord();
    if (rng.Uniform() < fraction) r.text = e.prompt + std::string(kHandOffCompletion);
    out.push_back(std::move(r));
  }
  return out;
}

// The last term of a step when only part of the model trains: zeroes every gradient outside
// `ranges` (offsets into the flat buffer, [begin, end)). The trainer's AdamW moves nothing whose
// gradient and moments are zero (weight decay is off for these runs).
class TrainOnly : public LossTerm {
 public:
  explicit TrainOnly(std::vector<std::pair<size_t, size_t>> ranges) : ranges_(std::move(ranges)) {
    std::sort(ranges_.begin(), ranges_.end());
  }
  std::string name() const override { return "train_only"; }
  void Bind(std::span<const float>, std::span<float> grads) override { grads_ = grads; }
  StatusOr<TermLoss> Accumulate(Gpt&, int64_t, Rng&) override {
    size_t at = 0;
    for (const auto& [begin, end] : ranges_) {
      if (begin > at) std::fill(grads_.begin() + at, grads_.begin() + begin, 0.0f);
      at = std::max(at, end);
    }
    std::fill(grads_.begin() + std::min(at, grads_.size()), grads_.end(), 0.0f);
    return TermLoss{};
  }

 private:
  std::vector<std::pair<size_t, size_t>> ranges_;
  std::span<float> grads_;
};

// What route.trainable trains, as ranges of the layout. "marker": the marker's output row alone.
// The output layer is tied to the token embedding (wte, (V,C)), and the marker never occurs in an
// input, so its row is exactly the marker's logit: w·h over the final hidden state, a linear
// hand-off head on the device's own features. "top": that row, the top block and the final
// LayerNorm: the hand-off head reads features the policy learns (the answers' logits move too;
// route.policy_answers = "device" keeps the task-tuned device answering). "all": everything.
std::vector<std::pair<size_t, size_t>> TrainableRanges(const Gpt& model,
                                                       const std::string& trainable) {
  const ParamLayout& layout = model.layout();
  if (trainable == "all") return {{0, layout.total()}};
  const TensorSpec* wte = layout.Find("wte.weight");
  TANDEM_CHECK(wte != nullptr);
  const size_t C = static_cast<size_t>(model.config().d_model);
  const size_t marker = wte->offset + static_cast<size_t>(kHandOffToken) * C;
  std::vector<std::pair<size_t, size_t>> ranges = {{marker, marker + C}};
  if (trainable == "top") {
    const std::string top = "h." + std::to_string(model.config().n_layer - 1) + ".";
    for (const TensorSpec& t : layout.tensors()) {
      if (t.name.rfind(top, 0) == 0 || t.name.rfind("ln_f.", 0) == 0) {
        ranges.push_back({t.offset, t.offset + t.size});
      }
    }
  }
  return ranges;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

StatusOr<RoutePrompts> MakeRoutePrompts(const RouteConfig& rc) {
  RoutePrompts out;
  // What task-tuning saw, drawn exactly as train/data_setup.cc's LoadSplits draws it.
  std::set<std::string> tuned;
  for (int level : rc.levels) {
    if (rc.task_data_examples_per_level == 0) break;
    TANDEM_ASSIGN_OR_RETURN(
        std::vector<ArithmeticExample> examples,
        MakeArithmeticExamples(level, static_cast<size_t>(rc.task_data_examples_per_level),
                               rc.task_data_seed * 1000 + static_cast<uint64_t>(level)));
    for (auto& e : examples) tuned.insert(std::move(e.prompt));
  }
  std::set<std::string> seen;
  for (int level : rc.levels) {
    // The examples themselves come from a fixed seed, so every seed splits the same prompts.
    TANDEM_ASSIGN_OR_RETURN(
        std::vector<ArithmeticExample> examples,
        MakeArithmeticExamples(level, static_cast<size_t>(rc.examples_per_level), 7));
    for (auto& e : examples) {
      if (!seen.insert(e.prompt).second) continue;
      const double u = static_cast<double>(HashText(e.prompt, rc.seed) >> 11) * 0x1.0p-53;
      const bool test = u < rc.test_fraction;
      if (test && tuned.count(e.prompt)) ++out.excluded_from_test;
      (test && !tuned.count(e.prompt) ? out.test : out.train).push_back(std::move(e));
    }
  }
  if (out.train.empty() || out.test.empty()) {
    return Status::InvalidArgument("route: " + std::to_string(seen.size()) +
                                   " distinct prompts split into " +
                                   std::to_string(out.train.size()) + " training and " +
                                   std::to_string(out.test.size()) +
                                   " test prompts; both must be non-empty (raise "
                                   "route.examples_per_level or change route.test_fraction)");
  }
  return out;
}

StatusOr<RouteTrainResult> RunRouteTrain(const Config& config, bool resume, bool overwrite,
                                         FILE* progress) {
  TANDEM_ASSIGN_OR_RETURN(RouteConfig rc, RouteConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(RoutePrompts prompts, MakeRoutePrompts(rc));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> model,
                          LoadModel(rc.device_checkpoint, "route.device_checkpoint"));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> cloud,
                          LoadModel(rc.cloud_checkpoint, "route.cloud_checkpoint"));
  TANDEM_RETURN_IF_ERROR(CheckFits(model->config(), prompts, rc.max_tokens, "the device"));
  TANDEM_RETURN_IF_ERROR(CheckFits(cloud->config(), prompts, rc.max_tokens, "the cloud"));

  const std::string run_dir = RouteRunDirectory(rc);
  TANDEM_ASSIGN_OR_RETURN(RunDirClaim claim, ClaimRunDirectory(run_dir, {resume, overwrite}));
  const std::string ckpt_dir = run_dir + "/checkpoints";
  std::filesystem::create_directories(ckpt_dir);
  const std::string state_path = ckpt_dir + "/state.safetensors";
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  const int64_t total = rc.warm_start_steps + rc.steps;

  TrainerOptions trainer_options;
  trainer_options.adamw.weight_decay = rc.trainable == "all" ? 0.1f : 0.0f;
  LocalTrainer trainer(model.get(), trainer_options);
  TrainOnly train_only(TrainableRanges(*model, rc.trainable));
  auto terms = [&](LossTerm* term) {
    std::vector<LossTerm*> t = {term};
    if (rc.trainable != "all") t.push_back(&train_only);
    return t;
  };
  Rng rng(Mix(rc.seed));
  int64_t start = 0;
  const bool resumed = resume && std::filesystem::exists(state_path);
  if (resumed) {
    TANDEM_RETURN_IF_ERROR(LoadRouteState(state_path, model.get(), &trainer.optimizer(), &start,
                                          &rng));
    trainer.set_steps_taken(start);
  }
  std::string prompt_list;
  for (const auto& e : prompts.train) prompt_list += e.prompt + "\n";
  CorpusFingerprint fingerprint{"arithmetic", {}, Sha256Hex(prompt_list)};
  TANDEM_RETURN_IF_ERROR(WriteFile(run_dir + "/config.toml", config.ToToml()));
  TANDEM_RETURN_IF_ERROR(WriteRunRecord(run_dir, config, fingerprint, resumed));

  // The cloud behind its interface, asked at most once per prompt (the oracle caches).
  CloudOracle oracle(LocalCloud(cloud->shared_weights(), rc.max_tokens));
  const GapgRewards rewards{rc.answer_correct, rc.handoff_correct};
  SamplingOptions sampling;
  sampling.temperature = static_cast<float>(rc.temperature);

  TANDEM_ASSIGN_OR_RETURN(
      Batcher batcher,
      Batcher::Create(TokenDataset::FromRecords(WarmStartRecords(
                          prompts.train, rc.warm_start_handoff_fraction, rc.seed)),
                      rc.warm_start_batch, model->config().context));
  TextTerm warm_term(std::move(batcher), "warm");

  // The prompts the policy trains on: the adaptive filter's kept set, refreshed every
  // filter_every steps (all training prompts when the filter is off or keeps none).
  std::vector<ArithmeticExample> kept = prompts.train;
  int64_t kept_mixed = -1, kept_cloud_only = -1;
  struct StepStats {
    int64_t completions = 0, handoffs = 0, local_correct = 0;
  } stats;
  RolloutSource source = [&](Gpt& m, int64_t, Rng& r) -> StatusOr<std::vector<Rollout>> {
    std::vector<Rollout> out;
    stats = {};
    for (int p = 0; p < rc.prompts_per_step; ++p) {
      const ArithmeticExample& ex = kept[r.Below(kept.size())];
      TANDEM_ASSIGN_OR_RETURN(Rollout ro,
                              SampleGapgRollout(m.shared_weights(), ex, rc.group_size,
                                                rc.max_tokens, sampling, rewards, oracle, r));
      for (const auto& c : ro.completions) {
        stats.handoffs +=
            ParseCompletion(ByteTokenizer::Decode(c)).kind == CompletionKind::kHandOff;
      }
      stats.local_correct += LocalCorrect(ro, ex);
      stats.completions += rc.group_size;
      out.push_back(std::move(ro));
    }
    return out;
  };
  PolicyGradientOptions pg_options;
  pg_options.mode = rc.mode == "grpo" ? AdvantageMode::kGrpo : AdvantageMode::kGapg;
  PolicyGradientTerm pg_term(source, pg_options, 1.0f, rc.mode);

  auto refilter = [&]() -> Status {
    std::vector<PromptOutcome> outcomes;
    for (const auto& ex : prompts.train) {
      TANDEM_ASSIGN_OR_RETURN(Rollout ro,
                              SampleGapgRollout(model->shared_weights(), ex, rc.group_size,
                                                rc.max_tokens, sampling, rewards, oracle, rng));
      outcomes.push_back({LocalCorrect(ro, ex), rc.group_size});
    }
    TANDEM_ASSIGN_OR_RETURN(PromptFilterResult f,
                            AdaptivePromptFilter(prompts.train, outcomes, rc.rho, oracle));
    kept_mixed = static_cast<int64_t>(f.mixed.size());
    kept_cloud_only = static_cast<int64_t>(f.cloud_only.size());
    kept.clear();
    for (size_t i : f.Kept()) kept.push_back(prompts.train[i]);
    if (kept.empty()) kept = prompts.train;
    return Status::Ok();
  };

  RouteTrainResult result;
  result.run_dir = run_dir;
  const auto clock = std::chrono::steady_clock::now();
  for (int64_t step = start; step < total; ++step) {
    const bool warm = step < rc.warm_start_steps;
    std::string line;
    nlohmann::json metrics = {{"step", step + 1}};
    if (warm) {
      TANDEM_ASSIGN_OR_RETURN(std::vector<TermLoss> losses,
                              trainer.Step(terms(&warm_term), static_cast<float>(rc.warm_start_lr),
                                           rng));
      metrics["warm_loss"] = losses[0].loss;
      char buf[160];
      std::snprintf(buf, sizeof buf, "route step %lld/%lld warm start: loss %.4f",
                    static_cast<long long>(step + 1), static_cast<long long>(total),
                    losses[0].loss);
      line = buf;
    } else {
      const int64_t pg_step = step - rc.warm_start_steps;
      if (rc.filter_every > 0 && (pg_step % rc.filter_every == 0 || kept_mixed < 0)) {
        TANDEM_RETURN_IF_ERROR(refilter());
      }
      TANDEM_ASSIGN_OR_RETURN(std::vector<TermLoss> losses,
                              trainer.Step(terms(&pg_term), static_cast<float>(rc.lr), rng));
      result.final_mean_reward = pg_term.last_mean_reward();
      result.final_handoff_rate = double(stats.handoffs) / stats.completions;
      metrics["pg_loss"] = losses[0].loss;
      metrics["mean_reward"] = result.final_mean_reward;
      metrics["handoff_rate"] = result.final_handoff_rate;
      metrics["local_correct_rate"] = double(stats.local_correct) / stats.completions;
      metrics["kept_mixed"] = kept_mixed;
      metrics["kept_cloud_only"] = kept_cloud_only;
      metrics["cloud_queries"] = oracle.queries();
      char buf[300];
      std::snprintf(buf, sizeof buf,
                    "route step %lld/%lld %s: reward %.3f, hand-off %.3f, local correct %.3f, "
                    "kept %lld mixed + %lld cloud-only, cloud queries %lld",
                    static_cast<long long>(step + 1), static_cast<long long>(total),
                    rc.mode.c_str(), result.final_mean_reward, result.final_handoff_rate,
                    double(stats.local_correct) / stats.completions,
                    static_cast<long long>(kept_mixed), static_cast<long long>(kept_cloud_only),
                    static_cast<long long>(oracle.queries()));
      line = buf;
    }
    metrics["seconds"] = Seconds(clock);
    TANDEM_RETURN_IF_ERROR(AppendLine(metrics_path, metrics.dump()));
    if (progress != nullptr) {
      std::fprintf(progress, "%s | %.1f s\n", line.c_str(), Seconds(clock));
      std::fflush(progress);
    }
    const bool last = step + 1 == total;
    if (step + 1 == rc.warm_start_steps) {
      TANDEM_RETURN_IF_ERROR(SaveGpt(ckpt_dir + "/warm-start.safetensors", *model));
    }
    if ((rc.checkpoint_every > 0 && (step + 1) % rc.checkpoint_every == 0) || last) {
      TANDEM_RETURN_IF_ERROR(
          SaveRouteState(state_path, *model, trainer.optimizer(), step + 1, rng));
      TANDEM_RETURN_IF_ERROR(SaveGpt(ckpt_dir + "/model.safetensors", *model));
    }
  }
  if (total == 0 || start == total) {
    TANDEM_RETURN_IF_ERROR(SaveGpt(ckpt_dir + "/model.safetensors", *model));
  }
  result.steps = total;
  result.cloud_queries = oracle.queries();
  nlohmann::json summary = {{"name", rc.name},
                            {"complete", true},
                            {"steps", total},
                            {"mode", rc.mode},
                            {"final_mean_reward", result.final_mean_reward},
                            {"final_handoff_rate", result.final_handoff_rate},
                            {"cloud_queries_this_session", result.cloud_queries}};
  TANDEM_RETURN_IF_ERROR(WriteFile(run_dir + "/summary.json", summary.dump(2) + "\n"));
  return result;
}

std::string RouteEvalResult::Line() const {
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "route eval %s at budget %.2f: accuracy %.4f (%lld/%lld), local accuracy %.4f "
                "(%lld/%lld), call ratio %.4f (%lld), hand-offs asked %.4f",
                baseline.c_str(), budget, accuracy(), static_cast<long long>(correct),
                static_cast<long long>(queries), local_accuracy(),
                static_cast<long long>(local_correct), static_cast<long long>(local_answered),
                call_ratio(), static_cast<long long>(handoffs), requested_ratio());
  std::string line = buf;
  if (preferred >= 0) {
    std::snprintf(buf, sizeof buf, ", preferred without a cap %.4f", preferred_ratio());
    line += buf;
  }
  return line;
}

std::string RouteEvalResult::Json() const {
  nlohmann::json j = {{"baseline", baseline},       {"budget", budget},
                      {"queries", queries},         {"correct", correct},
                      {"accuracy", accuracy()},     {"local_answered", local_answered},
                      {"local_correct", local_correct},
                      {"local_accuracy", local_accuracy()},
                      {"handoffs", handoffs},       {"call_ratio", call_ratio()},
                      {"requested", requested},     {"requested_ratio", requested_ratio()},
                      {"cloud_correct", cloud_correct}};
  if (preferred >= 0) {
    j["preferred"] = preferred;
    j["preferred_ratio"] = preferred_ratio();
  }
  return j.dump();
}

Rng ShuffleIntoEvalOrder(std::vector<ArithmeticExample>* queries, uint64_t seed) {
  Rng rng(Mix(seed ^ 0x4556414Cull));
  for (size_t i = queries->size(); i > 1; --i) {
    std::swap((*queries)[i - 1], (*queries)[rng.Below(i)]);
  }
  return rng;
}

StatusOr<RouteEvalResult> RunRouteEval(const Config& config) {
  TANDEM_ASSIGN_OR_RETURN(RouteConfig rc, RouteConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(RoutePrompts prompts, MakeRoutePrompts(rc));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> device,
                          LoadModel(rc.device_checkpoint, "route.device_checkpoint"));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> cloud,
                          LoadModel(rc.cloud_checkpoint, "route.cloud_checkpoint"));
  TANDEM_RETURN_IF_ERROR(CheckFits(device->config(), prompts, rc.max_tokens, "the device"));
  TANDEM_RETURN_IF_ERROR(CheckFits(cloud->config(), prompts, rc.max_tokens, "the cloud"));
  std::unique_ptr<Gpt> policy;
  if (rc.baseline == "policy") {
    const std::string path = rc.policy_checkpoint.empty()
                                 ? RouteRunDirectory(rc) + "/checkpoints/model.safetensors"
                                 : rc.policy_checkpoint;
    TANDEM_ASSIGN_OR_RETURN(policy, LoadModel(path, "the policy (route.policy_checkpoint)"));
    TANDEM_RETURN_IF_ERROR(CheckFits(policy->config(), prompts, rc.max_tokens, "the policy"));
  }

  // The queries arrive in an order drawn from the seed; the online cap sees them in turn.
  std::vector<ArithmeticExample> test = rc.eval_split == "train" ? prompts.train : prompts.test;
  Rng rng = ShuffleIntoEvalOrder(&test, rc.seed);
  if (rc.eval_prompts > 0 && static_cast<size_t>(rc.eval_prompts) < test.size()) {
    test.resize(static_cast<size_t>(rc.eval_prompts));
  }

  const CloudAnswer cloud_answer = LocalCloud(cloud->shared_weights(), rc.max_tokens);
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  auto device_answer = [&](const std::string& prompt) {
    return FallbackAnswer(device->shared_weights(), prompt, rc.max_tokens, greedy, rng);
  };

  // The router: fitted on the training prompts to predict the device's mistakes, its threshold
  // set to hand off the budget's share of them.
  std::optional<LogisticRouter> router;
  double threshold = 0.0;
  if (rc.baseline == "router") {
    std::vector<RouterFeatureRow> x;
    std::vector<int> y;
    for (const auto& e : prompts.train) {
      x.push_back(DeviceRouterFeatures(device->shared_weights(), e.prompt, rc.max_tokens));
      y.push_back(!ExactMatch(device_answer(e.prompt), e.answer));
    }
    TANDEM_ASSIGN_OR_RETURN(LogisticRouter fitted, LogisticRouter::Fit(x, y, LogisticOptions{}));
    std::vector<double> scores;
    for (const auto& row : x) scores.push_back(fitted.Probability(row));
    threshold = TopFractionThreshold(scores, rc.budget);
    router = std::move(fitted);
  }

  if (rc.baseline == "policy" && rc.cap == "online") {
    std::vector<double> scores;
    for (const auto& e : prompts.train) {
      scores.push_back(HandOffProbability(policy->shared_weights(), e.prompt, rc.temperature));
    }
    threshold = TopFractionThreshold(scores, rc.budget);
  }

  RouteEvalResult out;
  out.baseline = rc.baseline;
  out.budget = rc.baseline == "cloud" ? 1.0 : rc.baseline == "device" ? 0.0 : rc.budget;
  if (rc.baseline == "policy") out.preferred = 0;
  const bool ranked = rc.cap == "ranked";

  // First what each query would get from the device and what the method asks for, with its
  // score (higher: more deserving of the cloud); then the cap decides.
  struct Query {
    std::string local;   // the device's (or the policy's) own answer, marker banned
    double score = 0.0;  // the method's ranking of the query for the ranked cap
    bool asks = false;   // whether the method asks for the cloud
  };
  std::vector<Query> queries;
  queries.reserve(test.size());
  for (const auto& e : test) {
    Query q;
    if (rc.baseline == "policy") {
      // The policy's score is its marker probability at the answer's first token (at
      // route.temperature, as it was trained). Online, it asks when that is among the budget's
      // share of the highest it gives the training prompts: the same rule as the router's, on
      // the policy's own score. Token-by-token greedy decoding would instead hand off whenever
      // the marker is the single likeliest token, which against ten digits sharing the answer's
      // mass happens long before the policy prefers handing off; the online cap then grants
      // requests in arrival order.
      q.score = HandOffProbability(policy->shared_weights(), e.prompt, rc.temperature);
      q.asks = ranked || q.score >= threshold;
      out.preferred += q.score > 0.5;
      q.local = rc.policy_answers == "device"
                    ? device_answer(e.prompt)
                    : FallbackAnswer(policy->shared_weights(), e.prompt, rc.max_tokens, greedy, rng);
    } else {
      q.local = device_answer(e.prompt);
      if (rc.baseline == "cloud") {
        q.asks = true;
      } else if (rc.baseline == "random") {
        q.score = rng.Uniform();
        q.asks = ranked || q.score < rc.budget;
      } else if (rc.baseline == "router") {
        q.score = router->Probability(
            DeviceRouterFeatures(device->shared_weights(), e.prompt, rc.max_tokens));
        q.asks = ranked || q.score >= threshold;
      } else if (rc.baseline == "oracle") {
        q.asks = !ExactMatch(q.local, e.answer);
        q.score = q.asks ? 1.0 : 0.0;
      }
    }
    queries.push_back(std::move(q));
  }

  std::vector<bool> granted(test.size(), false);
  if (ranked) {
    std::vector<double> scores;
    std::vector<bool> asks;
    for (const Query& q : queries) {
      scores.push_back(q.score);
      asks.push_back(q.asks);
    }
    TANDEM_ASSIGN_OR_RETURN(granted, RankedHandOffGrants(scores, asks, out.budget));
  } else {
    HandOffCap cap({out.budget, -1});
    for (size_t i = 0; i < queries.size(); ++i) {
      const ParsedCompletion wants{
          queries[i].asks ? CompletionKind::kHandOff : CompletionKind::kAnswer, ""};
      granted[i] = cap.Decide(wants) == RouteDecision::kHandOff;
    }
  }

  for (size_t i = 0; i < test.size(); ++i) {
    const ArithmeticExample& e = test[i];
    std::string answer = queries[i].local;
    if (granted[i]) {
      TANDEM_ASSIGN_OR_RETURN(answer, cloud_answer(e.prompt));
    }
    const bool right = ExactMatch(answer, e.answer);
    ++out.queries;
    out.correct += right;
    out.requested += queries[i].asks;
    if (granted[i]) {
      ++out.handoffs;
      out.cloud_correct += right;
    } else {
      ++out.local_answered;
      out.local_correct += right;
    }
  }
  return out;
}

}  // namespace tandem

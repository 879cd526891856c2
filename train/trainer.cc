#include "train/trainer.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/logging.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/batcher.h"
#include "train/local_trainer.h"
#include "models/generate.h"
#include "models/gpt.h"
#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"
#include "models/tokenizer.h"
#include "train/evaluate.h"
#include "train/run_dir.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create directory '" + dir + "': " + ec.message());
  return Status::Ok();
}

Status WriteText(const std::string& path, const std::string& text) {
  return WriteFileAtomic(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// Appends one line and flushes it to disk, so a crash loses at most the line being written.
Status AppendLine(const std::string& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  if (!out) return Status::IoError("cannot open '" + path + "' for appending");
  out << line << '\n';
  out.flush();
  if (!out) return Status::IoError("cannot write '" + path + "'");
  return Status::Ok();
}

// Everything needed to resume: parameters (and adapters), AdamW moments, step, RNG state.
// What a resumed run's summary needs from the sessions before it.
struct EarlierSessions {
  double initial_val_loss = std::nan("");  // at step 0 of the first session
  double seconds = 0.0;                    // of training, summed over the sessions so far
  bool known = false;                      // false: a checkpoint from before they were kept
};

std::string ExactDouble(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  return out.str();
}

Status SaveTrainState(const std::string& path, const Gpt& model, const AdamW& opt,
                      int64_t step, const Rng& rng, bool lora, const EarlierSessions& totals) {
  std::vector<TensorToWrite> tensors;
  const auto params = lora ? model.lora_params() : model.params();
  const int64_t n = static_cast<int64_t>(params.size());
  tensors.push_back({"params", DType::kF32, {n}, params.data()});
  if (lora) {
    tensors.push_back({"base", DType::kF32, {static_cast<int64_t>(model.params().size())},
                       model.params().data()});
  }
  tensors.push_back({"adamw.m", DType::kF32, {n}, opt.m().data()});
  tensors.push_back({"adamw.v", DType::kF32, {n}, opt.v().data()});
  std::map<std::string, std::string> meta = {{"format", "tandem-train-state"},
                                             {"step", std::to_string(step)},
                                             {"adamw_step", std::to_string(opt.step())},
                                             {"rng", rng.SaveState()},
                                             {"config", model.config().ToString()},
                                             {"initial_val_loss",
                                              ExactDouble(totals.initial_val_loss)},
                                             {"seconds", ExactDouble(totals.seconds)}};
  return WriteSafetensors(path, tensors, meta);
}

Status LoadTrainState(const std::string& path, Gpt* model, AdamW* opt, int64_t* step, Rng* rng,
                      bool lora, EarlierSessions* totals) {
  TANDEM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  auto meta = [&](const std::string& k) { return RequireMetadata(file, k, path); };
  TANDEM_ASSIGN_OR_RETURN(std::string config, meta("config"));
  if (config != model->config().ToString()) {
    return Status::FailedPrecondition(path + ": checkpoint is for model " + config +
                                      ", the config asks for " + model->config().ToString());
  }
  auto params = lora ? model->lora_params() : model->params();
  auto copy = [&](const std::string& name, std::span<float> dest) -> Status {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end() || it->second.dtype != DType::kF32 ||
        it->second.elements() != dest.size()) {
      return Status::Corruption(path + ": tensor '" + name + "' missing or of the wrong size");
    }
    std::memcpy(dest.data(), it->second.bytes.data(), dest.size() * sizeof(float));
    return Status::Ok();
  };
  TANDEM_RETURN_IF_ERROR(copy("params", params));
  if (lora) TANDEM_RETURN_IF_ERROR(copy("base", model->params()));
  TANDEM_RETURN_IF_ERROR(copy("adamw.m", opt->m()));
  TANDEM_RETURN_IF_ERROR(copy("adamw.v", opt->v()));
  TANDEM_ASSIGN_OR_RETURN(std::string s, meta("step"));
  TANDEM_ASSIGN_OR_RETURN(std::string a, meta("adamw_step"));
  TANDEM_ASSIGN_OR_RETURN(std::string r, meta("rng"));
  try {
    *step = std::stoll(s);
    opt->set_step(std::stoll(a));
    auto initial = file.metadata.find("initial_val_loss");
    auto seconds = file.metadata.find("seconds");
    if (initial != file.metadata.end() && seconds != file.metadata.end()) {
      totals->initial_val_loss = initial->second == "nan" ? std::nan("") : std::stod(initial->second);
      totals->seconds = std::stod(seconds->second);
      totals->known = true;
    }
  } catch (const std::exception&) {
    return Status::Corruption(path + ": step metadata is not a number");
  }
  return rng->LoadState(r);
}

}  // namespace

StatusOr<TrainConfig> TrainConfigFromConfig(const Config& config) {
  TrainConfig t;
  TANDEM_ASSIGN_OR_RETURN(t.name, config.GetString("name", t.name));
  TANDEM_ASSIGN_OR_RETURN(t.out_dir, config.GetString("out_dir", t.out_dir));
  TANDEM_ASSIGN_OR_RETURN(int64_t seed, config.GetInt("seed", 1, 0));
  t.seed = static_cast<uint64_t>(seed);
  TANDEM_ASSIGN_OR_RETURN(t.model, ModelConfigFromConfig(config, "model"));
  if (t.model.vocab < ByteTokenizer::kVocabSize) {
    return Status::InvalidArgument(config.source() + ": model.vocab is " +
                                   std::to_string(t.model.vocab) +
                                   "; the byte tokenizer needs at least 256");
  }
  TANDEM_ASSIGN_OR_RETURN(t.init_checkpoint, config.GetString("model.init_checkpoint", ""));
  t.use_lora = config.Has("model.lora");
  if (t.use_lora) {
    TANDEM_ASSIGN_OR_RETURN(t.lora, LoraConfigFromConfig(config, "model.lora"));
  }
  TANDEM_ASSIGN_OR_RETURN(t.data, DataConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(int64_t batch, config.GetInt("train.batch", t.batch, 1, 4096));
  t.batch = static_cast<int>(batch);
  TANDEM_ASSIGN_OR_RETURN(t.steps, config.GetInt("train.steps", t.steps, 1));
  TANDEM_ASSIGN_OR_RETURN(t.max_seconds, config.GetDouble("train.max_seconds", 0.0, 0.0));
  TANDEM_ASSIGN_OR_RETURN(t.stop_at_step, config.GetInt("train.stop_at_step", 0, 0));
  TANDEM_ASSIGN_OR_RETURN(double lr, config.GetDouble("train.lr", 1e-3, 0.0, 10.0));
  t.schedule.lr = static_cast<float>(lr);
  TANDEM_ASSIGN_OR_RETURN(t.schedule.warmup_steps,
                          config.GetInt("train.warmup_steps", std::min<int64_t>(100, t.steps / 10), 0));
  TANDEM_ASSIGN_OR_RETURN(double min_ratio, config.GetDouble("train.min_lr_ratio", 0.1, 0.0, 1.0));
  t.schedule.min_lr_ratio = static_cast<float>(min_ratio);
  t.schedule.total_steps = t.steps;
  TANDEM_ASSIGN_OR_RETURN(double wd, config.GetDouble("train.weight_decay", 0.1, 0.0, 10.0));
  TANDEM_ASSIGN_OR_RETURN(double b1, config.GetDouble("train.beta1", 0.9, 0.0, 0.999999));
  TANDEM_ASSIGN_OR_RETURN(double b2, config.GetDouble("train.beta2", 0.95, 0.0, 0.999999));
  t.adamw.weight_decay = static_cast<float>(wd);
  t.adamw.beta1 = static_cast<float>(b1);
  t.adamw.beta2 = static_cast<float>(b2);
  TANDEM_ASSIGN_OR_RETURN(t.grad_clip, config.GetDouble("train.grad_clip", 1.0, 0.0));
  TANDEM_ASSIGN_OR_RETURN(t.eval_every, config.GetInt("train.eval_every", t.eval_every, 0));
  TANDEM_ASSIGN_OR_RETURN(t.eval_tokens, config.GetInt("train.eval_tokens", t.eval_tokens, 0));
  TANDEM_ASSIGN_OR_RETURN(t.checkpoint_every,
                          config.GetInt("train.checkpoint_every", t.checkpoint_every, 0));
  TANDEM_ASSIGN_OR_RETURN(int64_t em, config.GetInt("train.exact_match_per_category", 0, 0));
  t.exact_match_per_category = static_cast<int>(em);
  if (em > 0 && t.data.source != "arithmetic") {
    return Status::InvalidArgument(config.source() +
                                   ": train.exact_match_per_category scores prompt/answer "
                                   "tasks; it needs data.source = \"arithmetic\"");
  }
  TANDEM_ASSIGN_OR_RETURN(int64_t sample, config.GetInt("train.sample_tokens", 0, 0, 100000));
  t.sample_tokens = static_cast<int>(sample);
  TANDEM_ASSIGN_OR_RETURN(t.sample_prompt, config.GetString("train.sample_prompt", ""));
  TANDEM_ASSIGN_OR_RETURN(t.train_on, config.GetChoice("train.on", "train", {"train", "public"}));
  TANDEM_RETURN_IF_ERROR(config.CheckAllKeysUsed());
  return t;
}

StatusOr<TrainResult> RunTrain(const Config& config, bool resume, FILE* progress_out,
                               bool overwrite) {
  auto log = GetLogger("train");
  TANDEM_ASSIGN_OR_RETURN(TrainConfig tc, TrainConfigFromConfig(config));
  const std::string run_dir = tc.out_dir + "/" + tc.name;
  const std::string ckpt_dir = run_dir + "/checkpoints";

  CorpusFingerprint corpus;
  TANDEM_ASSIGN_OR_RETURN(DatasetSplits splits, LoadSplits(tc.data, &corpus));
  log->info("data: {} train, {} validation, {} test, {} public records from '{}'",
            splits.train.size(), splits.validation.size(), splits.test.size(),
            splits.public_.size(), tc.data.source);
  const std::vector<Record>& training = tc.train_on == "public" ? splits.public_ : splits.train;
  if (training.empty()) {
    return Status::InvalidArgument("train.on = \"" + tc.train_on + "\" but that split is empty" +
                                   (tc.train_on == "public"
                                        ? std::string("; set data.public_categories")
                                        : std::string()));
  }
  TANDEM_ASSIGN_OR_RETURN(
      Batcher batcher,
      Batcher::Create(TokenDataset::FromRecords(training), tc.batch, tc.model.context));

  std::unique_ptr<Gpt> model;
  if (!tc.init_checkpoint.empty()) {
    TANDEM_ASSIGN_OR_RETURN(model, LoadGpt(tc.init_checkpoint));
    if (!(model->config() == tc.model)) {
      return Status::InvalidArgument("model.init_checkpoint '" + tc.init_checkpoint +
                                     "' holds model " + model->config().ToString() +
                                     ", the config asks for " + tc.model.ToString());
    }
  } else {
    model = std::make_unique<Gpt>(tc.model);
    model->InitWeights(tc.seed);
  }
  if (tc.use_lora) TANDEM_RETURN_IF_ERROR(model->EnableLora(tc.lora, tc.seed + 1));
  const bool lora = tc.use_lora;
  TrainerOptions options;
  if (lora) options.trainable = Trainable::AdaptersOnly();
  options.adamw = tc.adamw;
  options.grad_clip = tc.grad_clip;
  LocalTrainer trainer(model.get(), options);
  AdamW& opt = trainer.optimizer();
  Rng rng(tc.seed * 7919 + 17);
  int64_t start = 0;
  EarlierSessions earlier;
  const std::string state_path = ckpt_dir + "/train_state.safetensors";
  const std::string metrics_path = run_dir + "/metrics.jsonl";
  // Everything is read and checked; only now is the run directory claimed (train/run_dir.h).
  TANDEM_ASSIGN_OR_RETURN(RunDirClaim claim, ClaimRunDirectory(run_dir, {resume, overwrite}));
  const bool resumed = resume && fs::exists(state_path);
  if (resumed) {
    TANDEM_RETURN_IF_ERROR(
        LoadTrainState(state_path, model.get(), &opt, &start, &rng, lora, &earlier));
    if (start > tc.steps) {
      return Status::FailedPrecondition(
          "run " + tc.name + "'s checkpoint is at step " + std::to_string(start) +
          ", beyond train.steps = " + std::to_string(tc.steps) +
          "; raise train.steps to continue it");
    }
    // At the last step without a summary (ClaimRunDirectory refuses a complete run): the
    // process stopped between its last checkpoint and its summary. Finish it.
    if (start == tc.steps) {
      log->info("resumed from {} at its last step {}: finishing the run", state_path, start);
    } else {
      log->info("resumed from {} at step {}", state_path, start);
    }
  } else {
    std::error_code ec;
    fs::remove(metrics_path, ec);
  }
  TANDEM_RETURN_IF_ERROR(MakeDirs(ckpt_dir));
  TANDEM_RETURN_IF_ERROR(WriteText(run_dir + "/config.toml", config.ToToml()));
  TANDEM_RETURN_IF_ERROR(WriteRunRecord(run_dir, config, corpus, resumed));
  log->info("model {} ({} parameters{}), batch {}, {} steps", tc.model.ToString(),
            model->num_params(), lora ? ", LoRA adapters trained" : "", tc.batch, tc.steps);

  const int eval_batch = std::max(1, std::min(tc.batch, 16));
  auto val_loss = [&]() -> StatusOr<double> {
    if (splits.validation.empty()) return std::nan("");
    TANDEM_ASSIGN_OR_RETURN(LossResult r,
                            EvaluateLoss(*model, splits.validation, eval_batch, tc.eval_tokens));
    return r.loss;
  };
  // A resumed run keeps the starting point of its first session.
  double initial_val = earlier.initial_val_loss;
  if (!earlier.known) {
    TANDEM_ASSIGN_OR_RETURN(initial_val, val_loss());
    earlier.initial_val_loss = initial_val;
  }
  TrainResult result;
  result.initial_val_loss = initial_val;
  result.run_dir = run_dir;

  const int B = tc.batch, T = tc.model.context;
  TextTerm text(batcher);
  trainer.set_steps_taken(start);
  Progress progress("train", tc.steps, progress_out);
  if (start == 0) {
    progress.Note("step 0: validation loss " + std::to_string(initial_val));
  }
  Stopwatch clock;
  int64_t tokens_done = 0;
  double last_loss = 0.0;
  int64_t step = start;
  for (; step < tc.steps; ++step) {
    const float lr = tc.schedule.At(step);
    StatusOr<std::vector<TermLoss>> losses = trainer.Step({&text}, lr, rng);
    if (!losses.ok()) return losses.status().WithContext("train.lr " + std::to_string(lr));
    last_loss = (*losses)[0].loss;
    const double norm = trainer.last_grad_norm();
    tokens_done += static_cast<int64_t>(B) * T;
    progress.Update(step + 1, tokens_done, {{"loss", last_loss}, {"lr", lr}});

    const bool last = step + 1 == tc.steps;
    const bool time_up = tc.max_seconds > 0 && clock.Seconds() >= tc.max_seconds;
    const bool stop_step = tc.stop_at_step > 0 && step + 1 == tc.stop_at_step;
    const bool out_of_time = time_up || stop_step;
    if ((tc.eval_every > 0 && (step + 1) % tc.eval_every == 0) || last || out_of_time) {
      TANDEM_ASSIGN_OR_RETURN(double v, val_loss());
      nlohmann::json line = {{"step", step + 1},      {"train_loss", last_loss},
                             {"val_loss", v},         {"lr", lr},
                             {"grad_norm", norm},     {"seconds", earlier.seconds + clock.Seconds()},
                             {"tokens_per_s", tokens_done / std::max(1e-9, clock.Seconds())}};
      std::string note = "step " + std::to_string(step + 1) + ": validation loss " +
                         std::to_string(v);
      if (tc.exact_match_per_category > 0) {
        // Adapters are merged into a copy: merging and unmerging in float32 does not give back
        // the base bit for bit, and the trained model must not drift.
        std::unique_ptr<Gpt> merged;
        if (lora) {
          merged = std::make_unique<Gpt>(*model);
          merged->MergeLora();
        }
        for (const auto& [cat, em] : EvaluateExactMatch(lora ? *merged : *model,
                                                        splits.validation,
                                                        tc.exact_match_per_category)) {
          line["exact_match"][cat] = em.accuracy();
          note += " " + cat + " " + std::to_string(em.accuracy());
        }
      }
      progress.Note(note);
      TANDEM_RETURN_IF_ERROR(AppendLine(metrics_path, line.dump()));
      result.final_val_loss = v;
    }
    if ((tc.checkpoint_every > 0 && (step + 1) % tc.checkpoint_every == 0) || last ||
        out_of_time) {
      EarlierSessions so_far = earlier;
      so_far.seconds += clock.Seconds();
      TANDEM_RETURN_IF_ERROR(
          SaveTrainState(state_path, *model, opt, step + 1, rng, lora, so_far));
      TANDEM_RETURN_IF_ERROR(SaveGpt(ckpt_dir + "/model.safetensors", *model));
      if (lora) TANDEM_RETURN_IF_ERROR(SaveLora(ckpt_dir + "/lora.safetensors", *model));
    }
    if (out_of_time) {
      progress.Note(std::string(time_up ? "time budget train.max_seconds" : "train.stop_at_step") +
                    " reached after step " + std::to_string(step + 1) + " of " +
                    std::to_string(tc.steps) + "; checkpoint saved, --resume continues");
      ++step;
      break;
    }
  }
  progress.Finish();
  // A session that only finishes the run (resumed at its last step) evaluates once here.
  if (start == tc.steps) {
    TANDEM_ASSIGN_OR_RETURN(result.final_val_loss, val_loss());
  }
  result.steps = step;
  // Tokens per second is this session's rate; seconds are the whole run's.
  result.tokens_per_second = tokens_done / std::max(1e-9, clock.Seconds());
  result.seconds = earlier.seconds + clock.Seconds();
  if (!splits.test.empty()) {
    TANDEM_ASSIGN_OR_RETURN(LossResult test,
                            EvaluateLoss(*model, splits.test, eval_batch, tc.eval_tokens));
    result.final_test_loss = test.loss;
  }
  nlohmann::json summary = {{"name", tc.name},
                            {"model", tc.model.ToString()},
                            {"parameters", model->num_params()},
                            {"steps", result.steps},
                            {"initial_val_loss", result.initial_val_loss},
                            {"final_val_loss", result.final_val_loss},
                            {"final_test_loss", result.final_test_loss},
                            {"seconds", result.seconds},
                            {"tokens_per_s", result.tokens_per_second},
                            {"complete", result.steps >= tc.steps}};
  if (tc.sample_tokens > 0) {
    std::unique_ptr<Gpt> merged;
    if (lora) {
      merged = std::make_unique<Gpt>(*model);
      merged->MergeLora();
    }
    Generator gen(lora ? *merged : *model);
    Rng sample_rng(tc.seed);
    SamplingConfig sampling;
    sampling.temperature = 0.8f;
    sampling.top_k = 40;
    std::vector<int32_t> prompt = {ByteTokenizer::kEndOfText};
    ByteTokenizer::EncodeAppend(tc.sample_prompt, &prompt);
    auto out = gen.Generate(prompt, tc.sample_tokens, sampling, sample_rng);
    summary["sample"] = tc.sample_prompt + ByteTokenizer::Decode(out);
  }
  TANDEM_RETURN_IF_ERROR(WriteText(run_dir + "/summary.json", summary.dump(2) + "\n"));
  return result;
}

StatusOr<double> BenchTrainStep(const std::string& preset, int batch, int steps, int warmup) {
  TANDEM_ASSIGN_OR_RETURN(ModelConfig config, ModelPreset(preset));
  if (batch < 1 || steps < 1 || warmup < 0) {
    return Status::InvalidArgument("bench train needs batch >= 1, steps >= 1, warmup >= 0");
  }
  Gpt model(config);
  model.InitWeights(1);
  AdamW opt(AdamWConfig{}, model.layout());
  const int T = config.context;
  std::vector<int32_t> tokens(static_cast<size_t>(batch) * T), targets(tokens.size());
  Rng rng(3);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.Below(config.vocab));
  for (auto& t : targets) t = static_cast<int32_t>(rng.Below(config.vocab));
  auto step = [&] {
    model.ZeroGrad();
    model.Forward(tokens.data(), targets.data(), batch, T);
    model.Backward();
    ClipGradientNorm(model.grads(), 1.0);
    opt.Step(model.params(), model.grads(), 3e-4f);
  };
  for (int i = 0; i < warmup; ++i) step();
  Stopwatch clock;
  for (int i = 0; i < steps; ++i) step();
  return static_cast<double>(batch) * T * steps / clock.Seconds();
}

}  // namespace tandem

// The `tandem prune` command (see prune_command.h).
#include "apps/prune_command.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/progress.h"
#include "core/timer.h"
#include "data/batcher.h"
#include "data/public_windows.h"
#include "distill/kd_terms.h"
#include "models/gpt_checkpoint.h"
#include "models/safetensors.h"
#include "prune/alignment_map.h"
#include "prune/extract.h"
#include "prune/importance.h"
#include "prune/plan.h"
#include "train/data_setup.h"
#include "train/evaluate.h"
#include "train/local_trainer.h"

namespace tandem {

CLI::App* AddPruneCommand(CLI::App& app, PruneOptions* o) {
  auto* cmd = app.add_subcommand(
      "prune", "A smaller model cut from a larger one, with its alignment map");
  cmd->add_option("config", o->config, "TOML config naming the data (its public split calibrates)")
      ->required()->check(CLI::ExistingFile);
  cmd->add_option("--set", o->overrides, "Override a config key");
  cmd->add_option("--checkpoint", o->checkpoint, "The parent model (safetensors)")
      ->required()->check(CLI::ExistingFile);
  cmd->add_option("--to", o->to, "Target shape: a preset (slm-small), a width ratio (0.5) or layers=N")
      ->required();
  cmd->add_option("--method", o->method, "Importance: activation, taylor, magnitude or random")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "Where to write the pruned model (safetensors)")->required();
  cmd->add_flag("--global", o->global,
                "Rank heads and neurons across blocks, so kept blocks may differ in width");
  cmd->add_option("--calibration-batches", o->calibration_batches,
                  "Batches of public text the scores are computed on")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--batch", o->batch, "Sequences per calibration and recovery batch")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  cmd->add_option("--recover-steps", o->recover_steps,
                  "Distil the pruned model from the parent for this many steps")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{100000000}));
  cmd->add_option("--lr", o->lr, "Recovery learning rate")->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", o->temperature, "Recovery distillation temperature")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--alpha", o->alpha, "Recovery weight of the text loss; 1 - alpha goes to KD")
      ->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--eval-tokens", o->eval_tokens,
                  "Held-out tokens for the before/after losses (0: skip)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_flag("!--no-parent-eval", o->parent_eval,
                "Skip the parent's held-out loss (when it is known already)");
  cmd->add_option("--eval-at", o->eval_at,
                  "Recovery steps after which the held-out loss is also measured (1,3,10)")
      ->delimiter(',');
  cmd->add_option("--json", o->json, "Also write a summary of the cut and its losses here");
  cmd->add_option("--seed", o->seed, "Seed of calibration, random scores and recovery "
                                     "(default: the config's seed)");
  return cmd;
}

namespace {

std::string Millions(size_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  return buf;
}

}  // namespace

Status RunPrune(const Config& config, const PruneOptions& o) {
  TANDEM_ASSIGN_OR_RETURN(ImportanceMethod method, ParseImportanceMethod(o.method));
  std::vector<int64_t> eval_at = o.eval_at;
  std::sort(eval_at.begin(), eval_at.end());
  eval_at.erase(std::unique(eval_at.begin(), eval_at.end()), eval_at.end());
  if (!eval_at.empty() && (o.eval_tokens <= 0 || eval_at.front() < 1 ||
                           eval_at.back() > o.recover_steps)) {
    return Status::InvalidArgument(
        "--eval-at needs held-out tokens (--eval-tokens > 0) and steps in [1, --recover-steps = " +
        std::to_string(o.recover_steps) + "]");
  }
  int64_t seed = o.seed;
  if (seed < 0) {
    TANDEM_ASSIGN_OR_RETURN(seed, config.GetInt("seed", 1, 0));
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Gpt> parent, LoadGpt(o.checkpoint));
  if (parent->has_lora()) {
    return Status::InvalidArgument(o.checkpoint + ": prune a model without LoRA adapters");
  }
  const ModelConfig& pc = parent->config();
  TANDEM_ASSIGN_OR_RETURN(PruneTarget target, ParsePruneShape(o.to, pc));
  target.global = o.global;

  // Public text: calibration batches and the recovery's windows.
  TANDEM_ASSIGN_OR_RETURN(DataConfig data, DataConfigFromConfig(config));
  TANDEM_ASSIGN_OR_RETURN(DatasetSplits splits, LoadSplits(data));
  if (splits.public_.empty()) {
    return Status::InvalidArgument(
        config.source() + ": the data has no public split to calibrate on; set "
        "data.public_fraction or data.public_categories");
  }
  const TokenDataset stream = TokenDataset::FromRecords(splits.public_);
  const int T = pc.context;
  if (stream.size() < static_cast<size_t>(T) + 2) {
    return Status::InvalidArgument(config.source() + ": the public split holds " +
                                   std::to_string(stream.size()) +
                                   " tokens, fewer than one context window (" +
                                   std::to_string(T) + ") of the model");
  }
  TANDEM_ASSIGN_OR_RETURN(Batcher batcher, Batcher::Create(stream, o.batch, T));
  CalibrationBatches cal;
  cal.batch = o.batch;
  cal.context = T;
  const size_t per_batch = static_cast<size_t>(o.batch) * T;
  cal.tokens.resize(per_batch * o.calibration_batches);
  cal.targets.resize(cal.tokens.size());
  Rng rng(static_cast<uint64_t>(seed));
  for (int b = 0; b < o.calibration_batches; ++b) {
    batcher.Next(&rng, cal.tokens.data() + b * per_batch, cal.targets.data() + b * per_batch);
  }

  std::fprintf(stderr, "prune: parent %s (%s parameters) from %s\n", pc.ToString().c_str(),
               Millions(parent->num_params()).c_str(), o.checkpoint.c_str());
  Stopwatch timer;
  TANDEM_ASSIGN_OR_RETURN(ImportanceScores scores,
                          ComputeImportance(parent->shared_weights(), method, cal,
                                            static_cast<uint64_t>(seed)));
  const double score_seconds = timer.Seconds();
  std::fprintf(stderr, "prune: %s scores over %d x (%d, %d) public tokens in %.1f s\n",
               ImportanceMethodName(method), o.calibration_batches, o.batch, T, score_seconds);
  TANDEM_ASSIGN_OR_RETURN(AlignmentMap map, PlanPrune(pc, scores, target));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<GptWeights> cut, Extract(parent->weights(), map));
  Gpt child(std::shared_ptr<GptWeights>(std::move(cut)));
  std::string kept_layers;
  for (int l : map.layers) kept_layers += (kept_layers.empty() ? "" : ",") + std::to_string(l);
  std::fprintf(stderr, "prune: child %s (%s parameters, %.1f%% of the parent), parent blocks %s\n",
               child.config().ToString().c_str(), Millions(child.num_params()).c_str(),
               100.0 * child.num_params() / parent->num_params(), kept_layers.c_str());

  const bool eval = o.eval_tokens > 0 && !splits.validation.empty();
  double parent_loss = NAN, pruned_loss = NAN, recovered_loss = NAN;
  if (eval) {
    if (o.parent_eval) {
      TANDEM_ASSIGN_OR_RETURN(LossResult p,
                              EvaluateLoss(*parent, splits.validation, o.batch, o.eval_tokens));
      parent_loss = p.loss;
    }
    TANDEM_ASSIGN_OR_RETURN(LossResult c,
                            EvaluateLoss(child, splits.validation, o.batch, o.eval_tokens));
    pruned_loss = c.loss;
    std::fprintf(stderr, "prune: held-out loss parent %.4f, pruned %.4f\n", parent_loss,
                 pruned_loss);
  }
  // One entry per measured point of the recovery: its steps, its wall seconds so far (training
  // alone, not the evaluations) and the held-out loss there.
  nlohmann::json recovery = nlohmann::json::array();

  if (o.recover_steps > 0) {
    // Minitron's recovery: distil the child from the parent (DenseDistillTerm with the parent
    // as a ModelTeacher), its text loss weighted by alpha, through the shared LocalTrainer.
    const int windows = static_cast<int>(
        std::min<int64_t>(std::max<int64_t>(o.batch, o.recover_steps * o.batch), 1 << 16));
    TANDEM_ASSIGN_OR_RETURN(
        PublicWindows pw,
        PublicWindows::Create(stream,
                              PublicWindows::Draw(stream.size(), T, windows,
                                                  static_cast<uint64_t>(seed), 0),
                              T));
    KdOptions kd;
    kd.temperature = static_cast<float>(o.temperature);
    kd.alpha = static_cast<float>(o.alpha);
    DenseDistillTerm term(std::move(pw), ModelTeacher(parent.get()), kd, o.batch, pc.vocab);
    TrainerOptions topts;
    LocalTrainer trainer(&child, topts);
    Progress progress("recover", o.recover_steps);
    Rng train_rng(static_cast<uint64_t>(seed) + 1);
    double train_seconds = 0.0;
    auto next_eval = eval_at.begin();
    for (int64_t step = 0; step < o.recover_steps; ++step) {
      Stopwatch step_timer;
      TANDEM_ASSIGN_OR_RETURN(std::vector<TermLoss> losses,
                              trainer.Step({&term}, static_cast<float>(o.lr), train_rng));
      train_seconds += step_timer.Seconds();
      progress.Update(step + 1, (step + 1) * static_cast<int64_t>(per_batch),
                      {{"loss", losses[0].loss}, {"kl", losses[0].kl}, {"ce", losses[0].ce}});
      const bool last = step + 1 == o.recover_steps;
      const bool asked = next_eval != eval_at.end() && *next_eval == step + 1;
      if (asked) ++next_eval;
      if (!last && !asked) continue;
      double loss = NAN;
      if (eval) {
        TANDEM_ASSIGN_OR_RETURN(LossResult c,
                                EvaluateLoss(child, splits.validation, o.batch, o.eval_tokens));
        loss = c.loss;
        std::fprintf(stderr, "prune: held-out loss after %lld recovery steps %.4f\n",
                     static_cast<long long>(step + 1), loss);
      }
      if (last) recovered_loss = loss;
      recovery.push_back({{"steps", step + 1},
                          {"tokens", (step + 1) * static_cast<int64_t>(per_batch)},
                          {"seconds", train_seconds},
                          {"loss", loss}});
    }
    progress.Finish();
  }

  std::map<std::string, std::string> meta = {
      {"pruned_from", o.checkpoint},
      {"prune_method", ImportanceMethodName(method)},
      {"prune_shape", o.to},
      {"prune_recover_steps", std::to_string(o.recover_steps)}};
  TANDEM_RETURN_IF_ERROR(SavePrunedGpt(o.out, child.weights(), map, meta));
  if (!o.json.empty()) {
    // NaN (a loss not measured) is written as null.
    const nlohmann::json summary = {
        {"parent", {{"checkpoint", o.checkpoint},
                    {"model", pc.ToString()},
                    {"parameters", parent->num_params()},
                    {"loss", parent_loss}}},
        {"child", {{"out", o.out},
                   {"model", child.config().ToString()},
                   {"parameters", child.num_params()},
                   {"parent_layers", map.layers}}},
        {"shape", o.to},
        {"method", ImportanceMethodName(method)},
        {"global", o.global},
        {"seed", seed},
        {"batch", o.batch},
        {"context", T},
        {"calibration_batches", o.calibration_batches},
        {"score_seconds", score_seconds},
        {"eval_tokens", eval ? o.eval_tokens : 0},
        {"pruned_loss", pruned_loss},
        {"recover_steps", o.recover_steps},
        {"lr", o.lr},
        {"temperature", o.temperature},
        {"alpha", o.alpha},
        {"recovery", recovery}};
    const std::string text = summary.dump(2) + "\n";
    TANDEM_RETURN_IF_ERROR(WriteFileAtomic(o.json, {text.begin(), text.end()}));
  }
  std::printf("pruned %s -> %s parameters (%s, %s)%s; written with its alignment map to %s\n",
              Millions(parent->num_params()).c_str(), Millions(child.num_params()).c_str(),
              o.to.c_str(), ImportanceMethodName(method),
              eval ? (", held-out loss " + std::to_string(parent_loss) + " -> " +
                      std::to_string(pruned_loss) +
                      (o.recover_steps > 0 ? " -> " + std::to_string(recovered_loss) : ""))
                         .c_str()
                   : "",
              o.out.c_str());
  return Status::Ok();
}

}  // namespace tandem

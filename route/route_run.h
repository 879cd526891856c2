// `tandem route train` and `tandem route eval` (docs/routing.md, "Commands"): the device model
// post-trained to answer or hand off with GAPG or GRPO (route/gapg.h, route/policy_gradient.h)
// on the arithmetic task's training prompts, and evaluated on held-out prompts under a test-time
// hand-off budget against the baselines (device only, cloud only, random, a router, the oracle
// router). The cloud answers in this process from its checkpoint (greedy), behind CloudAnswer.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/rng.h"
#include "core/status.h"
#include "data/arithmetic.h"

namespace tandem {

// The [route] section, read and checked as a whole before anything runs.
struct RouteConfig {
  std::string name = "route";
  std::string out_dir = "runs";
  uint64_t seed = 1;
  std::string device_checkpoint;  // the task-tuned device (required)
  std::string cloud_checkpoint;   // the cloud (required)
  // The prompts: examples_per_level per level, de-duplicated by prompt text, split by a hash of
  // (seed, prompt) into training and test prompts; no prompt is in both.
  std::vector<int> levels = {1};
  int64_t examples_per_level = 2000;
  double test_fraction = 0.3;
  // Prompts the task-tuning runs saw are never test prompts: those of the first
  // task_data_examples_per_level records per level that `tandem train` draws with data.seed =
  // task_data_seed (train/data_setup.h; every split of them, to be safe) go to the training
  // prompts. 0: no exclusion.
  uint64_t task_data_seed = 0;
  int64_t task_data_examples_per_level = 0;
  int max_tokens = 8;  // answer tokens decoded per completion
  // Supervised warm start: the device learns to emit the marker on a random
  // warm_start_handoff_fraction of training records (the others keep their answers).
  int64_t warm_start_steps = 100;
  double warm_start_handoff_fraction = 0.3;
  double warm_start_lr = 1e-3;
  int warm_start_batch = 16;
  // What the warm start and the policy gradient train: "marker" (the hand-off marker's output
  // row alone, so the device's answers stay exactly as they were), "top" (that row, the top
  // block and the final LayerNorm) or "all".
  std::string trainable = "marker";
  // Policy gradient.
  std::string mode = "gapg";  // or "grpo"
  int64_t steps = 200;
  double lr = 5e-4;
  int group_size = 8;
  int prompts_per_step = 8;
  double temperature = 1.0;
  double answer_correct = 1.0;   // a_a
  double handoff_correct = 0.5;  // a_c
  double rho = 0.5;              // the adaptive filter's ρ
  int64_t filter_every = 25;     // steps between filter passes; 0: no filter
  int64_t checkpoint_every = 50;
  // Evaluation.
  std::string baseline = "policy";  // policy, device, cloud, random, router, oracle
  double budget = 0.3;              // the test-time cap's max_fraction
  // How the cap grants: "online" (HandOffCap over the queries in arrival order) or "ranked"
  // (RankedHandOffGrants over the whole evaluation set: the budget's share of the highest
  // scores), the same for every method.
  std::string cap = "online";
  // Who answers the queries the policy keeps: "policy" (its own greedy answer, marker banned) or
  // "device" (the task-tuned device's, so only the hand-off decisions are the policy's).
  std::string policy_answers = "policy";
  std::string policy_checkpoint;    // "": the run's checkpoints/model.safetensors
  int64_t eval_prompts = 0;         // 0: every test prompt
  std::string eval_split = "test";  // or "train": how well the routing fits its own prompts
};

StatusOr<RouteConfig> RouteConfigFromConfig(const Config& config);

// The run directory, out_dir/name.
std::string RouteRunDirectory(const RouteConfig& rc);

struct RoutePrompts {
  std::vector<ArithmeticExample> train, test;  // disjoint by prompt text
  int64_t excluded_from_test = 0;  // prompts sent to training because task-tuning saw them
};
StatusOr<RoutePrompts> MakeRoutePrompts(const RouteConfig& rc);

struct RouteTrainResult {
  int64_t steps = 0;
  double final_mean_reward = 0.0;
  double final_handoff_rate = 0.0;
  int64_t cloud_queries = 0;
  std::string run_dir;
};

// Warm start then `steps` policy-gradient steps; checkpoints and a progress line per step to
// `progress` (may be null). resume/overwrite as `tandem train`'s.
StatusOr<RouteTrainResult> RunRouteTrain(const Config& config, bool resume, bool overwrite,
                                         FILE* progress);

struct RouteEvalResult {
  std::string baseline;
  double budget = 0.0;
  int64_t queries = 0, correct = 0;
  int64_t local_answered = 0, local_correct = 0;  // answered by the device (refusals included)
  int64_t handoffs = 0;                           // granted
  int64_t requested = 0;                          // hand-offs asked for, granted or not
  int64_t cloud_correct = 0;                      // of the granted hand-offs
  // The policy's own preference, before any budget: prompts whose marker probability is > 1/2
  // (the call ratio it would have without a cap); -1 for the baselines.
  int64_t preferred = -1;
  double accuracy() const { return queries ? double(correct) / queries : 0.0; }
  double local_accuracy() const {
    return local_answered ? double(local_correct) / local_answered : 0.0;
  }
  double call_ratio() const { return queries ? double(handoffs) / queries : 0.0; }
  double requested_ratio() const { return queries ? double(requested) / queries : 0.0; }
  double preferred_ratio() const { return queries ? double(preferred) / queries : 0.0; }
  std::string Line() const;
  std::string Json() const;
};

// Shuffles `queries` into the order `tandem route eval` asks them in, drawn from `seed`, and
// returns the generator after the shuffle (evaluation draws from it next).
Rng ShuffleIntoEvalOrder(std::vector<ArithmeticExample>* queries, uint64_t seed);

// One baseline on the test prompts, in an order shuffled by the seed, under the budget.
StatusOr<RouteEvalResult> RunRouteEval(const Config& config);

}  // namespace tandem

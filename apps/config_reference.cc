// The generated config reference (see config_reference.h).
#include "apps/config_reference.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "algorithms/common/strategy.h"
#include "algorithms/registry.h"
#include "client/client.h"
#include "coordinator/coordinator.h"
#include "data/partition.h"
#include "route/route_run.h"
#include "serve/server.h"
#include "train/data_setup.h"
#include "train/trainer.h"

namespace tandem {
namespace {

// A config that switches every optional part on, so that the readers go down every branch that
// reads keys: both privacy sections with adaptive clipping, LoRA. The data source is a file that
// does not exist, so the coordinator and the client stop right after reading their plan, before
// anything is bound, loaded or written.
constexpr const char* kEverythingOn = R"(
[data]
source = "/nonexistent/tandem-config-reference/corpus.txt"
[privacy.dp]
enabled = true
adaptive_clipping = true
bit_noise_multiplier = 2.0
[privacy.secagg]
enabled = true
)";

// One line per key: what it means. Types, defaults and ranges come from the readers.
const std::map<std::string, std::string>& Descriptions() {
  static const std::map<std::string, std::string> kDescriptions = {
      {"name",
       "The run's name: its directory is out_dir/name."},
      {"out_dir",
       "Where run directories are made."},
      {"route-gapg.answer_correct",
       "GAPG reward a_a of a correct answer of the device's own; must be > route-gapg.handoff_correct."},
      {"route-gapg.client_budgets",
       "Each client's hand-off budget in (0, 1] (client K: entry K mod length): within a round its sampled completions pass, in order, through the test-time cap at this fraction, and a hand-off the cap refuses earns 0 (the cloud is not asked)."},
      {"route-gapg.client_parts",
       "The part of the split each client holds (client K: entry K mod length, each in [0, parts)); empty = part K mod parts. [1] with federation.clients = 1 runs client 1's part alone."},
      {"route-gapg.cloud_checkpoint",
       "The cloud model's checkpoint: the coordinator's inference service serves it (it must be at least as large as the device), and the clients' hand-offs are answered by it, greedily."},
      {"route-gapg.device_checkpoint",
       "The task-tuned device model's checkpoint: where the policy starts; its architecture must be [model]'s. Sent once to each client."},
      {"route-gapg.eval_budget",
       "The test-time cap of the last round's scores (eval.part<P>.*, eval.union.*), by `tandem route eval`'s rule."},
      {"route-gapg.eval_cap",
       "How the last round's scores grant hand-offs within route-gapg.eval_budget, as route.cap: \"online\" (HandOffCap, in arrival order) or \"ranked\" (RankedHandOffGrants: the budget's share of each part's held-out prompts, to the highest marker probabilities)."},
      {"route-gapg.examples_per_level",
       "Arithmetic examples generated per level before de-duplication by prompt text (as route.examples_per_level)."},
      {"route-gapg.filter",
       "Run the adaptive prompt filter (route-gapg.rho) over the client's training prompts at the start of each round; false = train on every training prompt."},
      {"route-gapg.group_size",
       "G: completions sampled per prompt (a group of the policy gradient; also the filter's samples)."},
      {"route-gapg.handoff_correct",
       "GAPG reward a_c of a hand-off whose cloud answer is correct; must be in (0, route-gapg.answer_correct)."},
      {"route-gapg.levels",
       "The arithmetic levels the prompts come from; the split divides them among the clients."},
      {"route-gapg.local_steps",
       "GAPG steps each client takes per round, from a fresh AdamW."},
      {"route-gapg.lr",
       "AdamW learning rate of the clients' GAPG steps (0 scores a policy without moving it)."},
      {"route-gapg.max_tokens",
       "Tokens decoded per completion (the device's and the service's)."},
      {"route-gapg.mode",
       "The advantage: \"gapg\" ((r - mean)/(G - 1)) or \"grpo\" (std-normalised)."},
      {"route-gapg.operand_parts",
       "With split = \"operand\": how many first-operand ranges the prompts are cut into; 0 = federation.clients."},
      {"route-gapg.prompts_per_step",
       "Prompts per GAPG step, each with route-gapg.group_size completions."},
      {"route-gapg.rho",
       "The adaptive filter's rho: besides the prompts with mixed local outcomes (D1), keep up to rho*|D1| prompts no local sample solved and the cloud does."},
      {"route-gapg.split",
       "How the prompts are divided into the clients' parts: \"level\" (part P is route-gapg.levels[P]) \"operand\" (part P of N is every level's prompts whose first operand lies in the P-th of N equal ranges) or \"operator\" (part P is every level's prompts whose first operator is the P-th of the levels' operators, in the order data/arithmetic.h lists them: level 2's part 0 is the additions, part 1 the subtractions)."},
      {"route-gapg.task_data_examples_per_level",
       "data.arithmetic.examples_per_level of the device's and the cloud's task-tuning run, as route.task_data_examples_per_level: the prompts of its records are never held-out prompts; 0 = no exclusion."},
      {"route-gapg.task_data_seed",
       "data.seed of that task-tuning run, used with route-gapg.task_data_examples_per_level."},
      {"route-gapg.temperature",
       "Sampling temperature of the clients' rollouts (the scores decode greedily, and read the marker's probability at this temperature)."},
      {"route-gapg.test_fraction",
       "Share of the distinct prompts held out, by a hash of (seed, prompt), as route.test_fraction: the clients never train on a held-out prompt."},
      {"route-gapg.trainable",
       "What the clients train and upload: \"marker\" (the hand-off marker's output row, d_model values) or \"all\" (every parameter)."},
      {"route-gapg.warm_start_batch",
       "Sequences per warm-start step."},
      {"route-gapg.warm_start_handoff_fraction",
       "Share of the warm start's records whose answer is replaced by the hand-off marker, at random prompts."},
      {"route-gapg.warm_start_lr",
       "AdamW learning rate of the warm start."},
      {"route-gapg.warm_start_steps",
       "Supervised steps at the start of round 1 on each client's own prompts that teach the device the hand-off marker; 0 = none."},
      {"route.answer_correct",
       "GAPG reward a_a of a correct answer of the device's own; must be > route.handoff_correct."},
      {"route.baseline",
       "What `tandem route eval` measures: \"policy\" (the trained device's own hand-offs), \"device\" (the task-tuned device alone), \"cloud\" (every query to the cloud), \"random\" (hand off with probability route.budget), \"router\" (a logistic-regression router on the device's confidence) or \"oracle\" (hands off exactly the prompts the device gets wrong)."},
      {"route.budget",
       "The test-time budget of `tandem route eval`: at most this fraction of the queries go to the cloud, granted as route.cap says; device and cloud baselines ignore it."},
      {"route.cap",
       "How `tandem route eval` grants hand-offs within route.budget, the same for every method: \"online\" (HandOffCap: in arrival order, while the granted ones stay within the budget of the queries so far) or \"ranked\" (RankedHandOffGrants: the budget's share of the whole test set, to the queries the method scores highest: the policy's marker probability, the router's probability of a device mistake, a random draw, the oracle's device mistakes)."},
      {"route.checkpoint_every",
       "Steps between checkpoints of `tandem route train` (the last step always saves); 0 = only the last."},
      {"route.cloud_checkpoint",
       "The cloud model's checkpoint; it answers hand-offs greedily, in this process."},
      {"route.device_checkpoint",
       "The task-tuned device model's checkpoint: where `tandem route train` starts, and the device of the eval baselines."},
      {"route.eval_prompts",
       "Test prompts `tandem route eval` scores (the first of the seeded order); 0 = every test prompt."},
      {"route.eval_split",
       "The prompts `tandem route eval` scores: \"test\" (held out from the router and the policy) or \"train\" (the prompts they were fitted on: how well the routing fits them, not a result)."},
      {"route.examples_per_level",
       "Arithmetic examples generated per level before de-duplication by prompt text."},
      {"route.filter_every",
       "Policy-gradient steps between passes of the adaptive prompt filter over every training prompt (route.group_size samples each); 0 = no filter, train on every training prompt."},
      {"route.group_size",
       "G: completions sampled per prompt (a group of the policy gradient; also the filter's samples)."},
      {"route.handoff_correct",
       "GAPG reward a_c of a hand-off whose cloud answer is correct; must be in (0, route.answer_correct)."},
      {"route.levels",
       "The arithmetic levels (data/arithmetic.h) the prompts come from."},
      {"route.lr",
       "AdamW learning rate of the policy-gradient steps (constant)."},
      {"route.max_tokens",
       "Tokens decoded per completion (an answer and its newline, or the marker and its newline)."},
      {"route.mode",
       "The advantage: \"gapg\" ((r - mean)/(G - 1), unbiased) or \"grpo\" (std-normalised, the paper's baseline)."},
      {"route.policy_checkpoint",
       "The policy `tandem route eval` scores with route.baseline = \"policy\"; empty = the run's checkpoints/model.safetensors."},
      {"route.prompts_per_step",
       "Prompts per policy-gradient step, each with route.group_size completions."},
      {"route.rho",
       "The adaptive filter's rho: besides the prompts with mixed local outcomes (D1), keep up to rho*|D1| prompts no local sample solved and the cloud does."},
      {"route.steps",
       "Policy-gradient steps of `tandem route train`, after the warm start."},
      {"route.temperature",
       "Sampling temperature of the training rollouts (evaluation decodes greedily)."},
      {"route.test_fraction",
       "Share of the distinct prompts held out for `tandem route eval`, by a hash of (seed, prompt): no test prompt is a training prompt."},
      {"route.trainable",
       "What `tandem route train` trains: \"marker\" (the hand-off marker's output row alone, a linear hand-off head on the device's final hidden state; the device's answers stay exactly as they were), \"top\" (that row, the top block and the final LayerNorm: the head reads learnt features, and the answers move too) or \"all\" (every parameter)."},
      {"route.policy_answers",
       "Who answers the queries the policy keeps in `tandem route eval`: \"policy\" (its own greedy answer, marker banned) or \"device\" (the task-tuned device's, so only the hand-off decisions are the policy's: like for like with the device after route.trainable = \"top\" or \"all\")."},
      {"route.task_data_seed",
       "data.seed of the task-tuning run (`tandem train`) of the device and the cloud, used with route.task_data_examples_per_level."},
      {"route.task_data_examples_per_level",
       "data.arithmetic.examples_per_level of that task-tuning run: the prompts of its records (all its splits) are never test prompts; 0 = no exclusion."},
      {"route.warm_start_batch",
       "Sequences per warm-start step."},
      {"route.warm_start_handoff_fraction",
       "Share of the warm start's records whose answer is replaced by the hand-off marker, at random prompts."},
      {"route.warm_start_lr",
       "AdamW learning rate of the supervised warm start (constant)."},
      {"route.warm_start_steps",
       "Supervised steps before the policy gradient that teach the device the hand-off marker; 0 = none."},
      {"serve.checkpoint",
       "The cloud model `tandem serve` serves (--checkpoint overrides it); a coordinator with serve.enabled serves its own largest model instead."},
      {"serve.deadline_ms",
       "A request's deadline when it gives none (deadline_ms 0): one still queued this long after it arrived is refused as late, uncomputed."},
      {"serve.enabled",
       "Whether the coordinator runs the cloud inference service beside its rounds: completions and speculative-decoding verifications for clients that ask, from a copy of its largest model refreshed after each round."},
      {"serve.max_batch",
       "Requests the inference service advances together in one pass (completions token by token, verifications in one pass each); 1 computes them one after another. Replies are the same either way."},
      {"serve.max_calls_per_client",
       "Requests the inference service accepts from one client in all (its budget; a late one, never computed, gives its call back); beyond it, refused. 0 = no limit."},
      {"serve.max_gamma",
       "The longest draft a verification request may carry (tokens)."},
      {"serve.max_inflight_per_client",
       "Requests of one client queued or being served at once; one more is refused as overloaded."},
      {"serve.max_new_tokens",
       "The most tokens a completion request may ask for."},
      {"serve.max_queue",
       "Requests waiting for the inference service's worker at once, across clients; one more is refused as overloaded."},
      {"serve.threads",
       "Compute threads of the inference service's worker; decoding is fastest on one at tandem's sizes, which leaves the other cores to the rounds (on more, a reply's last bits may depend on what shared its batch)."},
      {"seed",
       "The seed of everything random in the run (initialisation, sampling, noise), unless a more specific seed is set."},
      {"algorithm.name",
       "The algorithm the run executes (see README and docs/algorithms.md): what moves between the cloud and the edge."},
      {"client.batch",
       "Sequences per local training step on a client."},
      {"client.give_up_s",
       "A client without a coordinator for this long stops with an error (checked by the coordinator at start too)."},
      {"client.grad_clip",
       "Global L2 norm the clients' local gradients are clipped to; 0 = no clipping."},
      {"client.local_epochs",
       "Local training per round as passes over the client's own data (instead of local_steps); 0 = use local_steps."},
      {"client.local_steps",
       "Local training steps per round on a client."},
      {"client.lr",
       "The clients' local AdamW learning rate."},
      {"client.weight_decay",
       "The clients' local AdamW weight decay."},
      {"data.arithmetic.examples_per_level",
       "Generated examples per difficulty level when data.source = \"arithmetic\"."},
      {"data.arithmetic.levels",
       "The difficulty levels of the arithmetic task that are generated."},
      {"data.clients_per_language",
       "Cross-lingual setup: clients per language; client K holds data.languages[K / clients_per_language], partitioned by federation.partition among that language's clients."},
      {"data.languages",
       "Cross-lingual setup (docs/distillation.md): the clients' Debian fortunes-XX packages, one language per client; data.source is then the public corpus, whose held-out records watch forgetting."},
      {"data.public_categories",
       "Categories whose records form the public split (the coordinator's data, no client's)."},
      {"data.public_fraction",
       "Fraction of the records (of the other categories) held out as the public split."},
      {"data.seed",
       "The seed that shuffles records into splits and partitions; defaults to the top-level seed, so runs on several seeds can share one held-out set."},
      {"data.source",
       "The corpus: \"fortunes\", a fortunes-format directory, a .jsonl or text file, or \"arithmetic\"."},
      {"data.transfer_categories",
       "Cross-lingual setup: categories of each language held out from every client as the coordinator's public, unlabeled transfer pool (the public split), chosen by data.seed."},
      {"data.test_fraction",
       "Fraction of the records held out for the final test."},
      {"data.validation_fraction",
       "Fraction of the records held out for evaluation during the run."},
      {"distill-down.alpha",
       "On the clients' public batch: weight of cross-entropy on its text; 1 − alpha goes to distillation to the teacher."},
      {"distill-down.slms",
       "\"fedavg\": the SLMs are averaged every round; \"local\": each client keeps its own SLM and nothing goes up."},
      {"distill-down.teacher",
       "Checkpoint of the coordinator's LLM whose top-k predictions the clients learn from."},
      {"distill-down.temperature",
       "Distillation temperature applied to teacher and student logits."},
      {"distill-down.top_k",
       "The teacher's top-k predictions sent per position."},
      {"distill-down.weight",
       "Weight of the clients' public (distillation) batch against their own private batch."},
      {"distill-down.windows",
       "Public windows the teacher predicts on per round."},
      {"distill-up.alpha",
       "Weight of the LLM's cross-entropy on the public text; 1 − alpha goes to distillation to the clients' ensemble."},
      {"distill-up.confidence_threshold",
       "Distil only on positions whose teacher's max-probability at the temperature is at least this (the clients' ensemble: its top probability, or top vote share); 0 = every position. Masked positions keep their CE term."},
      {"distill-up.confidence_weighting",
       "Weight each position's KD term by the teacher's max-probability at the temperature (after confidence_threshold)."},
      {"distill-up.english_weight",
       "Weight of the LLM's own cross-entropy on windows of the public corpus (English; in the cross-lingual setup its public categories, never the transfer pool), added to its server steps so it does not forget English; 0 = off."},
      {"distill-up.ensemble",
       "What the clients upload and how the coordinator combines it: \"mean\" (probabilities, their plain mean), \"confidence\" (w·p and w per position, w a client's own max-probability: Σw·p / Σw) or \"votes\" (a vote for each client's top vote_top_k tokens per position: the PATE vote histogram; see docs/distillation.md for its DP sensitivity)."},
      {"distill-up.llm",
       "Checkpoint of the coordinator's LLM that learns from the clients' ensemble."},
      {"distill-up.server_batch",
       "Windows per step of the coordinator's LLM training."},
      {"distill-up.server_lr",
       "Learning rate of the coordinator's LLM training (AdamW, its state kept across rounds and in checkpoints)."},
      {"distill-up.server_steps",
       "The coordinator's LLM training steps per round."},
      {"distill-up.temperature",
       "Distillation temperature of the LLM against the ensemble."},
      {"distill-up.vote_top_k",
       "With ensemble = \"votes\": each position's vote is shared equally among the client's top-k tokens (L2 sensitivity of a round's votes √(positions / k))."},
      {"distill-up.windows",
       "Public windows the clients predict on per round."},
      {"eval.clients",
       "Also evaluate every client's model on its own held-out data each round (a task of its own)."},
      {"eval.tokens",
       "Held-out target tokens per evaluation; 0 = all."},
      {"fedbiot.alpha",
       "Weight of the cross-entropy on the public text in the emulator's distillation to the LLM; 1 − alpha goes to KD on the LLM's logits."},
      {"fedbiot.adapters",
       "What the clients train on the adapter blocks: \"full\" (the blocks' weights, which go down and up every round) or \"lora\" (LoRA factors on them, fedbiot.lora.*: only the factors train and move, the blocks' own weights stay frozen; merged into the LLM's blocks when plugged back)."},
      {"fedbiot.bottom",
       "The LLM's bottom blocks that are adapters: trained by the clients, plugged back into the LLM."},
      {"fedbiot.emulator_keep",
       "Share of the middle blocks (between the adapters) the emulator keeps, spread evenly (uniform layer drop); 1 keeps them all."},
      {"fedbiot.lora.alpha",
       "LoRA scaling numerator of the adapters (fedbiot.adapters = \"lora\"): factors are scaled by alpha / rank."},
      {"fedbiot.lora.rank",
       "LoRA rank of the adapters (fedbiot.adapters = \"lora\"); set with \"full\" adapters it is an error."},
      {"fedbiot.lora.targets",
       "The linear layers of the adapter blocks that carry LoRA factors (fedbiot.adapters = \"lora\")."},
      {"fedbiot.hidden_weight",
       "Weight of the hidden-state term in the emulator's distillation: the squared error between the output of the emulator's middle and the LLM's at the same place (the input of the top adapters), normalized by the LLM's own; 0 = KD on logits alone."},
      {"fedbiot.proximal_mu",
       "Weight of the clients' proximal term towards the adapters they were sent (FedBiOT)."},
      {"fedbiot.server_batch",
       "Public windows per step of the emulator's distillation."},
      {"fedbiot.server_lr",
       "Learning rate of the emulator's AdamW in its distillation to the LLM."},
      {"fedbiot.server_steps",
       "Steps of the emulator's re-alignment to the LLM (adapters plugged in) before every round."},
      {"fedbiot.temperature",
       "Distillation temperature of the emulator against the LLM."},
      {"fedbiot.top",
       "The LLM's top blocks that are adapters."},
      {"fedbiot.windows",
       "Public windows the emulator is distilled on per distillation."},
      {"fedcollm.alpha",
       "Weight of the trained model's cross-entropy on the public text in the coordinator's distillation; 1 − alpha goes to KD."},
      {"fedcollm.confidence_threshold",
       "Distil only on positions whose teacher's max-probability at the temperature is at least this (in each direction, the model that teaches); 0 = every position. Masked positions keep their CE term."},
      {"fedcollm.confidence_weighting",
       "Weight each position's KD term by the teacher's max-probability at the temperature (after confidence_threshold)."},
      {"fedcollm.english_weight",
       "Weight of the LLM's own cross-entropy on windows of the public corpus (English; in the cross-lingual setup its public categories, never the transfer pool), added to its SLM → LLM steps so it does not forget English; 0 = off."},
      {"fedcollm.llm",
       "Checkpoint of the coordinator's LLM, distilled to and from the SLM."},
      {"fedcollm.server_batch",
       "Windows per step of the coordinator's distillation."},
      {"fedcollm.server_lr",
       "Learning rate of the LLM's AdamW (SLM → LLM), its state kept across rounds and in checkpoints."},
      {"fedcollm.server_steps",
       "The coordinator's distillation steps per round, each way."},
      {"fedcollm.slm_lr",
       "Learning rate of the SLM adapters' AdamW on the coordinator (LLM → SLM), its state kept across rounds and in checkpoints."},
      {"fedcollm.temperature",
       "Distillation temperature, both ways."},
      {"fedcollm.windows",
       "Public windows distilled on per round."},
      {"federation.client_init_checkpoints",
       "One starting checkpoint per federation.client_models entry; empty = fresh from the seed."},
      {"federation.client_models",
       "Model presets of the clients: client K runs entry K mod length; empty = every client runs [model]."},
      {"federation.clients",
       "Clients in the federation (the population N); `tandem run` starts this many."},
      {"federation.cohort",
       "Clients per round; 0 = use cohort_fraction. At most federation.clients."},
      {"federation.cohort_fraction",
       "Clients per round as a fraction of federation.clients (when cohort is 0)."},
      {"federation.curve",
       "CURVE encryption and the allow-list of client keys; on by default for tcp."},
      {"federation.endpoint",
       "The address the coordinator binds and clients connect to; empty = derived from the transport and the run directory."},
      {"federation.heartbeat_ms",
       "Interval of heartbeats between the coordinator and a client."},
      {"federation.keys_dir",
       "Where the CURVE keys and the allow-list are (tandem run makes them when missing)."},
      {"federation.min_results",
       "Results a round needs before its deadline may close it; 0 = the whole cohort. At most federation.clients."},
      {"federation.partition",
       "How the private records are dealt to the clients: \"iid\", \"by-category\" or \"dirichlet(ALPHA)\". Checked by the coordinator at start."},
      {"federation.peer_timeout_ms",
       "A peer silent for this long is dropped (a client may rejoin)."},
      {"federation.upload_grant_timeout_ms",
       "How long the coordinator keeps an upload slot for a client whose first chunk has not come; at most peer_timeout_ms. A client that lets grants lapse waits longer for the next."},
      {"federation.round_deadline_s",
       "After this long a round closes with the results it has (at least min_results)."},
      {"federation.rounds",
       "Rounds of the run."},
      {"federation.transport",
       "\"inproc\" (clients are threads of one process), \"ipc\" (processes on one machine) or \"tcp\"."},
      {"federation.wait_for_clients_s",
       "How long a round waits for a full cohort to be connected."},
      {"fedmkt.alpha",
       "Weight of the LLM's cross-entropy on the public text; 1 − alpha goes to distillation to the clients' ensemble."},
      {"fedmkt.client_alpha",
       "On the clients' public batch: weight of cross-entropy on its text; 1 − client_alpha goes to distillation to the LLM."},
      {"fedmkt.client_weight",
       "Weight of the clients' public batch against their own private batch."},
      {"fedmkt.confidence_threshold",
       "Distil only on positions whose teacher's max-probability at the temperature is at least this (the clients' ensemble: its top probability, or top vote share); 0 = every position. Masked positions keep their CE term."},
      {"fedmkt.confidence_weighting",
       "Weight each position's KD term by the teacher's max-probability at the temperature (after confidence_threshold)."},
      {"fedmkt.english_weight",
       "Weight of the LLM's own cross-entropy on windows of the public corpus (English; in the cross-lingual setup its public categories, never the transfer pool), added to its server steps so it does not forget English; 0 = off."},
      {"fedmkt.ensemble",
       "What the clients upload and how the coordinator combines it: \"mean\" (probabilities, their plain mean), \"confidence\" (w·p and w per position, w a client's own max-probability: Σw·p / Σw) or \"votes\" (a vote for each client's top vote_top_k tokens per position: the PATE vote histogram; see docs/distillation.md for its DP sensitivity). \"min-ce\" selection needs \"mean\"."},
      {"fedmkt.llm",
       "Checkpoint of the coordinator's LLM, which teaches the clients and learns from them."},
      {"fedmkt.selection",
       "How client predictions are combined: \"mean\", or \"min-ce\" (per position the client that fits the text best; needs privacy off)."},
      {"fedmkt.server_batch",
       "Windows per step of the coordinator's LLM training."},
      {"fedmkt.server_lr",
       "Learning rate of the coordinator's LLM training (AdamW, its state kept across rounds and in checkpoints)."},
      {"fedmkt.server_steps",
       "The coordinator's LLM training steps per round."},
      {"fedmkt.temperature",
       "Distillation temperature, both ways."},
      {"fedmkt.top_k",
       "The LLM's top-k predictions sent to the clients per position."},
      {"fedmkt.vote_top_k",
       "With ensemble = \"votes\": each position's vote is shared equally among the client's top-k tokens (L2 sensitivity of a round's votes √(positions / k))."},
      {"fedmkt.windows",
       "Public windows per round, predicted on both ways."},
      {"model.context",
       "Context length in tokens (overrides the preset)."},
      {"model.d_head",
       "Width of an attention head; 0 = d_model / n_head (overrides the preset)."},
      {"model.d_mlp",
       "Hidden width of the MLP; 0 = 4 · d_model (overrides the preset)."},
      {"model.d_model",
       "Embedding width (overrides the preset)."},
      {"model.init_checkpoint",
       "Checkpoint the model starts from; empty = fresh from the seed."},
      {"model.layer_d_mlp",
       "Per-layer MLP widths, for pruned models; empty = d_mlp everywhere."},
      {"model.layer_n_head",
       "Per-layer head counts, for pruned models; empty = n_head everywhere."},
      {"model.lora.alpha",
       "LoRA scaling numerator: adapters are scaled by alpha / rank."},
      {"model.lora.rank",
       "LoRA rank; a [model.lora] section trains adapters instead of the whole model."},
      {"model.lora.targets",
       "The linear layers LoRA adapters attach to."},
      {"model.n_head",
       "Attention heads per layer (overrides the preset)."},
      {"model.n_layer",
       "Transformer blocks (overrides the preset)."},
      {"model.preset",
       "Model size preset: slm-micro, slm-tiny, slm-small, llm-small, llm-medium."},
      {"model.vocab",
       "Vocabulary size; at least 256 for the byte tokenizer (overrides the preset)."},
      {"privacy.dp.adaptive_clipping",
       "Adapt the clip norm every round towards target_quantile of the update norms (Andrew et al. 2021)."},
      {"privacy.dp.bit_noise_multiplier",
       "Noise multiplier of the clipped-bit count under adaptive clipping; 0 = cohort / 20."},
      {"privacy.dp.clip_lr",
       "Learning rate of the adaptive clip norm, in (0, 10]: C ← C·exp(−clip_lr·(b̄ − target_quantile))."},
      {"privacy.dp.clip_norm",
       "L2 norm every contribution is clipped to, > 0 (the starting norm under adaptive clipping)."},
      {"privacy.dp.delta",
       "δ of the (ε, δ) guarantee; must be below 1 / federation.clients."},
      {"privacy.dp.enabled",
       "Client-level differential privacy on every upload; false ignores the section's other keys."},
      {"privacy.dp.epsilon_budget",
       "The run stops before a round that would spend more ε than this; 0 = no budget."},
      {"privacy.dp.noise",
       "\"central\": the coordinator adds the noise; \"distributed\": each client adds its share (composes with secure aggregation)."},
      {"privacy.dp.noise_multiplier",
       "σ > 0: noise standard deviation in units of the clip norm (or set target_epsilon, not both)."},
      {"privacy.dp.sampling",
       "\"poisson\": each client joins a round with probability q (what the accountant assumes); \"fixed\": a fixed-size random cohort."},
      {"privacy.dp.target_epsilon",
       "Calibrate σ at start so the configured rounds spend at most this ε; 0 = use noise_multiplier."},
      {"privacy.dp.target_quantile",
       "Under adaptive clipping: the fraction of updates the clip norm should leave unclipped, in (0, 1)."},
      {"privacy.secagg.clip_range",
       "Each weighted coordinate is clamped to ±clip_range before fixed-point encoding."},
      {"privacy.secagg.dropout_rate",
       "Fraction of clients the threshold must tolerate losing at each step, in [0, 1)."},
      {"privacy.secagg.enabled",
       "Secure aggregation (Bonawitz et al. 2017): the coordinator sees only the cohort's sum; false ignores the section's other keys."},
      {"privacy.secagg.fraction_bits",
       "Fixed-point resolution: 2^-fraction_bits, below modulus_bits."},
      {"privacy.secagg.modulus_bits",
       "The ring of the masked sums: integers mod 2^modulus_bits, with modulus_bits in [8, 64]; the cohort's sum must not wrap it."},
      {"privacy.secagg.neighbours",
       "0: every pair of clients masks (SecAgg); k: each client masks with k neighbours (SecAgg+)."},
      {"privacy.secagg.threshold",
       "Shares needed to reconstruct a secret, more than half of the n clients holding shares and at most n; 0 = ⌊2n/3⌋ + 1."},
      {"submodel.calibration_batches",
       "Batches of 4 public windows whose activations or gradients score importance (submodel.importance = activation or taylor)."},
      {"submodel.importance",
       "How importance windows rank heads, neurons and channels: activation, taylor, magnitude or random (prune/importance.h); scored on the global model at each round's start."},
      {"submodel.shrink_channels",
       "Whether sub-models also keep only their share of the embedding channels (HeteroFL); false cuts heads and MLP neurons only."},
      {"submodel.stride",
       "How far a rolling window moves per round; 0 = its own width, so a width-1/d window reaches every head, neuron and channel in d rounds (FedRolex rolls by 1)."},
      {"submodel.width_divisors",
       "Capacity tiers: client K trains the width-1/d sub-model of the global model, d = width_divisors[K mod length] (1 = the whole model)."},
      {"submodel.window",
       "Which indices a sub-model keeps: static (the first ones, HeteroFL), rolling (a window moving every round, FedRolex) or importance (the highest-scoring)."},
      {"offsite.alpha",
       "Weight of the cross-entropy on the public text in the emulator's distillation to the LLM; 1 − alpha goes to KD on the LLM's logits."},
      {"offsite.adapters",
       "What the clients train on the adapter blocks: \"full\" (the blocks' weights, which go down and up every round) or \"lora\" (LoRA factors on them, offsite.lora.*: only the factors train and move, the blocks' own weights stay frozen; merged into the LLM's blocks when plugged back)."},
      {"offsite.bottom",
       "The LLM's bottom blocks that are adapters: trained by the clients, plugged back into the LLM."},
      {"offsite.emulator_keep",
       "Share of the middle blocks (between the adapters) the emulator keeps, spread evenly (uniform layer drop); 1 keeps them all."},
      {"offsite.lora.alpha",
       "LoRA scaling numerator of the adapters (offsite.adapters = \"lora\"): factors are scaled by alpha / rank."},
      {"offsite.lora.rank",
       "LoRA rank of the adapters (offsite.adapters = \"lora\"); set with \"full\" adapters it is an error."},
      {"offsite.lora.targets",
       "The linear layers of the adapter blocks that carry LoRA factors (offsite.adapters = \"lora\")."},
      {"offsite.hidden_weight",
       "Weight of the hidden-state term in the emulator's distillation: the squared error between the output of the emulator's middle and the LLM's at the same place (the input of the top adapters), normalized by the LLM's own; 0 = KD on logits alone."},
      {"offsite.server_batch",
       "Public windows per step of the emulator's distillation."},
      {"offsite.server_lr",
       "Learning rate of the emulator's AdamW in its distillation to the LLM."},
      {"offsite.server_steps",
       "Steps of the emulator's distillation to the LLM, once before round 1; 0 = the uniform-drop emulator as cut."},
      {"offsite.temperature",
       "Distillation temperature of the emulator against the LLM."},
      {"offsite.top",
       "The LLM's top blocks that are adapters."},
      {"offsite.windows",
       "Public windows the emulator is distilled on per distillation."},
      {"strategy.beta1",
       "FedAdam/FedYogi first-moment decay."},
      {"strategy.beta2",
       "FedAdam/FedYogi second-moment decay."},
      {"strategy.momentum",
       "FedAvgM server momentum."},
      {"strategy.name",
       "How the coordinator combines the clients' updates: fedavg, fedprox, fedavgm, fedadam, fedyogi, median or trimmed-mean."},
      {"strategy.proximal_mu",
       "FedProx proximal term μ added to the clients' local loss."},
      {"strategy.server_lr",
       "Server learning rate of FedAvgM, FedAdam and FedYogi."},
      {"strategy.tau",
       "FedAdam/FedYogi adaptivity (the ε of the second moment)."},
      {"strategy.trim_fraction",
       "Trimmed mean: the fraction trimmed at each end, per coordinate."},
      {"train.batch",
       "Sequences per training step."},
      {"train.beta1",
       "AdamW first-moment decay."},
      {"train.beta2",
       "AdamW second-moment decay."},
      {"train.checkpoint_every",
       "Steps between checkpoints; 0 = only at the end."},
      {"train.eval_every",
       "Steps between evaluations on the held-out split; 0 = only at the end."},
      {"train.eval_tokens",
       "Held-out target tokens per evaluation; 0 = all."},
      {"train.exact_match_per_category",
       "With data.source = \"arithmetic\": also score this many examples per level by exact match at each evaluation."},
      {"train.grad_clip",
       "Global L2 norm gradients are clipped to; 0 = no clipping."},
      {"train.lr",
       "Peak learning rate (AdamW), after warm-up, decaying on a cosine to min_lr_ratio · lr."},
      {"train.max_seconds",
       "Stop early when this wall-clock budget is spent; 0 = no budget."},
      {"train.min_lr_ratio",
       "The learning rate at the end of the cosine decay, as a fraction of lr."},
      {"train.on",
       "\"train\": the training split; \"public\": the public split (the cloud's starting LLM)."},
      {"train.sample_prompt",
       "Prompt of the sample printed at the end."},
      {"train.sample_tokens",
       "Bytes sampled and printed at the end; 0 = none."},
      {"train.steps",
       "Training steps."},
      {"train.stop_at_step",
       "Checkpoint and stop after this step (--resume continues); 0 = run to train.steps."},
      {"train.warmup_steps",
       "Linear warm-up steps; the default is min(100, steps / 10)."},
      {"train.weight_decay",
       "AdamW weight decay."},
  };
  return kDescriptions;
}

std::string Section(const std::string& key) {
  const size_t dot = key.rfind('.');
  return dot == std::string::npos ? "" : key.substr(0, dot);
}

std::string Cell(const std::string& text) {
  std::string out;
  for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

}  // namespace

StatusOr<std::vector<ConfigKeyRecord>> RecordConfigKeys() {
  std::vector<ConfigKeyRecord> records;
  TANDEM_ASSIGN_OR_RETURN(Config base, Config::Parse(kEverythingOn, "<config-reference>"));
  base.RecordKeysTo(&records);

  // Each reader's own failures are expected here (no data, no checkpoints): what counts is the
  // keys it asked for before it stopped.
  for (const Algorithm& algorithm : Algorithms()) {
    Config config = base;
    TANDEM_RETURN_IF_ERROR(config.ApplyOverride("algorithm.name=" + algorithm.name));
    (void)RunCoordinator(config, algorithm.server, CoordinatorOptions{});
    // The algorithm's own section, read when its coordinator half is built: over a tiny
    // generated data set, with checkpoints that do not exist (read after their keys).
    DataConfig tiny;
    tiny.source = "arithmetic";
    tiny.arithmetic_levels = {1};
    tiny.arithmetic_examples_per_level = 40;
    TANDEM_ASSIGN_OR_RETURN(DatasetSplits splits, LoadSplits(tiny));
    SharedObjects shared;
    ServerContext context;
    context.config = &config;
    context.splits = &splits;
    context.privacy = true;
    context.shared = &shared;
    (void)algorithm.server.create(context);
    ClientOptions client;
    client.use_compute_slots = false;
    (void)RunClient(config, algorithm.client, client);
  }
  // Every strategy's own keys.
  for (const std::string& name : StrategyNames()) {
    Config config = base;
    TANDEM_RETURN_IF_ERROR(config.ApplyOverride("strategy.name=" + name));
    (void)StrategyConfigFromConfig(config);
  }
  // `tandem serve` and the coordinator's inference service.
  {
    Config config = base;
    (void)serve::ServeConfigFromConfig(config);
  }
  // `tandem route train|eval`.
  {
    Config config = base;
    (void)RouteConfigFromConfig(config);
  }
  // `tandem train`, with and without LoRA.
  {
    Config config = base;
    (void)TrainConfigFromConfig(config);
    TANDEM_RETURN_IF_ERROR(config.ApplyOverride("model.lora.rank=8"));
    (void)TrainConfigFromConfig(config);
  }

  // Sorted by section, then key, so that a section's keys stay together.
  std::map<std::pair<std::string, std::string>, ConfigKeyRecord> unique;
  for (ConfigKeyRecord& r : records) unique.emplace(std::make_pair(Section(r.key), r.key), r);
  std::vector<ConfigKeyRecord> out;
  for (auto& [key, r] : unique) out.push_back(std::move(r));
  return out;
}

StatusOr<std::string> ConfigReferenceMarkdown(const std::vector<ConfigKeyRecord>& keys) {
  std::string missing;
  for (const ConfigKeyRecord& r : keys) {
    if (Descriptions().count(r.key) == 0) missing += (missing.empty() ? "" : ", ") + r.key;
  }
  if (!missing.empty()) {
    return Status::FailedPrecondition(
        "config keys without a description in apps/config_reference.cc: " + missing);
  }
  // And no description outlives its key (renamed or removed).
  std::set<std::string> recorded;
  for (const ConfigKeyRecord& r : keys) recorded.insert(r.key);
  std::string stale;
  for (const auto& [key, text] : Descriptions()) {
    if (recorded.count(key) == 0) stale += (stale.empty() ? "" : ", ") + key;
  }
  if (!stale.empty()) {
    return Status::FailedPrecondition(
        "descriptions in apps/config_reference.cc of keys no reader reads: " + stale);
  }
  std::string md =
      "# Config reference\n\n"
      "<!-- Generated by `tandem config-reference > docs/config.md`; do not edit by hand. -->\n\n"
      "Every key a tandem config can hold, read from the code: the coordinator's plan for every\n"
      "registered algorithm, the client's, and centralized training's readers are run in a\n"
      "describe mode that records each key with its type, default and range. A key not listed\n"
      "here is an error (`unknown key`), with the nearest known key suggested. A section switched\n"
      "off with `enabled = false` ignores its other keys. Any key can be set from the command line\n"
      "with `--set key=value`. Where the range column is empty, any value of the type is read\n"
      "and the meaning says what is then checked (the privacy sections are checked as a whole\n"
      "against the federation: docs/privacy.md).\n";
  std::string section = "\x01";
  for (const ConfigKeyRecord& r : keys) {
    if (Section(r.key) != section) {
      section = Section(r.key);
      md += "\n## " + (section.empty() ? std::string("Top level") : "[" + section + "]") +
            "\n\n| key | type | default | range | meaning |\n|---|---|---|---|---|\n";
    }
    md += "| `" + r.key + "` | " + r.type + " | " + (r.def.empty() ? "" : "`" + Cell(r.def) + "`") +
          " | " + Cell(r.range) + " | " + Cell(Descriptions().at(r.key)) + " |\n";
  }
  return md;
}

}  // namespace tandem

#!/usr/bin/env bash
# The cross-lingual experiment (docs/results.md "The cross-lingual setup"): the cloud LLM and the
# edge SLMs start from checkpoints trained on the public categories of English fortunes; eight
# clients hold fortunes in four other languages (configs/xling-*.toml), and every method runs
# from those checkpoints on several seeds:
#   LLM: before collaboration, fine-tuned on the transfer pool alone (the baseline to beat, given
#        the upward runs' LLM budget: 5 rounds x 16 server steps of 8 windows), distill-up,
#        fedmkt, fedcollm, proxy-tuning with fedavg's SLM, and the oracle (the same budget on the
#        pooled private data)
#   SLM: before collaboration, fedavg, distill-down, fedcollm's SLM
# and the soundness options of docs/distillation.md ("Sound upward distillation"):
#   distill-up, fedmkt, fedcollm again with them on (+conf: the confidence-weighted ensemble,
#        KD weighted by the ensemble's confidence, the LLM's English CE kept at ENGLISH_WEIGHT;
#        fedcollm, which averages adapters rather than predictions, the last two), fedmkt with
#        its own min-ce selection and the last two, and distill-up with each of the three alone,
#        which apportions what they do together; fedmkt with its clients ignoring the LLM's
#        targets (client_weight = 0), which separates its selection from its downward half;
#   distill-up under differential privacy (central noise, δ = 1e-5) at each ε of DP_EPSILONS,
#        uploading probabilities and uploading votes (PATE/GNMax), σ from `tandem privacy sigma`
#        for ROUNDS rounds at q = 1, every upload clipped to DP_CLIP.
# Every final model is scored by `tandem eval` on the same held-out sets: one per language and
# the English one that shows forgetting. Steps whose result exists are skipped, so an interrupted
# run picks up where it stopped; delete the output directory to start over.
#
# Usage: scripts/experiments/xling.sh [BUILD_DIR]
#   SEEDS="1 2 3"       seeds of the collaborative runs and of the two baselines
#   WIDE_SEEDS=$SEEDS   seeds of every row but the headline two (distill-up without and with every
#                       option); a budget-limited run sets fewer. The order: for WIDE_SEEDS the
#                       headline rows and fedmkt's and fedcollm's with the options, then the
#                       remaining SEEDS' headline rows, then every other row.
#   OUT=runs/xling      where everything goes
#   EVAL_TOKENS=32768   tokens of each held-out set every loss is measured on
#   DATA_SET="..."      extra `--set key=value` words for the setup's data, given to every run,
#                       baseline and evaluation alike (e.g. --set data.languages=[...])
#   SET="..."           extra words for every collaborative run
#   TRAIN_SET="..."     extra words for the two baselines (tandem train)
#   PUBLIC_SET="..."    extra words for the public checkpoints (tandem train configs/llm-public.toml)
#   ENGLISH_WEIGHT=0.5  <section>.english_weight of the +conf runs
#   DP_EPSILONS="1 4 8" the ε of the private distill-up runs
#   ROUNDS=5            the configs' federation.rounds (what σ is calibrated for; a SET that
#                       changes the rounds must change ROUNDS too)
#   DP_CLIP=90.51       privacy.dp.clip_norm: √(windows · context) = √(64 · 128) for slm-tiny, the
#                       norm of a round's votes, so no vote (and no probability upload) is clipped
# The tests run it on a tiny budget through these.
set -euo pipefail
set -f  # the *_SET words hold TOML lists, not file patterns
BUILD_DIR="${1:-build}"
SEEDS="${SEEDS:-1 2 3}"
WIDE_SEEDS="${WIDE_SEEDS:-$SEEDS}"
OUT="${OUT:-runs/xling}"
EVAL_TOKENS="${EVAL_TOKENS:-32768}"
DATA_SET="${DATA_SET:-}"
SET="${SET:-}"
TRAIN_SET="${TRAIN_SET:-}"
PUBLIC_SET="${PUBLIC_SET:-}"
ENGLISH_WEIGHT="${ENGLISH_WEIGHT:-0.5}"
DP_EPSILONS="${DP_EPSILONS:-1 4 8}"
ROUNDS="${ROUNDS:-5}"
DP_CLIP="${DP_CLIP:-90.51}"
TANDEM="$BUILD_DIR/apps/tandem"
LLM="$OUT/llm-public/checkpoints/model.safetensors"
SLM="$OUT/slm-public/checkpoints/model.safetensors"
HERE="$(cd "$(dirname "$0")" && pwd)"

[ -x "$TANDEM" ] || { echo "no $TANDEM: build first (make build)" >&2; exit 1; }
mkdir -p "$OUT"
started=$(date +%s)
step() { printf '[%4ds] %s\n' $(( $(date +%s) - started )) "$*"; }
# Runs a command with its output in LOG; on failure shows the end of it and stops.
logged() {
  local log="$1"; shift
  "$@" > "$log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$log" >&2; exit 1; }
}

# ---- The starting points: both models trained on the public English categories only. ----
# shellcheck disable=SC2086  # the *_SET variables are lists of words
if [ ! -f "$OUT/llm-public/summary.json" ]; then
  step "training the public LLM (configs/llm-public.toml)"
  logged "$OUT/llm-public.log" "$TANDEM" train configs/llm-public.toml --overwrite \
    --set out_dir="$OUT" $PUBLIC_SET
fi
# shellcheck disable=SC2086
if [ ! -f "$OUT/slm-public/summary.json" ]; then
  step "training the public SLM (configs/llm-public.toml as slm-tiny)"
  logged "$OUT/slm-public.log" "$TANDEM" train configs/llm-public.toml --overwrite \
    --set out_dir="$OUT" --set name=slm-public --set model.preset=slm-tiny $PUBLIC_SET
fi
# Every score: the checkpoint on the setup's held-out sets, per language (tandem eval --json).
evaluate() {  # evaluate NAME CHECKPOINT [tandem eval options]
  local name="$1" checkpoint="$2"; shift 2
  [ -f "$OUT/eval/$name.json" ] && return
  mkdir -p "$OUT/eval"
  step "evaluating $name"
  # shellcheck disable=SC2086
  logged "$OUT/eval/$name.log" "$TANDEM" eval configs/xling-pool.toml --checkpoint "$checkpoint" \
    --max-tokens "$EVAL_TOKENS" --exact-match 0 --json "$OUT/eval/$name.json.tmp" "$@" $DATA_SET
  mv "$OUT/eval/$name.json.tmp" "$OUT/eval/$name.json"
}
evaluate llm-public "$LLM"
evaluate slm-public "$SLM"

# A distill-up or fedmkt run scores its LLM itself at the end, on the same held-out sets
# (summary.json's final_test_loss_<language>), so its summary is its score and the LLM is not
# evaluated twice. Both evaluations stop after the batch that reaches EVAL_TOKENS, in batches of
# 8 and 16 windows: they score the same tokens, tandem eval's test loss to 1e-7, when EVAL_TOKENS
# is a multiple of 16 windows of every preset's context (4096); otherwise tandem eval scores it.
from_summary() {  # from_summary NAME RUN
  local name="$1" run="$2"
  if (( EVAL_TOKENS % 4096 != 0 )); then
    evaluate "$name" "$OUT/$run/checkpoints/llm.safetensors"
    return
  fi
  [ -f "$OUT/eval/$name.json" ] && return
  mkdir -p "$OUT/eval"
  /usr/bin/python3 - "$OUT/$run/summary.json" "$OUT/eval/$name.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
prefix = "final_test_loss_"
languages = {k[len(prefix):]: {"test": v} for k, v in summary.items()
             if k.startswith(prefix) and "." not in k}
if not languages:
    sys.exit(f"{sys.argv[1]} has no per-language test losses")
with open(sys.argv[2] + ".tmp", "w") as f:
    json.dump({"summary": sys.argv[1], "languages": languages}, f, indent=2)
PY
  mv "$OUT/eval/$name.json.tmp" "$OUT/eval/$name.json"
}

# ---- The baselines: the public LLM fine-tuned on the transfer pool, and on all private data, on
# every seed (the seed draws the windows and their order): every "vs pool" is against their
# mean, and their own spread shows how much of a row's lead the baseline's seed alone could make.
for seed in $SEEDS; do
  for baseline in pool oracle; do
    name="xling-$baseline-s$seed"
    if [ ! -f "$OUT/$name/summary.json" ]; then
      step "baseline $name (configs/xling-$baseline.toml)"
      # shellcheck disable=SC2086
      logged "$OUT/$name.log" "$TANDEM" train "configs/xling-$baseline.toml" --overwrite \
        --set out_dir="$OUT" --set name="$name" --set seed="$seed" \
        --set model.init_checkpoint="$LLM" $DATA_SET $TRAIN_SET
    fi
    evaluate "llm-$baseline-s$seed" "$OUT/$name/checkpoints/model.safetensors"
  done
done

# ---- The collaborative runs: one split of the data (data.seed = 1, as the public models had);
# the seed varies initial draws, windows and batches. ----
run() {  # run NAME CONFIG [--set ...]
  local name="$1" config="$2"; shift 2
  [ -f "$OUT/$name/summary.json" ] && return
  step "run $name"
  rm -rf "${OUT:?}/$name"
  # shellcheck disable=SC2086
  logged "$OUT/$name.log" "$TANDEM" run "$config" --overwrite --set name="$name" \
    --set out_dir="$OUT" --set data.seed=1 --set model.init_checkpoint="$SLM" \
    --set eval.tokens="$EVAL_TOKENS" "$@" $DATA_SET $SET
}
# The three soundness options of docs/distillation.md ("Sound upward distillation"), as --set
# words for SECTION: the confidence-weighted ensemble, KD weighted by the ensemble's confidence,
# the LLM's English CE kept at ENGLISH_WEIGHT.
ensemble_option() { echo "--set $1.ensemble=confidence"; }
weighting_option() { echo "--set $1.confidence_weighting=true"; }
english_option() { echo "--set $1.english_weight=$ENGLISH_WEIGHT"; }
# shellcheck disable=SC2046  # the option functions print several words on purpose
headline() {  # headline SEED: distill-up without and with every option
  local seed="$1"
  # eval.clients: the clients' own SLMs, which only ever train on their own data (the "local only"
  # SLMs), scored each round on their own language and on all; it does not change the LLM's bits.
  run "distill-up-s$seed" configs/xling-distill-up.toml --set seed="$seed" \
    --set distill-up.llm="$LLM" --set eval.clients=true
  from_summary "llm-distill-up-s$seed" "distill-up-s$seed"
  run "distill-up-conf-s$seed" configs/xling-distill-up.toml --set seed="$seed" \
    --set distill-up.llm="$LLM" $(ensemble_option distill-up) $(weighting_option distill-up) \
    $(english_option distill-up)
  from_summary "llm-distill-up-conf-s$seed" "distill-up-conf-s$seed"
}
# shellcheck disable=SC2046
best() {  # best SEED: fedmkt and fedcollm with the options (fedmkt's confidence ensemble in place
          # of its per-position min-ce selection, and min-ce with the last two; fedcollm averages
          # adapters, not predictions, so it takes the last two)
  local seed="$1"
  run "fedmkt-conf-s$seed" configs/xling-fedmkt.toml --set seed="$seed" --set fedmkt.llm="$LLM" \
    --set eval.clients=true --set fedmkt.selection=mean $(ensemble_option fedmkt) $(weighting_option fedmkt) \
    $(english_option fedmkt)
  from_summary "llm-fedmkt-conf-s$seed" "fedmkt-conf-s$seed"
  # fedmkt's own per-position selection (min-ce: the client whose prediction scores the pool's
  # next token best) with the other two options.
  run "fedmkt-mince-conf-s$seed" configs/xling-fedmkt.toml --set seed="$seed" \
    --set fedmkt.llm="$LLM" $(weighting_option fedmkt) $(english_option fedmkt)
  from_summary "llm-fedmkt-mince-conf-s$seed" "fedmkt-mince-conf-s$seed"
  run "fedcollm-conf-s$seed" configs/xling-fedcollm.toml --set seed="$seed" \
    --set fedcollm.llm="$LLM" $(weighting_option fedcollm) $(english_option fedcollm)
  evaluate "llm-fedcollm-conf-s$seed" "$OUT/fedcollm-conf-s$seed/checkpoints/llm.safetensors"
}
# shellcheck disable=SC2046
apportion() {  # apportion SEED: the options one at a time, to apportion what the three do together
  local seed="$1" option
  for option in ensemble weighting english; do
    run "distill-up-$option-s$seed" configs/xling-distill-up.toml --set seed="$seed" \
      --set distill-up.llm="$LLM" $("${option}_option" distill-up)
    from_summary "llm-distill-up-$option-s$seed" "distill-up-$option-s$seed"
  done
}
slms() {  # slms SEED: the SLMs of fedavg, and proxy-tuning with them
  local seed="$1"
  # Proxy-tuning: the public LLM steered by fedavg's SLM minus the public SLM, no LLM training.
  run "fedavg-s$seed" configs/xling-fedavg-slm.toml --set seed="$seed"
  evaluate "slm-fedavg-s$seed" "$OUT/fedavg-s$seed/checkpoints/model.safetensors"
  evaluate "llm-proxy-tune-s$seed" "$LLM" --proxy-tuned \
    "$OUT/fedavg-s$seed/checkpoints/model.safetensors" --proxy-base "$SLM"
}
rest() {  # rest SEED: every other row
  local seed="$1"
  run "distill-down-s$seed" configs/xling-distill-down.toml --set seed="$seed" \
    --set distill-down.teacher="$LLM"
  evaluate "slm-distill-down-s$seed" "$OUT/distill-down-s$seed/checkpoints/model.safetensors"
  # fedmkt and fedcollm as they are, without the options.
  run "fedmkt-s$seed" configs/xling-fedmkt.toml --set seed="$seed" --set fedmkt.llm="$LLM" \
    --set eval.clients=true
  from_summary "llm-fedmkt-s$seed" "fedmkt-s$seed"
  # fedmkt's selection without its downward half: the clients get the LLM's targets and weigh
  # them 0, so they train as the local-only SLMs do, and what the LLM gains is min-ce's alone.
  run "fedmkt-up-only-s$seed" configs/xling-fedmkt.toml --set seed="$seed" --set fedmkt.llm="$LLM" \
    --set fedmkt.client_weight=0
  from_summary "llm-fedmkt-up-only-s$seed" "fedmkt-up-only-s$seed"
  run "fedcollm-s$seed" configs/xling-fedcollm.toml --set seed="$seed" --set fedcollm.llm="$LLM"
  evaluate "llm-fedcollm-s$seed" "$OUT/fedcollm-s$seed/checkpoints/llm.safetensors"
}
# The most telling rows first, so that a run cut short still has them: the headline rows and the
# best of the other two methods, the headline rows' other seeds, then the rest.
for seed in $WIDE_SEEDS; do headline "$seed"; best "$seed"; done
for seed in $SEEDS; do headline "$seed"; done
for seed in $WIDE_SEEDS; do slms "$seed"; apportion "$seed"; rest "$seed"; done

# ---- distill-up under differential privacy: probabilities or votes up, at each ε. Every client
# takes part in every round (q = 1); one Gaussian mechanism per round. ----
for eps in $DP_EPSILONS; do
  sigma=$("$TANDEM" privacy sigma --q 1 --steps "$ROUNDS" --delta 1e-5 --target-epsilon "$eps" \
            --json | /usr/bin/python3 -c 'import json, sys; print(repr(json.load(sys.stdin)["sigma"]))')
  for seed in $WIDE_SEEDS; do
    for upload in mean votes; do
      run "distill-up-dp-$upload-e$eps-s$seed" configs/xling-distill-up.toml --set seed="$seed" \
        --set distill-up.llm="$LLM" --set distill-up.ensemble="$upload" \
        --set privacy.dp.enabled=true --set privacy.dp.noise=central \
        --set privacy.dp.noise_multiplier="$sigma" --set privacy.dp.clip_norm="$DP_CLIP" \
        --set privacy.dp.delta=1e-5
      from_summary "llm-distill-up-dp-$upload-e$eps-s$seed" "distill-up-dp-$upload-e$eps-s$seed"
    done
  done
done
step "done"
# shellcheck disable=SC2086
/usr/bin/python3 "$HERE/xling_table.py" "$OUT" --seeds $SEEDS --wide-seeds $WIDE_SEEDS \
  --epsilons $DP_EPSILONS \
  | tee "$OUT/table.md"

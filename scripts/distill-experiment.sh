#!/usr/bin/env bash
# Reproduces the distillation table in docs/results.md. The cloud LLM (llm-small) and the edge SLM
# (slm-tiny) are first trained on the public categories of fortunes; four clients then hold the
# private categories, split by category (non-IID), and every method runs for the same rounds and
# local steps from those two checkpoints, on several seeds:
#   SLM side: local only, fedavg, distill-down (averaged SLMs, and SLMs kept local), fedmkt,
#             fedcollm
#   LLM side: before collaboration, distill-up, fedmkt, fedcollm, proxy-tune, and the oracle (the
#             LLM fine-tuned centrally on the pooled private training data)
# and once more with differential privacy and secure aggregation on, at one stated epsilon.
# Every step is skipped when its result is already there, so an interrupted run picks up where it
# stopped; delete runs/experiment to start over.
#
# Usage: scripts/distill-experiment.sh [BUILD_DIR]
#   SEEDS="1 2 3"   seeds of the collaborative runs
#   DP_SEEDS="1"    seeds of the runs with privacy on
#   EPSILON=10      their (epsilon, delta = 1e-5) over the run's rounds
#   ORACLE_STEPS=200
# About 2 hours on 2 cores; the public LLM alone takes 15 to 30 minutes.
set -euo pipefail
BUILD_DIR="${1:-build}"
SEEDS="${SEEDS:-1 2 3}"
DP_SEEDS="${DP_SEEDS:-1}"
EPSILON="${EPSILON:-10}"
ORACLE_STEPS="${ORACLE_STEPS:-200}"
TANDEM="$BUILD_DIR/apps/tandem"
OUT=runs/experiment
LLM="$OUT/llm-public/checkpoints/model.safetensors"
SLM="$OUT/slm-public/checkpoints/model.safetensors"
EVAL_TOKENS=32768  # every held-out loss in the table: the same first 32 768 validation tokens

[ -x "$TANDEM" ] || { echo "no $TANDEM: build first (make build)" >&2; exit 1; }
mkdir -p "$OUT"
started=$(date +%s)
step() { printf '[%4ds] %s\n' $(( $(date +%s) - started )) "$*"; }
# Runs a command with its output in LOG; on failure shows the end of it and stops.
logged() {
  local log="$1"; shift
  "$@" > "$log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$log" >&2; exit 1; }
}

# ---- The starting points: both models trained on the public categories only. ----
# A training run writes summary.json when it completes; an interrupted one resumes.
if [ ! -f "$OUT/llm-public/summary.json" ]; then
  step "training the public LLM (llm-small, 600 steps)"
  logged "$OUT/llm-public.log" "$TANDEM" train configs/llm-public.toml --overwrite --set out_dir="$OUT"
fi
if [ ! -f "$OUT/slm-public/summary.json" ]; then
  step "training the public SLM (slm-tiny, 600 steps)"
  logged "$OUT/slm-public.log" "$TANDEM" train configs/llm-public.toml --overwrite --set out_dir="$OUT" \
    --set name=slm-public --set model.preset=slm-tiny
fi
evaluate() {  # evaluate NAME CHECKPOINT [tandem eval options...]
  local name="$1" checkpoint="$2"; shift 2
  [ -f "$OUT/$name.json" ] && return
  step "evaluating $name"
  logged "$OUT/$name.eval.log" "$TANDEM" eval configs/llm-public.toml --checkpoint "$checkpoint" \
    --max-tokens "$EVAL_TOKENS" --exact-match 0 --json "$OUT/$name.json.tmp" "$@"
  mv "$OUT/$name.json.tmp" "$OUT/$name.json"
}
evaluate llm-public "$LLM"
evaluate slm-public "$SLM"

# ---- The oracle: the public LLM fine-tuned on the pooled private training data. ----
ORACLE="$OUT/oracle/checkpoints/model.safetensors"
if [ ! -f "$OUT/oracle.json" ]; then
  step "the oracle: the LLM fine-tuned centrally on the private categories ($ORACLE_STEPS steps)"
  logged "$OUT/oracle.log" "$TANDEM" train configs/llm-public.toml --overwrite --set out_dir="$OUT" \
    --set name=oracle --set train.on=train --set model.init_checkpoint="$LLM" \
    --set train.steps="$ORACLE_STEPS" --set train.lr=3e-4 --set train.warmup_steps=20 \
    --set train.eval_every=0 --set train.checkpoint_every=0
  evaluate oracle "$ORACLE"
fi

# ---- The collaborative runs. ----
# What every run shares: the two public checkpoints and one split of the data (data.seed = 1, as
# the public models and the oracle had); the seed varies initial draws, windows and batches.
common() {
  echo --set out_dir="$OUT" --set seed="$1" --set data.seed=1 \
    --set model.init_checkpoint="$SLM" --set eval.tokens="$EVAL_TOKENS"
}
run() {  # run NAME CONFIG [--set ...]
  local name="$1" config="$2"; shift 2
  [ -f "$OUT/$name/summary.json" ] && return
  step "run $name"
  rm -rf "${OUT:?}/$name"
  logged "$OUT/$name.log" "$TANDEM" run "$config" --overwrite --set name="$name" "$@"
  "$TANDEM" report "$OUT/$name" > /dev/null 2>&1 || true  # the curves; gnuplot may be missing
}
# Privacy on: distributed Gaussian noise over secure aggregation, sigma calibrated to EPSILON for
# the run's rounds. Weight deltas are clipped to 0.5 (configs/private.toml); a probability upload
# of 8 windows x 128 positions has an L2 norm of at most 32 (one per position), and is clipped to 8.
private() {
  echo --set privacy.dp.enabled=true --set privacy.dp.target_epsilon="$EPSILON" \
    --set privacy.dp.delta=1e-5 --set privacy.dp.noise=distributed \
    --set privacy.dp.sampling=poisson --set privacy.dp.clip_norm="$1" \
    --set privacy.secagg.enabled=true --set privacy.secagg.threshold=3 \
    --set privacy.secagg.dropout_rate=0.25
}
for seed in $SEEDS; do
  # shellcheck disable=SC2046  # common's words are meant to split
  {
    run "fedavg-s$seed" configs/fedavg-slm.toml $(common "$seed") --set eval.clients=true
    run "distill-down-s$seed" configs/distill-down.toml $(common "$seed") \
      --set distill-down.teacher="$LLM" --set eval.clients=true
    # distill-up's clients never receive anything: their SLMs are the "local only" row.
    run "distill-up-s$seed" configs/distill-up.toml $(common "$seed") --set distill-up.llm="$LLM" \
      --set eval.clients=true
    run "fedmkt-s$seed" configs/fedmkt.toml $(common "$seed") --set fedmkt.llm="$LLM" \
      --set eval.clients=true
  }
  # Proxy-tuning steers the public LLM with what FedAvg taught the SLM: LLM + (tuned - base).
  evaluate "proxy-tune-s$seed" "$LLM" --proxy-tuned "$OUT/fedavg-s$seed/checkpoints/model.safetensors" \
    --proxy-base "$SLM"
done
for seed in $SEEDS; do
  # shellcheck disable=SC2046
  {
    run "fedcollm-s$seed" configs/fedcollm.toml $(common "$seed") --set fedcollm.llm="$LLM" \
      --set eval.clients=true
    run "distill-down-local-s$seed" configs/distill-down.toml $(common "$seed") \
      --set distill-down.teacher="$LLM" --set distill-down.slms=local --set eval.clients=true
  }
done
for seed in $DP_SEEDS; do
  # shellcheck disable=SC2046
  {
    run "dp-fedavg-s$seed" configs/fedavg-slm.toml $(common "$seed") $(private 0.5)
    run "dp-distill-down-s$seed" configs/distill-down.toml $(common "$seed") \
      --set distill-down.teacher="$LLM" $(private 0.5)
    run "dp-distill-up-s$seed" configs/distill-up.toml $(common "$seed") \
      --set distill-up.llm="$LLM" $(private 8)
    run "dp-fedmkt-s$seed" configs/fedmkt.toml $(common "$seed") --set fedmkt.llm="$LLM" \
      --set fedmkt.selection=mean $(private 8)
    run "dp-fedcollm-s$seed" configs/fedcollm.toml $(common "$seed") --set fedcollm.llm="$LLM" \
      $(private 0.5)
  }
  evaluate "dp-proxy-tune-s$seed" "$LLM" \
    --proxy-tuned "$OUT/dp-fedavg-s$seed/checkpoints/model.safetensors" --proxy-base "$SLM"
done
step "done"
/usr/bin/python3 scripts/distill_table.py "$OUT" --seeds $SEEDS --dp-seeds $DP_SEEDS | tee "$OUT/table.md"

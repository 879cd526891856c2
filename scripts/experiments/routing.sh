#!/usr/bin/env bash
# The routing experiment (docs/routing.md, "The experiment"; docs/results.md, "Routing"): a cloud
# and a device trained on two-digit addition and subtraction, then for each seed GAPG and GRPO
# post-training of the device and every baseline scored on that seed's held-out prompts (never
# seen in task-tuning either) at a 30% budget through the score-ranked cap, and GAPG, the router,
# random and the oracle at budgets 10-50%. Rerunnable: a finished step is skipped (its output
# file exists). Every process runs under `nice -n 19` on one thread.
#
#   scripts/experiments/routing.sh [BUILD_DIR] [OUT_DIR]      # SEEDS="1 2 3 4 5" by default
#
# Writes OUT_DIR/results/*.json (one per evaluation on held-out prompts), OUT_DIR/results-train/
# (the same methods on the prompts they were fitted on) and prints the tables (routing_table.py).
set -euo pipefail
BUILD="${1:-build}"
OUT="${2:-runs/routing}"
SEEDS="${SEEDS:-1 2 3 4 5}"
BUDGETS="${BUDGETS:-0.1 0.2 0.3 0.4 0.5}"
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
TANDEM="$(cd "$BUILD" && pwd)/apps/tandem"
export TANDEM_THREADS=1
mkdir -p "$OUT/results" "$OUT/results-train"
cd "$OUT"
run() { nice -n 19 "$TANDEM" --log-level warn "$@"; }

# 1. The device: slm-micro task-tuned to step 3 500 of 15 000 (right about 40% of the time).
if [ ! -f runs/route-device/checkpoints/model.safetensors ]; then
  run train "$SRC/configs/train-route-device.toml" --overwrite 2>&1 | grep -E "arith|held-out" || true
fi
# 2. The cloud: the same run continued (right above 85% of the time).
if [ ! -f runs/route-cloud/checkpoints/.done ]; then
  rm -rf runs/route-cloud
  cp -r runs/route-device runs/route-cloud
  run train "$SRC/configs/train-route-cloud.toml" --resume 2>&1 | grep -E "arith|held-out" || true
  touch runs/route-cloud/checkpoints/.done
fi

CONFIG="$SRC/configs/route-gapg.toml"
# The richer hand-off head: the top block and the final LayerNorm train with the marker row, at a
# lower a_c (handing off pays only where the device is right less than 0.3 x the cloud) so the
# policy does not collapse to handing everything off; more steps and prompts per step.
TOP=(--set route.trainable=top --set route.handoff_correct=0.3 --set route.lr=1e-3
     --set route.steps=300 --set route.prompts_per_step=16 --set route.filter_every=50)
for seed in $SEEDS; do
  for mode in gapg grpo; do
    name="route-$mode-s$seed"
    if [ ! -f "runs/$name/summary.json" ]; then
      run route train "$CONFIG" --overwrite --set seed="$seed" --set name="$name" \
        --set route.mode="$mode" 2>"runs-$name.log" | tail -1
    fi
  done
  if [ ! -f "runs/route-gapgtop-s$seed/summary.json" ]; then
    run route train "$CONFIG" --overwrite --set seed="$seed" --set name="route-gapgtop-s$seed" \
      "${TOP[@]}" 2>"runs-route-gapgtop-s$seed.log" | tail -1
  fi
  evaluate() {  # evaluate FILE_STEM SETTINGS...
    local stem="$1"; shift
    [ -f "results/$stem.json" ] || run route eval "$CONFIG" --set seed="$seed" "$@" \
      --json "results/$stem.json"
  }
  # The same methods on the prompts they were fitted on: how well the routing fits them.
  for b in device cloud random router oracle; do
    [ -f "results-train/$b-b0.3-s$seed.json" ] || run route eval "$CONFIG" --set seed="$seed" \
      --set route.eval_split=train --set route.baseline=$b --json "results-train/$b-b0.3-s$seed.json"
  done
  for mode in gapg grpo; do
    [ -f "results-train/$mode-b0.3-s$seed.json" ] || run route eval "$CONFIG" --set seed="$seed" \
      --set route.eval_split=train --set name="route-$mode-s$seed" \
      --json "results-train/$mode-b0.3-s$seed.json"
  done
  for b in device cloud random router oracle; do
    evaluate "$b-b0.3-s$seed" --set route.baseline=$b --set route.budget=0.3
  done
  evaluate "grpo-b0.3-s$seed" --set name="route-grpo-s$seed" --set route.budget=0.3
  # The top-block policy deciding, the task-tuned device answering (like for like) ...
  evaluate "gapgtop-b0.3-s$seed" --set name="route-gapgtop-s$seed" --set route.budget=0.3 \
    --set route.policy_answers=device
  # ... and answering itself (its answers were post-trained too, as in the paper), with and
  # without the cloud.
  evaluate "gapgtopown-b0.3-s$seed" --set name="route-gapgtop-s$seed" --set route.budget=0.3
  evaluate "gapgtopown-b0.0-s$seed" --set name="route-gapgtop-s$seed" --set route.budget=0.0
  # Its warm start alone (supervised steps on the training prompts' records, 30% of them the
  # marker): how much of the better answering is continued task-tuning rather than GAPG.
  evaluate "gapgtopwarm-b0.0-s$seed" --set name="route-gapgtop-s$seed" --set route.budget=0.0 \
    --set route.policy_checkpoint="runs/route-gapgtop-s$seed/checkpoints/warm-start.safetensors"
  # The baselines over the post-trained answers: the router, random and the oracle with the
  # top-block policy as the device, so its routing is compared like for like.
  for b in device random router oracle; do
    evaluate "pt$b-b0.3-s$seed" --set route.baseline=$b --set route.budget=0.3 \
      --set route.device_checkpoint="runs/route-gapgtop-s$seed/checkpoints/model.safetensors"
  done
  for budget in $BUDGETS; do
    evaluate "gapg-b$budget-s$seed" --set name="route-gapg-s$seed" --set route.budget="$budget"
    evaluate "router-b$budget-s$seed" --set route.baseline=router --set route.budget="$budget"
    evaluate "random-b$budget-s$seed" --set route.baseline=random --set route.budget="$budget"
    evaluate "oracle-b$budget-s$seed" --set route.baseline=oracle --set route.budget="$budget"
  done
done
python3 "$SRC/scripts/experiments/routing_table.py" results
echo; echo "On the training prompts:"
python3 "$SRC/scripts/experiments/routing_table.py" results-train | sed -n '3,12p'

#!/usr/bin/env bash
# The routing experiment (docs/routing.md, "The experiment"; docs/results.md, "Routing"): a cloud
# and a device trained on one-digit addition, then for each seed GAPG and GRPO post-training of
# the device and every baseline scored on that seed's held-out prompts at a 30% budget, and GAPG
# at budgets 10-50%. Rerunnable: a finished step is skipped (its output file exists). Every process
# runs under `nice -n 19` on one thread.
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

# 1. The device: slm-micro task-tuned to step 540 of 1200 (right about 40% of the time).
if [ ! -f runs/route-device/checkpoints/model.safetensors ]; then
  run train "$SRC/configs/train-route-device.toml" --overwrite 2>&1 | grep -E "arith|held-out" || true
fi
# 2. The cloud: the same run continued to step 1200 (right on every held-out record).
if [ ! -f runs/route-cloud/summary.json ] || ! grep -q '"complete": true' runs/route-cloud/summary.json; then
  rm -rf runs/route-cloud
  cp -r runs/route-device runs/route-cloud
  run train "$SRC/configs/train-route-cloud.toml" --resume 2>&1 | grep -E "arith|held-out" || true
fi

CONFIG="$SRC/configs/route-gapg.toml"
for seed in $SEEDS; do
  for mode in gapg grpo; do
    name="route-$mode-s$seed"
    if [ ! -f "runs/$name/summary.json" ]; then
      run route train "$CONFIG" --overwrite --set seed="$seed" --set name="$name" \
        --set route.mode="$mode" 2>"runs-$name.log" | tail -1
    fi
  done
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

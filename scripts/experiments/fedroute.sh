#!/usr/bin/env bash
# The federated-routing experiment (docs/routing.md "Federated routing"; docs/results.md
# "Federated routing"): the one-digit device and cloud (configs/train-route1-device.toml,
# train-route1-cloud.toml, trained here if absent), then for each seed
#   fed      route-gapg, both clients (configs/route-fed.toml)
#   pooled   `tandem route train` on the union of their prompts (configs/route-fed-pooled.toml)
#   alone0/1 route-gapg with one client on its own part only
# each scored on every client's held-out prompts (the last round of a route-gapg run; the pooled
# policy through a route-gapg run of one round at lr 0) and with `tandem route eval` on the union,
# at the 30% budget. Every route setting comes from the two route-fed configs, so the table can be
# rerun on another task by editing them. Rerunnable: a finished step is skipped. Budget-limited:
# every process at `nice -n 5` on one thread, one at a time.
#
#   scripts/experiments/fedroute.sh [BUILD_DIR] [OUT_DIR]      # SEEDS="1 2 3" by default
set -euo pipefail
BUILD="${1:-build}"
OUT="${2:-runs/fedroute}"
SEEDS="${SEEDS:-1 2 3}"
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
TANDEM="$(cd "$BUILD" && pwd)/apps/tandem"
FED="$SRC/configs/route-fed.toml"
POOLED="$SRC/configs/route-fed-pooled.toml"
export TANDEM_THREADS=1
mkdir -p "$OUT/results"
cd "$OUT"
run() { nice -n 5 "$TANDEM" --log-level warn "$@"; }
done_run() { [ -f "runs/$1/summary.json" ] && grep -q '"complete": true' "runs/$1/summary.json"; }

# 1-2. The device, and the cloud: the same run resumed to the end of its schedule.
if [ ! -f runs/route1-device/checkpoints/model.safetensors ]; then
  run train "$SRC/configs/train-route1-device.toml" --overwrite 2>&1 | grep -E "held-out" || true
fi
if ! done_run route1-cloud; then
  rm -rf runs/route1-cloud
  cp -r runs/route1-device runs/route1-cloud
  run train "$SRC/configs/train-route1-cloud.toml" --resume 2>&1 | grep -E "held-out" || true
fi

for seed in $SEEDS; do
  done_run "fed-s$seed" || run run "$FED" --overwrite --set seed="$seed" --set name="fed-s$seed" \
    2>"fed-s$seed.log" | tail -1
  done_run "pooled-s$seed" || run route train "$POOLED" --overwrite --set seed="$seed" \
    --set name="pooled-s$seed" 2>"pooled-s$seed.log" | tail -1
  for k in 0 1; do
    done_run "alone$k-s$seed" || run run "$FED" --overwrite --set seed="$seed" \
      --set name="alone$k-s$seed" --set federation.clients=1 --set route-gapg.operand_parts=2 \
      --set "route-gapg.client_parts=[$k]" --set "route-gapg.client_budgets=[0.3]" \
      2>"alone$k-s$seed.log" | tail -1
  done
  # The pooled policy on every part: one round of route-gapg that cannot move it (lr 0).
  done_run "score-pooled-s$seed" || run run "$FED" --overwrite --set seed="$seed" \
    --set name="score-pooled-s$seed" --set federation.rounds=1 \
    --set route-gapg.device_checkpoint="runs/pooled-s$seed/checkpoints/model.safetensors" \
    --set route-gapg.lr=0 --set route-gapg.warm_start_steps=0 --set route-gapg.local_steps=1 \
    --set route-gapg.filter=false 2>"score-pooled-s$seed.log" | tail -1
  # Every policy and the two ends with `tandem route eval` on the union's held-out prompts.
  for b in device cloud; do
    [ -f "results/$b-s$seed.json" ] || run route eval "$POOLED" --set seed="$seed" \
      --set route.baseline=$b --json "results/$b-s$seed.json"
  done
  for m in fed pooled alone0 alone1; do
    [ -f "results/$m-s$seed.json" ] || run route eval "$POOLED" --set seed="$seed" \
      --set route.policy_checkpoint="runs/$m-s$seed/checkpoints/model.safetensors" \
      --json "results/$m-s$seed.json"
  done
  python3 "$SRC/scripts/experiments/fedroute_table.py" . > table.md
done
cat table.md

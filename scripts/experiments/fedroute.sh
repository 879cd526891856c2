#!/usr/bin/env bash
# The federated-routing experiment (docs/routing.md "Federated routing"; docs/results.md
# "Federated routing"): a device and a cloud (trained here if absent), then for each seed
#   fed      route-gapg, both clients ($FED)
#   pooled   `tandem route train` on the union of their prompts ($POOLED)
#   alone0/1 route-gapg with one client on its own part only
# each scored on every client's held-out prompts (the last round of a route-gapg run; the pooled
# policy through a route-gapg run of one round at lr 0) and with `tandem route eval` on the union,
# at the 30% budget, with the device, the cloud, random and the router on the union beside them.
# Every route setting comes from the two configs, so the table can be rerun on another task by
# pointing the variables below at other files (scripts/experiments/fedroute2.sh: two-digit
# addition and subtraction). Rerunnable: a finished step is skipped. Budget-limited: every
# process at `nice -n $NICE` on one thread, one at a time.
#
#   scripts/experiments/fedroute.sh [BUILD_DIR] [OUT_DIR]      # SEEDS="1 2 3" by default
#
# The defaults are the one-digit table's: FED=configs/route-fed.toml,
# POOLED=configs/route-fed-pooled.toml, DEVICE_TRAIN=configs/train-route1-device.toml,
# CLOUD_TRAIN=configs/train-route1-cloud.toml (runs DEVICE_RUN=route1-device, CLOUD_RUN=
# route1-cloud: the cloud is the device's run resumed to the end of its schedule), the clients
# alone on part K of ALONE_SETS="--set route-gapg.operand_parts=2" (the operand split's two parts;
# empty for a split whose parts do not depend on the clients), NICE=5.
set -euo pipefail
BUILD="${1:-build}"
OUT="${2:-runs/fedroute}"
SEEDS="${SEEDS:-1 2 3}"
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
TANDEM="$(cd "$BUILD" && pwd)/apps/tandem"
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$SRC/$1" ;; esac; }
FED="$(abspath "${FED:-configs/route-fed.toml}")"
POOLED="$(abspath "${POOLED:-configs/route-fed-pooled.toml}")"
DEVICE_TRAIN="$(abspath "${DEVICE_TRAIN:-configs/train-route1-device.toml}")"
CLOUD_TRAIN="$(abspath "${CLOUD_TRAIN:-configs/train-route1-cloud.toml}")"
DEVICE_RUN="${DEVICE_RUN:-route1-device}"
CLOUD_RUN="${CLOUD_RUN:-route1-cloud}"
read -r -a ALONE <<< "${ALONE_SETS---set route-gapg.operand_parts=2}"
NICE="${NICE:-5}"
export TANDEM_THREADS=1
mkdir -p "$OUT/results"
cd "$OUT"
run() { nice -n "$NICE" "$TANDEM" --log-level warn "$@"; }
done_run() { [ -f "runs/$1/summary.json" ] && grep -q '"complete": true' "runs/$1/summary.json"; }

# 1-2. The device, and the cloud: the same run resumed to where its config stops (.done marks a
# cloud trained to that point, as a resumed run stopped before the end of its schedule is not
# "complete").
if [ ! -f "runs/$DEVICE_RUN/checkpoints/model.safetensors" ]; then
  run train "$DEVICE_TRAIN" --overwrite 2>&1 | grep -E "held-out" || true
fi
if ! done_run "$CLOUD_RUN" && [ ! -f "runs/$CLOUD_RUN/checkpoints/.done" ]; then
  rm -rf "runs/$CLOUD_RUN"
  cp -r "runs/$DEVICE_RUN" "runs/$CLOUD_RUN"
  run train "$CLOUD_TRAIN" --resume 2>&1 | grep -E "held-out" || true
  touch "runs/$CLOUD_RUN/checkpoints/.done"
fi

for seed in $SEEDS; do
  done_run "fed-s$seed" || run run "$FED" --overwrite --set seed="$seed" --set name="fed-s$seed" \
    2>"fed-s$seed.log" | tail -1
  done_run "pooled-s$seed" || run route train "$POOLED" --overwrite --set seed="$seed" \
    --set name="pooled-s$seed" 2>"pooled-s$seed.log" | tail -1
  for k in 0 1; do
    done_run "alone$k-s$seed" || run run "$FED" --overwrite --set seed="$seed" \
      --set name="alone$k-s$seed" --set federation.clients=1 "${ALONE[@]}" \
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
  for b in device cloud random router; do
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

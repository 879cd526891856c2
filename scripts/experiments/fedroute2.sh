#!/usr/bin/env bash
# The federated-routing table on two-digit addition and subtraction (docs/results.md "Federated
# routing"): scripts/experiments/fedroute.sh with configs/route-fed2.toml (two clients split by
# operator) and route-fed2-pooled.toml, on the single-machine routing table's device and cloud
# (configs/train-route-device.toml, then the same run resumed as train-route-cloud.toml), every
# process at `nice -n 19`.
#
#   scripts/experiments/fedroute2.sh [BUILD_DIR] [OUT_DIR]      # SEEDS="1 2 3" by default
set -euo pipefail
export FED=configs/route-fed2.toml POOLED=configs/route-fed2-pooled.toml
export DEVICE_TRAIN=configs/train-route-device.toml CLOUD_TRAIN=configs/train-route-cloud.toml
export DEVICE_RUN=route-device CLOUD_RUN=route-cloud
export ALONE_SETS=""    # the operator split makes its two parts whatever the number of clients
export NICE="${NICE:-19}"
exec "$(dirname "$0")/fedroute.sh" "${1:-build}" "${2:-runs/fedroute2}"

#!/usr/bin/env bash
# What `make run` runs after the build: the federated quickstart, its report, and a sample.
set -euo pipefail
BUILD_DIR="${1:-build}"
TANDEM="$BUILD_DIR/apps/tandem"
echo "== tandem quickstart: a coordinator and 4 clients on loopback, FedAvg of slm-tiny on fortunes =="
"$TANDEM" run configs/quickstart.toml --overwrite
echo
echo "== per-round table (plots in runs/quickstart/report/) =="
"$TANDEM" report runs/quickstart
echo
echo "== sample text from the federated model =="
"$TANDEM" generate --checkpoint runs/quickstart/checkpoints/model.safetensors \
  --prompt "The " --max-tokens 200 --temperature 0.8 --top-k 40 --seed 7

#!/usr/bin/env bash
# What `make run` runs after the build: the quickstart config, then its summary.
set -euo pipefail
BUILD_DIR="${1:-build}"
TANDEM="$BUILD_DIR/apps/tandem"
echo "== tandem quickstart: slm-tiny on the fortunes corpus, about a minute on 2 cores =="
"$TANDEM" train configs/quickstart.toml
echo
echo "== sample text from the trained model =="
"$TANDEM" generate --checkpoint runs/quickstart/checkpoints/model.safetensors \
  --prompt "The " --max-tokens 240 --temperature 0.8 --top-k 40 --seed 7
echo
echo "== held-out evaluation =="
"$TANDEM" eval configs/quickstart.toml --checkpoint runs/quickstart/checkpoints/model.safetensors \
  --max-tokens 65536

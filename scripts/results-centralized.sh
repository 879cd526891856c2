#!/usr/bin/env bash
# Reproduces the centralized-training table in docs/results.md: slm-tiny against llm-small on
# fortunes (held-out loss) and on arithmetic (exact match per level), the same token budget each.
# Usage: scripts/results-centralized.sh [BUILD_DIR] [STEPS]   (about 30 minutes on 2 cores)
set -euo pipefail
BUILD_DIR="${1:-build}"
STEPS="${2:-600}"
TANDEM="$BUILD_DIR/apps/tandem"
OUT=runs/results-centralized
mkdir -p "$OUT"
for preset in slm-tiny llm-small; do
  lr=2e-3
  [ "$preset" = llm-small ] && lr=1e-3
  "$TANDEM" train configs/train-fortunes.toml --set name="fortunes-$preset" \
    --set model.preset="$preset" --set train.steps="$STEPS" --set train.lr="$lr" \
    --set out_dir="$OUT" --set train.eval_every=200 --set train.checkpoint_every=0
  "$TANDEM" eval configs/train-fortunes.toml \
    --checkpoint "$OUT/fortunes-$preset/checkpoints/model.safetensors" \
    --json "$OUT/fortunes-$preset/eval.json"
  "$TANDEM" train configs/train-arithmetic.toml --set name="arithmetic-$preset" \
    --set model.preset="$preset" --set train.steps="$STEPS" --set train.lr="$lr" \
    --set out_dir="$OUT" --set train.eval_every=0 --set train.checkpoint_every=0 \
    --set train.exact_match_per_category=0
  "$TANDEM" eval configs/train-arithmetic.toml \
    --checkpoint "$OUT/arithmetic-$preset/checkpoints/model.safetensors" \
    --exact-match 300 --json "$OUT/arithmetic-$preset/eval.json"
done
echo "results in $OUT/*/eval.json"

#!/usr/bin/env bash
# Reproduces the centralized-training table in docs/results.md: slm-tiny against llm-small on
# fortunes (held-out loss) and on arithmetic (exact match per level), the same token budget each.
# Usage: scripts/results-centralized.sh [BUILD_DIR] [FORTUNES_STEPS] [ARITHMETIC_STEPS]
#        (defaults 600 and 600: about 45 minutes on 2 cores, most of it llm-small)
# Set TASKS="fortunes" or TASKS="arithmetic" to run one half.
set -euo pipefail
BUILD_DIR="${1:-build}"
STEPS="${2:-600}"
ARITH_STEPS="${3:-$STEPS}"
TASKS="${TASKS:-fortunes arithmetic}"
TANDEM="$BUILD_DIR/apps/tandem"
OUT=runs/results-centralized
mkdir -p "$OUT"
for preset in slm-tiny llm-small; do
  lr=2e-3
  [ "$preset" = llm-small ] && lr=1e-3
  if [[ " $TASKS " == *" fortunes "* ]]; then
    "$TANDEM" train configs/train-fortunes.toml --overwrite --set name="fortunes-$preset" \
      --set model.preset="$preset" --set train.steps="$STEPS" --set train.lr="$lr" \
      --set out_dir="$OUT" --set train.eval_every=200 --set train.checkpoint_every=0
    "$TANDEM" eval configs/train-fortunes.toml \
      --checkpoint "$OUT/fortunes-$preset/checkpoints/model.safetensors" \
      --json "$OUT/fortunes-$preset/eval.json"
  fi
  [[ " $TASKS " == *" arithmetic "* ]] || continue
  "$TANDEM" train configs/train-arithmetic.toml --overwrite --set name="arithmetic-$preset" \
    --set model.preset="$preset" --set train.steps="$ARITH_STEPS" --set train.lr="$lr" \
    --set out_dir="$OUT" --set train.eval_every=0 --set train.checkpoint_every=0 \
    --set train.exact_match_per_category=0
  "$TANDEM" eval configs/train-arithmetic.toml \
    --checkpoint "$OUT/arithmetic-$preset/checkpoints/model.safetensors" \
    --exact-match 300 --json "$OUT/arithmetic-$preset/eval.json"
done
echo "results in $OUT/*/eval.json"

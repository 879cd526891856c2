#!/usr/bin/env bash
# Same seed, same bits: trains what scripts/bits.sha256 lists — the quickstart's federated model
# (every client in every round: min_results = 4), a short centralized run and a short LoRA run —
# and compares each final file's SHA-256 with the one recorded there. A refactor must leave them
# all unchanged; a change that moves them on purpose records the new hashes (--record) and says
# why in its commit. The hashes hold for the machine they were recorded on (2 cores: the batch is
# split into one shard per thread, so another core count sums gradients in another order).
#   bash scripts/check-bits.sh [BUILD_DIR] [--record]
set -euo pipefail
BUILD_DIR="${1:-build}"
RECORD="${2:-}"
TANDEM="$(readlink -f "$BUILD_DIR/apps/tandem")"
SRC="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d /tmp/tandem-bits-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
echo "check-bits: the quickstart (a few minutes on 2 cores) ..." >&2
"$TANDEM" run "$SRC/configs/quickstart.toml" --set out_dir=runs --set name=quickstart \
  --set federation.min_results=4 --set federation.round_deadline_s=1800 > quickstart.log 2>&1 ||
  { tail -5 quickstart.log >&2; exit 1; }
"$TANDEM" train "$SRC/configs/train-fortunes.toml" --set out_dir=runs --set name=train \
  --set train.steps=30 --set model.preset=slm-micro --set train.eval_every=10 > train.log 2>&1
"$TANDEM" train "$SRC/configs/train-fortunes.toml" --set out_dir=runs --set name=lora \
  --set train.steps=20 --set model.preset=slm-micro --set model.lora.rank=4 > lora.log 2>&1
sha256sum runs/quickstart/checkpoints/model.safetensors runs/train/checkpoints/model.safetensors \
  runs/lora/checkpoints/lora.safetensors > measured.sha256
if [ "$RECORD" = "--record" ]; then
  cp measured.sha256 "$SRC/scripts/bits.sha256"
  echo "check-bits: recorded in scripts/bits.sha256" >&2
  exit 0
fi
if diff "$SRC/scripts/bits.sha256" measured.sha256 >&2; then
  echo "check-bits: all unchanged" >&2
else
  echo "check-bits: the bits moved (above: recorded, then measured)" >&2
  exit 1
fi

#!/usr/bin/env bash
# Same seed, same bits: trains what scripts/bits.sha256 lists — the quickstart's federated model
# (every client in every round: min_results = 4), a short centralized run, a short LoRA run, and
# two rounds each of distill-down, fedmkt and fedcollm against a small public LLM — and compares
# each final file's SHA-256 with the one recorded there. A refactor must leave them all unchanged;
# a change that moves them on purpose records the new hashes (--record) and says why in its
# commit. The hashes hold for the machine they were recorded on (2 cores: the batch is split into
# one shard per thread, so another core count sums gradients in another order).
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

# The distillation algorithms: a small LLM trained on the public categories, then two rounds each.
cat > base.toml <<'TOML'
name = "fed"
seed = 3
out_dir = "runs"
[model]
preset = "slm-micro"
[data]
source = "fortunes"
public_categories = ["art", "computers", "cookie", "definitions", "fortunes"]
validation_fraction = 0.05
test_fraction = 0.05
[federation]
clients = 3
transport = "ipc"
partition = "by-category"
rounds = 2
round_deadline_s = 1800
[client]
local_steps = 8
batch = 8
lr = 2e-3
[eval]
tokens = 4096
TOML
cat > llm.toml <<'TOML'
name = "llm"
seed = 2
out_dir = "runs"
[model]
preset = "slm-micro"
n_layer = 3
[data]
source = "fortunes"
public_categories = ["art", "computers", "cookie", "definitions", "fortunes"]
validation_fraction = 0.05
test_fraction = 0.05
[train]
on = "public"
steps = 30
batch = 8
eval_every = 30
TOML
"$TANDEM" train llm.toml > llm.log 2>&1 || { tail -5 llm.log >&2; exit 1; }
LLM=runs/llm/checkpoints/model.safetensors
distill() {  # ALGORITHM LINE...: two rounds of ALGORITHM with LINEs as its section
  local algorithm="$1"
  shift
  { cat base.toml; printf '[algorithm]\nname = "%s"\n[%s]\n' "$algorithm" "$algorithm";
    printf '%s\n' "$@"; } > "$algorithm.toml"
  TANDEM_THREADS=1 "$TANDEM" run "$algorithm.toml" --set name="$algorithm" > "$algorithm.log" 2>&1 ||
    { tail -5 "$algorithm.log" >&2; exit 1; }
}
echo "check-bits: distill-down, fedmkt and fedcollm ..." >&2
distill distill-down "teacher = \"$LLM\"" "top_k = 8" "windows = 4"
distill fedmkt "llm = \"$LLM\"" "windows = 4" "server_steps = 3" "server_batch = 2" "top_k = 8"
distill fedcollm "llm = \"$LLM\"" "windows = 4" "server_steps = 3" "server_batch = 2"

sha256sum runs/quickstart/checkpoints/model.safetensors runs/train/checkpoints/model.safetensors \
  runs/lora/checkpoints/lora.safetensors runs/distill-down/checkpoints/model.safetensors \
  runs/fedmkt/checkpoints/llm.safetensors runs/fedcollm/checkpoints/model.lora.safetensors \
  runs/fedcollm/checkpoints/llm.safetensors > measured.sha256
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

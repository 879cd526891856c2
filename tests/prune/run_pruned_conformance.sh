#!/usr/bin/env bash
# Dumps a Taylor-pruned non-uniform model with its parent, logits, loss and gradients, and checks
# them against the PyTorch GPT-2 and an independent decoding of the alignment map.
# Usage: run_pruned_conformance.sh DUMP_BIN PRUNED_CONFORMANCE_PY
set -euo pipefail
dump="$1"; script="$2"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$dump" "$dir"
/usr/bin/python3 "$script" --parent "$dir/parent.safetensors" --model "$dir/model.safetensors" \
  --expected "$dir/expected.safetensors"

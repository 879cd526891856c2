#!/usr/bin/env bash
# Dumps tandem's logits, loss and gradients for a preset and checks them against the PyTorch
# GPT-2 in torch_gpt2.py. Usage: run_conformance.sh DUMP_BIN CONFORMANCE_PY PRESET BATCH SEQ [hidden]
set -euo pipefail
dump="$1"; script="$2"; preset="$3"; batch="$4"; seq="$5"; mode="${6:-}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$dump" "$dir" "$preset" "$batch" "$seq" $mode
/usr/bin/python3 "$script" --model "$dir/model.safetensors" --expected "$dir/expected.safetensors"

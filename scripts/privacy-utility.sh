#!/usr/bin/env bash
# Reproduces the privacy-utility table in docs/results.md: the quickstart task (4 clients, fortunes
# split by category, slm-tiny, FedAvg, 5 rounds) with differential privacy at several noise levels,
# distributed noise over secure aggregation, against the same run without privacy.
# Usage: scripts/privacy-utility.sh [BUILD_DIR] [SIGMAS]   (about 12 minutes on 2 cores)
set -euo pipefail
BUILD_DIR="${1:-build}"
SIGMAS="${2:-0.01 0.03 0.1 0.3 1.0}"
TANDEM="$BUILD_DIR/apps/tandem"
OUT=runs/privacy-utility
mkdir -p "$OUT"
quiet() { "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; }
quiet "$TANDEM" run configs/quickstart.toml --overwrite --set out_dir="$OUT" --set name=plain
quiet "$TANDEM" run configs/quickstart.toml --overwrite --set out_dir="$OUT" --set name=secagg-only \
  --set privacy.secagg.enabled=true --set privacy.secagg.threshold=3 \
  --set privacy.secagg.dropout_rate=0.25
for sigma in $SIGMAS; do
  quiet "$TANDEM" run configs/private.toml --overwrite --set out_dir="$OUT" --set name="sigma-$sigma" \
    --set privacy.dp.noise_multiplier="$sigma"
done
/usr/bin/python3 - "$OUT" plain secagg-only $(for s in $SIGMAS; do echo "sigma-$s"; done) <<'PY'
import json, sys
root, names = sys.argv[1], sys.argv[2:]
print("| run | σ | ε (δ = 1e-5) | held-out loss after 5 rounds | test loss | round time |")
print("|---|---|---|---|---|---|")
for name in names:
    s = json.load(open(f"{root}/{name}/summary.json"))
    lines = [json.loads(l) for l in open(f"{root}/{name}/metrics.jsonl")]
    rounds = [l for l in lines if l.get("round", 0) >= 1]
    rt = sorted(l["round_s"] for l in rounds)[len(rounds) // 2]
    eps = f"{s['epsilon']:.4g}" if "epsilon" in s else "∞ (no DP)"
    sigma = f"{s['noise_multiplier']:g}" if "noise_multiplier" in s else "—"
    label = {"plain": "FedAvg, no privacy", "secagg-only": "secure aggregation, no DP"}.get(name, "DP + secure aggregation")
    print(f"| {label} | {sigma} | {eps} | {s['final_val_loss']:.3f} (from {s['initial_val_loss']:.3f}) | {s['final_test_loss']:.3f} | {rt:.1f} s |")
PY

#!/usr/bin/env bash
# A federated round with secure aggregation against the same round without it, measured in the same
# run of this script (the two alternate, so machine load hits both alike).
#   bench/secagg_round.sh BUILD_DIR [CLIENTS] [ROUNDS] [PAIRS]
# Both runs: CLIENTS client processes over tcp on 127.0.0.1 (CURVE on), a model of 1.03 M
# parameters (slm-tiny with 5 layers), FedAvg with a few local steps. Prints the median round time
# of each and their ratio; the secure-aggregation run also reports the time its four extra steps
# took on the coordinator (secagg_s) and the bytes moved.
set -euo pipefail
BUILD_DIR="${1:-build}"
CLIENTS="${2:-10}"
ROUNDS="${3:-4}"
PAIRS="${4:-2}"
TANDEM="$(readlink -f "$BUILD_DIR/apps/tandem")"
OUT="$(mktemp -d /tmp/tandem-secagg-round-XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
cat > "$OUT/base.toml" <<EOT
name = "secagg-round"
seed = 1
out_dir = "$OUT/runs"
[model]
preset = "slm-tiny"
n_layer = 5
[data]
source = "fortunes"
[federation]
clients = $CLIENTS
transport = "tcp"
partition = "by-category"
rounds = $ROUNDS
round_deadline_s = 300
[client]
local_steps = 8
batch = 8
lr = 2e-3
[eval]
tokens = 4096
EOT
run() {  # NAME [--set ...]
  local name="$1"; shift
  "$TANDEM" run "$OUT/base.toml" --set name="$name" "$@" > "$OUT/$name.log" 2>&1 ||
    { tail -20 "$OUT/$name.log"; exit 1; }
}
for p in $(seq 1 "$PAIRS"); do
  run "plain-$p"
  run "secagg-$p" --set privacy.secagg.enabled=true --set privacy.secagg.dropout_rate=0.2
done
/usr/bin/python3 - "$OUT/runs" "$PAIRS" "$CLIENTS" <<'PY'
import json, statistics, sys
root, pairs, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rounds(name):
    return [json.loads(l) for l in open(f"{root}/{name}/metrics.jsonl") if json.loads(l).get("round", 0) >= 1]
plain = [m for p in range(1, pairs + 1) for m in rounds(f"plain-{p}")]
sec = [m for p in range(1, pairs + 1) for m in rounds(f"secagg-{p}")]
med = lambda xs: statistics.median(xs)
rp, rs = med([m["round_s"] for m in plain]), med([m["round_s"] for m in sec])
print(f"{clients} clients, {len(plain)} rounds each")
print(f"round_s median: without {rp:.2f} s, with secure aggregation {rs:.2f} s, ratio {rs / rp:.3f}")
print(f"secagg_s (coordinator's own work in the 4 steps) median {med([m['secagg_s'] for m in sec]):.3f} s")
print(f"bytes up per round: without {med([m['bytes_up'] for m in plain]) / 1e6:.1f} MB, "
      f"with {med([m['bytes_up'] for m in sec]) / 1e6:.1f} MB; "
      f"down: {med([m['bytes_down'] for m in plain]) / 1e6:.1f} MB, {med([m['bytes_down'] for m in sec]) / 1e6:.1f} MB")
PY

#!/usr/bin/env bash
# Round time against the clients' pure compute time, measured in the same run.
#   bench/round_overhead.sh BUILD_DIR [CONFIG] [ROUNDS]
# Runs CONFIG (default: the quickstart: 4 client processes on loopback) and, for every round,
# compares the coordinator's round time with the least time the clients' computation alone could
# take on this machine's cores: max(longest client, sum of client compute / cores), where each
# client's compute time is what it reports for its local training (after it got its compute slot).
# The ratio is the price of the federation: transport, waiting, aggregation and evaluation.
set -euo pipefail
BUILD_DIR="${1:-build}"
CONFIG="${2:-configs/quickstart.toml}"
ROUNDS="${3:-3}"
TANDEM="$(readlink -f "$BUILD_DIR/apps/tandem")"
OUT="$(mktemp -d /tmp/tandem-round-bench-XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
CORES="$(nproc)"
"$TANDEM" run "$CONFIG" --set out_dir="$OUT" --set name=bench --set federation.rounds="$ROUNDS" \
  > "$OUT/run.log" 2>&1 || { tail -20 "$OUT/run.log"; exit 1; }
/usr/bin/python3 - "$OUT/bench/metrics.jsonl" "$CORES" <<'EOF'
import json, statistics, sys
path, cores = sys.argv[1], int(sys.argv[2])
rows = []
for line in open(path):
    m = json.loads(line)
    if m.get("round", 0) < 1 or "client_compute_s_max" not in m:
        continue
    total = m["client_compute_s_mean"] * m["results"]
    ideal = max(m["client_compute_s_max"], total / cores)
    rows.append((m["round"], m["round_s"], ideal, m.get("collect_s", 0), m.get("eval_s", 0),
                 m.get("dispatch_s", 0) + m.get("aggregate_s", 0)))
print(f"{'round':>5} {'round_s':>8} {'compute_s':>9} {'ratio':>6} {'collect_s':>9} {'eval_s':>7} {'dispatch+agg_s':>14}")
for r, rs, ideal, col, ev, da in rows:
    print(f"{r:>5} {rs:>8.2f} {ideal:>9.2f} {rs / ideal:>6.3f} {col:>9.2f} {ev:>7.2f} {da:>14.3f}")
ratios = [rs / ideal for _, rs, ideal, *_ in rows]
collect = [col / ideal for _, _, ideal, col, *_ in rows]
print(f"median round time / pure compute time = {statistics.median(ratios):.3f} "
      f"(collect alone: {statistics.median(collect):.3f}); {cores} cores")
EOF

#!/usr/bin/env bash
# `tandem route train` and `tandem route eval` end to end on a tiny budget: two slm-micro models
# trained for a few steps on one-digit addition, a warm start and a few GAPG steps with the prompt
# filter, a progress line per step, checkpoints and the run record, a finished run refused a
# second start, every baseline's evaluation under the budget (the oracle router and the policy
# never above it, the cloud always, the device never), and clear errors for bad configs.
# Usage: route_cli_test.sh TANDEM_BINARY
set -uo pipefail
TANDEM="$1"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
export TANDEM_THREADS=1
failures=0
pass() { echo "ok: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }
expect_error() {
  local what="$1" pattern="$2"; shift 2
  local err
  err="$("$@" 2>&1 >/dev/null)"; local rc=$?
  if [ $rc -ne 0 ] && grep -qE -- "$pattern" <<<"$err"; then pass "$what"; else
    fail "$what (exit $rc, stderr: $err)"; fi
}

for m in cloud device; do
  cat > "$dir/$m.toml" <<TOML
name = "$m"
seed = $([ $m = cloud ] && echo 2 || echo 3)
out_dir = "$dir/runs"
[model]
preset = "slm-micro"
[data]
source = "arithmetic"
[data.arithmetic]
levels = [1]
examples_per_level = 2000
[train]
batch = 8
steps = $([ $m = cloud ] && echo 30 || echo 15)
lr = 3e-3
eval_every = 0
checkpoint_every = 0
TOML
  "$TANDEM" --log-level warn train "$dir/$m.toml" >/dev/null 2>"$dir/$m.err" \
    || { echo "FAIL: training the $m model: $(cat "$dir/$m.err")"; exit 1; }
done

cat > "$dir/route.toml" <<TOML
name = "gapg"
out_dir = "$dir/runs"
seed = 5
[route]
device_checkpoint = "$dir/runs/device/checkpoints/model.safetensors"
cloud_checkpoint = "$dir/runs/cloud/checkpoints/model.safetensors"
levels = [1]
examples_per_level = 1000
max_tokens = 4
warm_start_steps = 4
warm_start_batch = 8
steps = 6
group_size = 4
prompts_per_step = 3
filter_every = 3
checkpoint_every = 5
budget = 0.3
TOML

out="$("$TANDEM" --log-level warn route train "$dir/route.toml" 2>"$dir/train.err")"; rc=$?
if [ $rc -eq 0 ]; then pass "route train runs"; else fail "route train (exit $rc): $(cat "$dir/train.err")"; fi
n_warm=$(grep -c "warm start: loss" "$dir/train.err")
n_pg=$(grep -cE "gapg: reward [0-9.]+, hand-off [0-9.]+, .*cloud queries" "$dir/train.err")
if [ "$n_warm" -eq 4 ] && [ "$n_pg" -eq 6 ]; then pass "a progress line per step (4 warm, 6 gapg)"; else
  fail "progress lines: $n_warm warm, $n_pg gapg"; fi
run="$dir/runs/gapg"
for f in checkpoints/model.safetensors checkpoints/warm-start.safetensors \
         checkpoints/state.safetensors config.toml config.resolved.toml run.json summary.json; do
  if [ -s "$run/$f" ]; then pass "wrote $f"; else fail "no $f"; fi
done
if [ "$(wc -l < "$run/metrics.jsonl")" -eq 10 ]; then pass "10 metrics lines"; else fail "metrics.jsonl"; fi
grep -q '"complete": true' "$run/summary.json" && pass "summary says complete" || fail "summary.json"
grep -q "route train: 10 steps" <<<"$out" && pass "final line" || fail "final line: $out"

expect_error "a second start is refused" "--resume|--overwrite" "$TANDEM" route train "$dir/route.toml"
expect_error "a finished run resumes to nothing" "complete" "$TANDEM" route train "$dir/route.toml" --resume
"$TANDEM" --log-level warn route train "$dir/route.toml" --overwrite --set route.mode=grpo \
  --set route.warm_start_steps=0 --set route.steps=2 >/dev/null 2>"$dir/grpo.err" \
  && grep -q "grpo: reward" "$dir/grpo.err" && pass "--overwrite, grpo mode" \
  || fail "grpo: $(cat "$dir/grpo.err")"

for b in policy device cloud random router oracle; do
  line="$("$TANDEM" --log-level warn route eval "$dir/route.toml" --set route.baseline=$b \
          --json "$dir/$b.json" 2>"$dir/eval.err")"; rc=$?
  if [ $rc -eq 0 ] && grep -qE "^route eval $b at budget [0-9.]+: accuracy [0-9.]+ \([0-9]+/[0-9]+\), local accuracy" <<<"$line"; then
    pass "eval $b: $line"; else fail "eval $b (exit $rc): $line $(cat "$dir/eval.err")"; fi
done
python3 - "$dir" <<'PY' && pass "budgets respected, counts add up" || fail "budget checks"
import json, math, sys
d = sys.argv[1]
r = {b: json.load(open(f"{d}/{b}.json")) for b in ["policy", "device", "cloud", "random", "router", "oracle"]}
ok = True
def check(cond, what):
    global ok
    if not cond:
        print("  violated:", what); ok = False
q = r["oracle"]["queries"]
check(q > 0, "queries")
for b in ["policy", "random", "router", "oracle"]:
    check(r[b]["handoffs"] <= math.floor(0.3 * q + 1e-9), f"{b} within the budget: {r[b]}")
    check(r[b]["handoffs"] + r[b]["local_answered"] == q, f"{b} counts")
check(r["cloud"]["call_ratio"] == 1.0, "cloud hands off everything")
check(r["device"]["call_ratio"] == 0.0, "device never hands off")
# The oracle asks for exactly the prompts the device gets wrong.
check(r["oracle"]["requested"] == q - r["device"]["correct"], "oracle asks for the device's mistakes")
# Its hand-offs replace wrong answers only, so it is never below the device alone.
check(r["oracle"]["correct"] >= r["device"]["correct"], "oracle >= device")
sys.exit(0 if ok else 1)
PY

# The score-ranked cap: every method spends exactly the budget's share (the oracle: its
# mistakes, up to that share), on the same queries as the online cap.
for b in policy random router oracle device; do
  "$TANDEM" --log-level warn route eval "$dir/route.toml" --set route.baseline=$b \
    --set route.cap=ranked --json "$dir/ranked-$b.json" >/dev/null 2>"$dir/eval.err" \
    || fail "ranked eval $b: $(cat "$dir/eval.err")"
done
python3 - "$dir" <<'PY' && pass "the ranked cap spends the budget exactly" || fail "ranked cap checks"
import json, math, sys
d = sys.argv[1]
r = {b: json.load(open(f"{d}/ranked-{b}.json")) for b in ["policy", "random", "router", "oracle", "device"]}
q = r["oracle"]["queries"]
quota = math.floor(0.3 * q + 1e-9)
ok = True
for b in ["policy", "random", "router"]:
    if r[b]["handoffs"] != quota or r[b]["queries"] != q:
        print("  violated:", b, r[b], "quota", quota); ok = False
wrong = q - r["device"]["correct"]
if r["oracle"]["handoffs"] != min(quota, wrong) or r["oracle"]["correct"] < r["device"]["correct"]:
    print("  violated: oracle", r["oracle"], "wrong", wrong); ok = False
sys.exit(0 if ok else 1)
PY
expect_error "unknown cap" "route.cap" "$TANDEM" route eval "$dir/route.toml" --set route.cap=fifo

expect_error "budget outside [0, 1]" "route.budget" "$TANDEM" route eval "$dir/route.toml" --set route.budget=1.5
expect_error "a_c >= a_a" "route.handoff_correct" "$TANDEM" route train "$dir/route.toml" --overwrite --set route.handoff_correct=2.0
expect_error "unknown baseline" "route.baseline" "$TANDEM" route eval "$dir/route.toml" --set route.baseline=best
expect_error "missing device checkpoint" "route.device_checkpoint" "$TANDEM" route eval "$dir/route.toml" --set route.device_checkpoint="$dir/nope.safetensors"
expect_error "unknown key" "unknown key" "$TANDEM" route eval "$dir/route.toml" --set route.budgte=0.2

[ $failures -eq 0 ] && echo "all passed" || echo "$failures failed"
exit $((failures > 0))

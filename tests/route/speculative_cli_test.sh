#!/usr/bin/env bash
# `tandem generate --draft CKPT --gamma N` end to end: two small models trained for a few steps,
# the speculative text and its statistics line, greedy speculative output equal to the cloud's
# own greedy output, and clear errors for bad options.
# Usage: speculative_cli_test.sh TANDEM_BINARY
set -uo pipefail
TANDEM="$1"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
failures=0
pass() { echo "ok: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }
expect_error() {
  local what="$1" pattern="$2"; shift 2
  local err
  err="$("$@" 2>&1 >/dev/null)"; local rc=$?
  if [ $rc -ne 0 ] && grep -qE "$pattern" <<<"$err"; then pass "$what"; else
    fail "$what (exit $rc, stderr: $err)"; fi
}

printf 'the cat sat on the mat.\n\nthe dog sat on the log.\n\n%.0s' {1..200} > "$dir/corpus.txt"
for m in cloud device; do
  cat > "$dir/$m.toml" <<TOML
name = "$m"
seed = $([ $m = cloud ] && echo 2 || echo 3)
out_dir = "$dir/runs"
[model]
preset = "slm-micro"
[data]
source = "$dir/corpus.txt"
validation_fraction = 0.1
test_fraction = 0.1
[train]
batch = 4
steps = $([ $m = cloud ] && echo 12 || echo 6)
eval_every = 6
checkpoint_every = 6
TOML
  if TANDEM_THREADS=1 "$TANDEM" train "$dir/$m.toml" > "$dir/$m.out" 2>&1; then pass "train $m"; else
    fail "train $m: $(tail -3 "$dir/$m.out")"; fi
done
cloud="$dir/runs/cloud/checkpoints/model.safetensors"
device="$dir/runs/device/checkpoints/model.safetensors"

out="$(TANDEM_THREADS=1 "$TANDEM" generate --checkpoint "$cloud" --draft "$device" --gamma 3 \
       --prompt "the " --max-tokens 30 --seed 3 2> "$dir/stats.txt")"
if [ "${out:0:4}" = "the " ] && [ ${#out} -gt 4 ]; then pass "speculative generate"; else
  fail "speculative generate: '$out'"; fi
if grep -qE '^speculative: gamma 3, drafted [0-9]+, accepted [0-9]+ \(acceptance [0-9.]+\), verifier calls [0-9]+, [0-9.]+ tokens per call$' "$dir/stats.txt"; then
  pass "statistics line"; else fail "statistics line: $(cat "$dir/stats.txt")"; fi

plain="$(TANDEM_THREADS=1 "$TANDEM" generate --checkpoint "$cloud" --temperature 0 --prompt "the " --max-tokens 40)"
for g in 1 4 8; do
  spec="$(TANDEM_THREADS=1 "$TANDEM" generate --checkpoint "$cloud" --draft "$device" --gamma $g \
          --temperature 0 --prompt "the " --max-tokens 40 2>/dev/null)"
  if [ "$spec" = "$plain" ]; then pass "greedy gamma $g equals the cloud's greedy text"; else
    fail "greedy gamma $g: '$spec' vs '$plain'"; fi
done

expect_error "gamma 0" "gamma" "$TANDEM" generate --checkpoint "$cloud" --draft "$device" --gamma 0
expect_error "missing draft" "draft" "$TANDEM" generate --checkpoint "$cloud" --draft "$dir/none.safetensors"
expect_error "top-p without a draft" "top-p needs --draft" "$TANDEM" generate --checkpoint "$cloud" --top-p 0.9
head -c 100 /dev/urandom > "$dir/garbage.safetensors"
expect_error "corrupt draft" "safetensors" "$TANDEM" generate --checkpoint "$cloud" --draft "$dir/garbage.safetensors"

echo "$failures failure(s)"
[ $failures -eq 0 ]

#!/usr/bin/env bash
# `tandem serve`, `tandem generate --cloud` and `tandem ask` end to end over tcp://127.0.0.1 with
# CURVE and the allow-list: two small models trained for a few steps, the service started on port
# 0, greedy speculative decoding against it equal to the cloud's own greedy text, `tandem ask`'s
# per-prompt lines, a key not on the allow-list refused, and the service stopped by SIGTERM.
# Usage: serve_cli_test.sh TANDEM_BINARY
set -uo pipefail
TANDEM="$1"
dir="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; fi
  rm -rf "$dir"
}
trap cleanup EXIT
failures=0
pass() { echo "ok: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }
export TANDEM_THREADS=1

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
  if "$TANDEM" train "$dir/$m.toml" > "$dir/$m.out" 2>&1; then pass "train $m"; else
    fail "train $m: $(tail -3 "$dir/$m.out")"; fi
done
cloud="$dir/runs/cloud/checkpoints/model.safetensors"
device="$dir/runs/device/checkpoints/model.safetensors"
for sub in serve ask; do
  if "$TANDEM" $sub --help >/dev/null 2>&1; then pass "$sub --help"; else fail "$sub --help"; fi
done
err="$("$TANDEM" generate --prompt x 2>&1)"; rc=$?
if [ $rc -ne 0 ] && grep -q -- "--checkpoint is required" <<<"$err"; then pass "generate needs --checkpoint or --cloud"; else
  fail "generate without a model: exit $rc, $err"; fi
err="$("$TANDEM" generate --cloud tcp://127.0.0.1:1 --prompt x 2>&1)"; rc=$?
if [ $rc -ne 0 ] && grep -q -- "--cloud needs --draft" <<<"$err"; then pass "--cloud needs --draft"; else
  fail "--cloud without --draft: exit $rc, $err"; fi
"$TANDEM" keygen --out "$dir/keys" --clients 2 > /dev/null || fail "keygen"
"$TANDEM" keygen --out "$dir/other" --clients 1 > /dev/null || fail "keygen other"
err="$("$TANDEM" serve "$dir/cloud.toml" --bind tcp://127.0.0.1:0 2>&1)"; rc=$?
if [ $rc -ne 0 ] && grep -q "serve.checkpoint" <<<"$err"; then pass "serve needs a checkpoint"; else
  fail "serve without a checkpoint: exit $rc, $err"; fi
cat > "$dir/serve.toml" <<TOML
name = "serve"
out_dir = "$dir/runs"
[federation]
transport = "tcp"
keys_dir = "$dir/keys"
heartbeat_ms = 200
peer_timeout_ms = 3000
[serve]
checkpoint = "$cloud"
max_calls_per_client = 1000
TOML

"$TANDEM" serve "$dir/serve.toml" --bind tcp://127.0.0.1:0 > "$dir/serve.out" 2> "$dir/serve.err" &
server_pid=$!
endpoint=""
for _ in $(seq 1 100); do  # up to 10 s
  endpoint="$(sed -n 's/^serving on //p' "$dir/serve.out")"
  [ -n "$endpoint" ] && break
  sleep 0.1
done
if [[ "$endpoint" =~ ^tcp://127\.0\.0\.1:[0-9]+$ ]] && [ "$endpoint" != "tcp://127.0.0.1:0" ]; then
  pass "serve binds port 0 and says where ($endpoint)"; else
  fail "serve did not start: $(cat "$dir/serve.err")"; fi

plain="$("$TANDEM" generate --checkpoint "$cloud" --temperature 0 --prompt "the " --max-tokens 40)"
for g in 1 4; do
  spec="$(timeout 60 "$TANDEM" generate --draft "$device" --cloud "$endpoint" --keys "$dir/keys" \
          --gamma $g --temperature 0 --prompt "the " --max-tokens 40 2> "$dir/stats.txt")"
  if [ "$spec" = "$plain" ]; then pass "remote greedy gamma $g equals the cloud's greedy text"; else
    fail "remote greedy gamma $g: '$spec' vs '$plain' ($(cat "$dir/stats.txt"))"; fi
done
if grep -qE '^speculative \(remote\): gamma 4, drafted [0-9]+, accepted [0-9]+ \(acceptance [0-9.]+\), round trips [0-9]+, [0-9.]+ tokens per round trip, [0-9]+ bytes per token, [0-9.]+ tokens/s$' "$dir/stats.txt"; then
  pass "remote statistics line"; else fail "remote statistics line: $(cat "$dir/stats.txt")"; fi

printf 'the \nthe dog \n' > "$dir/prompts.txt"
out="$(timeout 60 "$TANDEM" ask "$dir/serve.toml" --connect "$endpoint" --checkpoint "$device" \
       --prompts "$dir/prompts.txt" --budget 0.5 --max-tokens 8 2> "$dir/ask.err")"
lines="$(grep -cE $'^the( dog)? \t(device|cloud|device after cap|device after timeout)\t[0-9.]+ ms\t' <<<"$out")"
if [ "$lines" = 2 ]; then pass "ask prints who answered each prompt"; else
  fail "ask output: '$out' $(cat "$dir/ask.err")"; fi
if grep -qE '^ask: 2 prompts: device [0-9]+, cloud [0-9]+, device after cap [0-9]+, device after timeout 0' "$dir/ask.err"; then
  pass "ask summary"; else fail "ask summary: $(cat "$dir/ask.err")"; fi

err="$(timeout 60 "$TANDEM" generate --draft "$device" --cloud "$endpoint" --keys "$dir/other" \
       --gamma 2 --prompt "the " --max-tokens 5 2>&1 >/dev/null)"; rc=$?
if [ $rc -ne 0 ] && grep -q "no Welcome" <<<"$err"; then pass "a key not on the allow-list is refused"; else
  fail "unknown key: exit $rc, $err"; fi
err="$("$TANDEM" generate --draft "$device" --cloud "$endpoint" --keys "$dir/keys" --id 7 2>&1 >/dev/null)"; rc=$?
if [ $rc -ne 0 ] && grep -q "client-7.key" <<<"$err"; then pass "a missing key file is named"; else
  fail "missing key: exit $rc, $err"; fi

kill -TERM "$server_pid"
for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then fail "serve did not stop on SIGTERM"; else
  wait "$server_pid"; rc=$?; server_pid=""
  if [ $rc -eq 0 ] && grep -qE '^served [1-9][0-9]* requests \(0 refused, 0 late\)$' "$dir/serve.out"; then
    pass "serve stops on SIGTERM with its totals"; else
    fail "serve exit $rc: $(cat "$dir/serve.out") $(tail -3 "$dir/serve.err")"; fi
fi

[ $failures -eq 0 ] && echo "all passed" || echo "$failures failed"
exit $((failures > 0))

#!/usr/bin/env bash
# The tandem command line end to end: every subcommand answers --help, bad input gives one clear
# error line and exit status 1, and train -> eval -> generate works on a small corpus.
# Usage: cli_test.sh TANDEM_BINARY
set -uo pipefail
TANDEM="$1"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
failures=0
pass() { echo "ok: $1"; }
fail() { echo "FAIL: $1"; failures=$((failures + 1)); }

# expect_error DESCRIPTION PATTERN COMMAND...: exit status non-zero and stderr matching PATTERN.
expect_error() {
  local what="$1" pattern="$2"; shift 2
  local err
  err="$("$@" 2>&1 >/dev/null)"; local rc=$?
  if [ $rc -ne 0 ] && grep -qE "$pattern" <<<"$err"; then pass "$what"; else
    fail "$what (exit $rc, stderr: $err)"; fi
}

for sub in train eval generate "bench train" prune; do
  # shellcheck disable=SC2086
  if "$TANDEM" $sub --help >/dev/null 2>&1; then pass "$sub --help"; else fail "$sub --help"; fi
done

printf 'the cat sat on the mat.\n\nthe dog sat on the log.\n\n%.0s' {1..200} > "$dir/corpus.txt"
cat > "$dir/run.toml" <<TOML
name = "cli"
seed = 2
out_dir = "$dir/runs"
[model]
preset = "slm-micro"
[data]
source = "$dir/corpus.txt"
validation_fraction = 0.1
test_fraction = 0.1
[train]
batch = 4
steps = 12
eval_every = 6
checkpoint_every = 6
TOML

expect_error "missing config file" "config" "$TANDEM" train "$dir/none.toml"
printf '[train]\nsteps = = 1\n' > "$dir/syntax.toml"
expect_error "TOML syntax error names file and line" "syntax.toml:2" "$TANDEM" train "$dir/syntax.toml"
expect_error "misspelt key" "unknown key.*train.stpes" "$TANDEM" train "$dir/run.toml" --set train.stpes=3
expect_error "wrong type names the key" "train.batch.*expected an integer" \
  "$TANDEM" train "$dir/run.toml" --set 'train.batch="four"'
expect_error "unknown preset lists the presets" "slm-tiny" "$TANDEM" bench train --preset nope
expect_error "missing checkpoint" "checkpoint" "$TANDEM" generate --checkpoint "$dir/none.safetensors"
head -c 100 /dev/urandom > "$dir/garbage.safetensors"
expect_error "corrupt checkpoint" "safetensors" "$TANDEM" generate --checkpoint "$dir/garbage.safetensors"

if "$TANDEM" train "$dir/run.toml" > "$dir/train.out" 2>&1 && grep -q "held-out loss" "$dir/train.out"; then
  pass "train"; else fail "train: $(tail -5 "$dir/train.out")"; fi
ckpt="$dir/runs/cli/checkpoints/model.safetensors"
if [ -s "$dir/runs/cli/metrics.jsonl" ] && [ -s "$dir/runs/cli/summary.json" ] && [ -s "$ckpt" ]; then
  pass "run directory"; else fail "run directory incomplete: $(ls -R "$dir/runs")"; fi
if "$TANDEM" eval "$dir/run.toml" --checkpoint "$ckpt" --json "$dir/eval.json" | grep -q "^validation"; then
  pass "eval"; else fail "eval"; fi
if grep -q '"perplexity"' "$dir/eval.json"; then pass "eval --json"; else fail "eval --json"; fi
# Training learned something: the held-out loss fell well below its start (about ln 256 = 5.55).
if python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["final_val_loss"] < s["initial_val_loss"] - 0.3 else 1)' \
    "$dir/runs/cli/summary.json"; then pass "train lowers the held-out loss"; else
  fail "train lowers the held-out loss: $(cat "$dir/runs/cli/summary.json")"; fi
# The saved checkpoint is the model that was evaluated last: eval reads it back to the training
# run's final held-out loss, and its perplexity is exp(loss).
if python3 -c '
import json, math, sys
s = json.load(open(sys.argv[1])); e = json.load(open(sys.argv[2]))["validation"]
ok = abs(e["loss"] - s["final_val_loss"]) <= 1e-4 and abs(e["perplexity"] - math.exp(e["loss"])) <= 1e-6 * e["perplexity"]
sys.exit(0 if ok else 1)' "$dir/runs/cli/summary.json" "$dir/eval.json"; then
  pass "eval of the checkpoint agrees with training"; else
  fail "eval of the checkpoint agrees with training: $(cat "$dir/eval.json")"; fi
# Proxy-tuning a model by a tuned model identical to its base steers nothing: the same loss.
proxy="$("$TANDEM" eval "$dir/run.toml" --checkpoint "$ckpt" --proxy-tuned "$ckpt" --proxy-base "$ckpt")"
plain_loss="$(echo "$proxy" | awk '$1 == "validation" {print $2}')"
proxy_loss="$(echo "$proxy" | awk '$1 == "validation+proxy" {print $2}')"
if [ -n "$plain_loss" ] && [ "$plain_loss" = "$proxy_loss" ]; then pass "eval --proxy-tuned";
  else fail "eval --proxy-tuned: '$plain_loss' vs '$proxy_loss'"; fi
if ! "$TANDEM" eval "$dir/run.toml" --checkpoint "$ckpt" --proxy-tuned "$ckpt" > /dev/null 2>&1; then
  pass "eval --proxy-tuned without --proxy-base is an error"; else fail "proxy without base accepted"; fi
out="$("$TANDEM" generate --checkpoint "$ckpt" --prompt "the " --max-tokens 20 --seed 3)"
if [ "${out:0:4}" = "the " ] && [ ${#out} -gt 4 ]; then pass "generate"; else fail "generate: '$out'"; fi
# Pruning the trained model to half its width, with a few recovery steps: the child loads as an
# ordinary model and carries its alignment map; bad shapes and data without a public split are
# refused.
if "$TANDEM" prune "$dir/run.toml" --checkpoint "$ckpt" --to 0.5 --recover-steps 3 --batch 4 \
    --set data.public_fraction=0.2 --out "$dir/pruned.safetensors" > "$dir/prune.out" 2>&1 &&
   grep -q "alignment map" "$dir/prune.out" &&
   "$TANDEM" eval "$dir/run.toml" --checkpoint "$dir/pruned.safetensors" | grep -q "^validation" &&
   grep -q "tandem_alignment" "$dir/pruned.safetensors"; then
  pass "prune"; else fail "prune: $(tail -5 "$dir/prune.out")"; fi
expect_error "prune refuses a ratio above 1" "width ratio" \
  "$TANDEM" prune "$dir/run.toml" --checkpoint "$ckpt" --to 1.5 --set data.public_fraction=0.2 \
  --out "$dir/x.safetensors"
expect_error "prune needs a public split" "public_fraction" \
  "$TANDEM" prune "$dir/run.toml" --checkpoint "$ckpt" --to 0.5 --out "$dir/x.safetensors"
# --eval-at scores the recovery along the way without changing it (the child is the same bytes as
# one recovered without it), --json holds every measured loss, the same as the text summary and as
# `tandem eval` of the written child (at the batch of 16 `tandem eval` uses, so both score the
# same windows), and --no-parent-eval leaves the parent's loss null.
if "$TANDEM" prune "$dir/run.toml" --checkpoint "$ckpt" --to 0.5 --recover-steps 3 --batch 16 \
    --set data.public_fraction=0.2 --eval-at 2,1 --eval-tokens 200 --json "$dir/prune.json" \
    --out "$dir/pruned-at.safetensors" > "$dir/prune-at.out" 2>&1 &&
   "$TANDEM" prune "$dir/run.toml" --checkpoint "$ckpt" --to 0.5 --recover-steps 3 --batch 16 \
    --set data.public_fraction=0.2 --eval-tokens 200 --no-parent-eval --json "$dir/prune-np.json" \
    --out "$dir/pruned-np.safetensors" > "$dir/prune-np.out" 2>&1 &&
   cmp -s "$dir/pruned-at.safetensors" "$dir/pruned-np.safetensors" &&
   "$TANDEM" eval "$dir/run.toml" --checkpoint "$dir/pruned-at.safetensors" --max-tokens 200 \
    --set data.public_fraction=0.2 --json "$dir/pruned-eval.json" > /dev/null 2>&1 &&
   python3 - "$dir" <<'PY'
import json, math, re, sys
d = sys.argv[1]
j = json.load(open(d + "/prune.json"))
np = json.load(open(d + "/prune-np.json"))
ev = json.load(open(d + "/pruned-eval.json"))
text = open(d + "/prune-at.out").read()
assert [r["steps"] for r in j["recovery"]] == [1, 2, 3], j["recovery"]
assert [r["tokens"] for r in j["recovery"]] == [1024, 2048, 3072], j["recovery"]
secs = [r["seconds"] for r in j["recovery"]]
assert 0 < secs[0] <= secs[1] <= secs[2], secs
losses = [r["loss"] for r in j["recovery"]]
assert all(math.isfinite(v) for v in losses + [j["pruned_loss"], j["parent"]["loss"]]), j
for k, v in zip((1, 2, 3), losses):
    printed = float(re.search(rf"after {k} recovery steps ([0-9.]+)", text).group(1))
    assert abs(printed - v) < 1e-4, (k, printed, v)
assert np["parent"]["loss"] is None and np["recovery"][-1]["loss"] == losses[-1], np
assert abs(ev["validation"]["loss"] - losses[-1]) < 1e-4, (ev["validation"], losses[-1])
assert j["child"]["parameters"] < j["parent"]["parameters"] and j["child"]["parent_layers"] == [0, 1]
assert j["method"] == "activation" and j["shape"] == "0.5" and j["seed"] == 2, j
PY
then pass "prune --eval-at --json --no-parent-eval"
else fail "prune --eval-at --json: $(tail -3 "$dir/prune-at.out")"; fi
expect_error "prune refuses --eval-at past the recovery" "eval-at" \
  "$TANDEM" prune "$dir/run.toml" --checkpoint "$ckpt" --to 0.5 --recover-steps 3 \
  --set data.public_fraction=0.2 --eval-at 4 --out "$dir/x.safetensors"
expect_error "prune refuses --eval-at without recovery" "eval-at" \
  "$TANDEM" prune "$dir/run.toml" --checkpoint "$ckpt" --to 0.5 \
  --set data.public_fraction=0.2 --eval-at 1 --out "$dir/x.safetensors"
if "$TANDEM" bench train --preset slm-micro --batch 2 --steps 2 | grep -qE '^tokens_per_s=[0-9.]+$'; then
  pass "bench train"; else fail "bench train"; fi

# "Keys that only clients validate": the coordinator reads and checks them where it reads the
# config, so a bad value stops `tandem coordinator` and `tandem run` at once, before any process
# starts (it used to look like a two-minute hang, the error only in a client's log).
cat > "$dir/fed.toml" <<TOML
name = "fed"
out_dir = "$dir/runs"
[model]
preset = "slm-micro"
[data]
source = "$dir/corpus.txt"
[federation]
clients = 2
transport = "ipc"
rounds = 1
TOML
expect_error "coordinator rejects a bad federation.partition at start" \
  "federation.partition.*bycategory" \
  timeout 20 "$TANDEM" coordinator "$dir/fed.toml" --set federation.partition=bycategory
expect_error "run rejects a bad federation.partition at start" "federation.partition.*bycategory" \
  timeout 20 "$TANDEM" run "$dir/fed.toml" --set federation.partition=bycategory
expect_error "coordinator rejects client.give_up_s out of range at start" "client.give_up_s" \
  timeout 20 "$TANDEM" coordinator "$dir/fed.toml" --set client.give_up_s=0
# An empty endpoint (a script's unset variable) is an error, not the config's endpoint.
expect_error "client rejects an empty --connect" "connect.*empty endpoint" \
  timeout 20 "$TANDEM" client "$dir/fed.toml" --id 0 --connect ""
expect_error "coordinator rejects an empty --bind" "bind.*empty endpoint" \
  timeout 20 "$TANDEM" coordinator "$dir/fed.toml" --bind ""
# "Keys listed nowhere": the error suggests the key that was meant.
expect_error "misspelt key suggests the nearest key" "did you mean train.steps" \
  "$TANDEM" train "$dir/run.toml" --set train.stpes=3
expect_error "key in the wrong section suggests its section" "did you mean federation.rounds" \
  timeout 20 "$TANDEM" run "$dir/fed.toml" --set client.rounds=3

echo "$failures failure(s)"
[ $failures -eq 0 ]

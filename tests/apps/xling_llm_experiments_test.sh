#!/usr/bin/env bash
# scripts/experiments/submodel.sh and emulator.sh end to end on a tiny budget (slm-tiny as the
# "LLM", one step of public training, one round, two languages with one client each, one drop
# ratio; about 60 s alone, two minutes on a busy machine): every
# run and reference is made and scored per language by tandem eval, the sub-model runs
# checkpoint the sub-models of their narrower tiers, the emulator's LoRA rows move far fewer bytes
# up than the full adapters, and both tables have every row with
# numbers in them. A second pass finds every result and runs nothing.
# Usage: xling_llm_experiments_test.sh TANDEM_BINARY SOURCE_DIR
set -uo pipefail
TANDEM="$1"
SOURCE_DIR="$2"
for p in fortunes fortunes-de fortunes-it; do
  if [ ! -f "/var/lib/dpkg/info/$p.list" ]; then
    echo "skip: $p is not installed (scripts/install-deps.sh installs it)"
    exit 0
  fi
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/build/apps"
ln -s "$(readlink -f "$TANDEM")" "$work/build/apps/tandem"
fail() { echo "FAIL: $*"; exit 1; }

cd "$SOURCE_DIR" || fail "no $SOURCE_DIR"
# Compute slots of its own: the tiny clients do not queue behind other runs on the machine.
export TANDEM_SLOTS_DIR="$work/slots"
export OUT="$work/out" SEEDS=1 EVAL_TOKENS=256 DROPS=0.5 \
  PUBLIC_SET="--set model.preset=slm-tiny --set train.steps=1 --set train.eval_every=0 --set train.checkpoint_every=0 --set train.eval_tokens=256 --set train.batch=2" \
  ORACLE_SET="--set model.preset=slm-tiny --set train.steps=1 --set train.eval_tokens=256 --set train.batch=2" \
  DATA_SET='--set data.languages=["fortunes-de","fortunes-it"] --set data.clients_per_language=1' \
  SET="--set model.preset=slm-tiny --set federation.clients=2 --set federation.min_results=2 --set federation.rounds=1 --set client.local_steps=1 --set client.batch=2 --set eval.tokens=256"
for script in submodel emulator; do
  timeout 330 bash "scripts/experiments/$script.sh" "$work/build" > "$work/$script.log" 2>&1 \
    || { cat "$work/$script.log"; fail "$script.sh failed"; }
done
out="$work/out"

# Every score is per language: the clients' two and English.
evals="llm-public llm-oracle"
for m in full half-quarter uniform quarter-static quarter-rolling quarter-importance; do
  evals="$evals sm-$m-s1"
done
evals="$evals off-uniform-d50-s1 off-distilled-d50-s1 fedbiot-d50-s1"
evals="$evals off-uniform-d50-s1-emulator off-distilled-d50-s1-emulator"
evals="$evals off-distilled-lora-d50-s1 fedbiot-lora-d50-s1"
evals="$evals sm-half-quarter-s1-d4 sm-quarter-static-s1-d4"
for e in $evals; do
  python3 - "$out/eval/$e.json" <<'PY' || fail "$e: no per-language test losses"
import json, math, sys
langs = json.load(open(sys.argv[1]))["languages"]
assert set(langs) == {"de", "it", "en"}, langs
assert all(math.isfinite(v["test"]) for v in langs.values())
PY
done
# No run lost a round: every client's task went out and came back (an importance window's map
# once could not be sent).
python3 - "$out" <<'PY' || fail "a run has an aborted round"
import glob, json, sys
runs = glob.glob(sys.argv[1] + "/*-s1/metrics.jsonl")
assert len(runs) == 11, runs
for path in runs:
    for m in map(json.loads, open(path)):
        if m["round"] >= 1:
            assert not m.get("aborted") and m["results"] == 2, (path, m)
PY
[ -f "$out/eval/sm-full-s1-d4.json" ] && fail "a run at full width has no 1/4 sub-model to score"
# The distilled emulator differs from the uniform one; the uniform one is the LLM's blocks.
python3 - "$out" <<'PY' || fail "emulator runs"
import json, sys
out = sys.argv[1]
first = lambda run: json.loads(open(f"{out}/{run}/metrics.jsonl").readlines()[1])
assert "emulator_kd_loss_after" in first("off-distilled-d50-s1")
assert "emulator_kd_loss_after" not in first("off-uniform-d50-s1")
assert "emulator_kd_loss_after" in first("fedbiot-d50-s1")
# LoRA adapters move far fewer bytes up than the full blocks.
assert first("off-distilled-lora-d50-s1")["bytes_up"] < 0.2 * first("off-distilled-d50-s1")["bytes_up"]
PY

rows=$(grep -c '^| .* | .* | [0-9]' "$work/submodel.log")
[ "$rows" -eq 8 ] || { cat "$work/submodel.log"; fail "the sub-model table has $rows rows, not 8"; }
grep -q '| never updated | up / round | down / round |' "$work/submodel.log" \
  || fail "the sub-model table's columns"
rows=$(grep -c '^| .* | [0-9]' "$work/emulator.log")
[ "$rows" -eq 9 ] || { cat "$work/emulator.log"; fail "the emulator table has $rows rows, not 9"; }
grep -q '| model | private | de | it | en | gap closed |' "$work/emulator.log" \
  || fail "the emulator table's columns"

# Everything exists now: a second pass runs nothing.
bash scripts/experiments/emulator.sh "$work/build" > "$work/again.log" 2>&1 \
  || { cat "$work/again.log"; fail "the second pass failed"; }
grep -q '\] \(run\|evaluating\|oracle\|training\)' "$work/again.log" \
  && { cat "$work/again.log"; fail "the second pass redid a step"; }
echo "ok: submodel.sh and emulator.sh ran every step and scored every model per language"

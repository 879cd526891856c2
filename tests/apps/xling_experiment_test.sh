#!/usr/bin/env bash
# scripts/experiments/xling.sh end to end on a tiny budget (slm-micro everywhere, one step, one
# round, two languages with one client each; about 30 s alone, up to 4 minutes on a busy
# machine): every step runs, every final model is scored per
# language, the runs report their per-language held-out losses, and the table has every row.
# Usage: xling_experiment_test.sh TANDEM_BINARY SOURCE_DIR
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
OUT="$work/out" SEEDS=1 EVAL_TOKENS=512 \
  PUBLIC_SET="--set model.preset=slm-micro --set train.steps=1 --set train.eval_every=0 --set train.checkpoint_every=0 --set train.eval_tokens=256 --set train.batch=2" \
  TRAIN_SET="--set model.preset=slm-micro --set train.steps=1 --set train.eval_tokens=256 --set train.batch=2" \
  DATA_SET='--set data.languages=["fortunes-de","fortunes-it"] --set data.clients_per_language=1' \
  SET="--set model.preset=slm-micro --set federation.clients=2 --set federation.min_results=2 --set federation.rounds=1 --set client.local_steps=1 --set client.batch=2" \
  timeout 380 bash scripts/experiments/xling.sh "$work/build" > "$work/log" 2>&1 \
  || { cat "$work/log"; fail "xling.sh failed"; }
out="$work/out"

for e in llm-public slm-public llm-pool llm-oracle slm-fedavg-s1 slm-distill-down-s1 \
         llm-distill-up-s1 llm-fedmkt-s1 llm-fedcollm-s1; do
  python3 - "$out/eval/$e.json" <<'PY' || fail "$e: no per-language losses"
import json, math, sys
langs = json.load(open(sys.argv[1]))["languages"]
assert set(langs) == {"de", "it", "en"}, langs
assert all(math.isfinite(v["validation"]) and math.isfinite(v["test"]) for v in langs.values())
PY
done
for run in fedavg distill-down distill-up fedmkt fedcollm; do
  python3 - "$out/$run-s1" <<'PY' || fail "$run: the run does not report every language"
import json, sys
d = sys.argv[1]
rounds = [json.loads(l) for l in open(d + "/metrics.jsonl")]
for m in rounds:  # round 0 and round 1
    for lang in ("de", "it", "en"):
        assert "val_loss_" + lang in m, (m["round"], lang)
summary = json.load(open(d + "/summary.json"))
for lang in ("de", "it", "en"):
    assert "final_test_loss_" + lang in summary, lang
PY
done
rows=$(grep -c '^| \(LLM\|SLM\) |' "$work/log")
[ "$rows" -eq 10 ] || { cat "$work/log"; fail "the table has $rows rows, not 10"; }
grep -q '| model | method | de | it | en |' "$work/log" || fail "the table's columns"
echo "ok: xling.sh ran every step and scored every model per language"

#!/usr/bin/env bash
# scripts/experiments/xling.sh end to end on a tiny budget (slm-micro everywhere, one step, one
# round, two languages with one client each, one ε; about a minute alone, up to 8 minutes on a
# busy machine): every step runs, every final model is scored per language, the runs report
# their per-language held-out losses, the private runs report the ε `tandem privacy epsilon`
# gives for their σ, and the table has every row.
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
OUT="$work/out" SEEDS=1 EVAL_TOKENS=4096 ROUNDS=1 DP_EPSILONS=4 \
  PUBLIC_SET="--set model.preset=slm-micro --set train.steps=1 --set train.eval_every=0 --set train.checkpoint_every=0 --set train.eval_tokens=256 --set train.batch=2" \
  TRAIN_SET="--set model.preset=slm-micro --set train.steps=1 --set train.eval_tokens=256 --set train.batch=2" \
  DATA_SET='--set data.languages=["fortunes-de","fortunes-it"] --set data.clients_per_language=1' \
  SET="--set model.preset=slm-micro --set federation.clients=2 --set federation.min_results=2 --set federation.rounds=1 --set client.local_steps=1 --set client.batch=2" \
  timeout 680 bash scripts/experiments/xling.sh "$work/build" > "$work/log" 2>&1 \
  || { cat "$work/log"; fail "xling.sh failed"; }
out="$work/out"

for e in llm-public slm-public llm-pool-s1 llm-oracle-s1 slm-fedavg-s1 slm-distill-down-s1 \
         llm-distill-up-s1 llm-fedmkt-s1 llm-fedcollm-s1 llm-distill-up-conf-s1 llm-fedmkt-conf-s1 \
         llm-fedmkt-mince-conf-s1 llm-fedmkt-up-only-s1 llm-fedcollm-conf-s1 llm-distill-up-ensemble-s1 llm-distill-up-weighting-s1 \
         llm-distill-up-english-s1 llm-proxy-tune-s1 llm-distill-up-dp-mean-e4-s1 \
         llm-distill-up-dp-votes-e4-s1; do
  python3 - "$out/eval/$e.json" <<'PY' || fail "$e: no per-language losses"
import json, math, sys
langs = json.load(open(sys.argv[1]))["languages"]
assert set(langs) == {"de", "it", "en"}, langs
assert all(math.isfinite(v["test"]) for v in langs.values())
assert all(math.isfinite(v["validation"]) for v in langs.values() if "validation" in v)
PY
done
# A distill-up run's score comes from its summary (EVAL_TOKENS is a multiple of 4096): the same
# as tandem eval's.
python3 -c 'import json, sys; assert "validation" not in json.load(open(sys.argv[1]))["languages"]["de"]' \
  "$out/eval/llm-distill-up-s1.json" || fail "distill-up's score is not its summary's"
"$TANDEM" eval configs/xling-pool.toml --checkpoint "$out/distill-up-s1/checkpoints/llm.safetensors" \
  --max-tokens 4096 --exact-match 0 --json "$work/llm.json" \
  --set 'data.languages=["fortunes-de","fortunes-it"]' --set data.clients_per_language=1 \
  > "$work/llm.log" 2>&1 || { cat "$work/llm.log"; fail "eval of distill-up's LLM"; }
python3 - "$work/llm.json" "$out/eval/llm-distill-up-s1.json" <<'PY' || fail "summary != tandem eval"
import json, sys
evaluated, summarised = (json.load(open(p))["languages"] for p in sys.argv[1:])
assert evaluated.keys() == summarised.keys(), (evaluated, summarised)
for lang, v in evaluated.items():
    assert abs(v["test"] - summarised[lang]["test"]) <= 1e-5 * v["test"], (lang, v, summarised)
PY
# Proxy-tuning is scored per language; at strength 0 it is the LLM alone, to the last digit.
python3 - "$out/eval/llm-proxy-tune-s1.json" <<'PY' || fail "proxy-tune: no per-language score"
import json, math, sys
langs = json.load(open(sys.argv[1]))["languages"]
assert all(math.isfinite(v["test_proxy_tuned"]) for v in langs.values()), langs
assert any(v["test_proxy_tuned"] != v["test"] for v in langs.values()), langs
PY
"$TANDEM" eval configs/xling-pool.toml --checkpoint "$out/llm-public/checkpoints/model.safetensors" \
  --proxy-tuned "$out/fedavg-s1/checkpoints/model.safetensors" --proxy-alpha 0 \
  --proxy-base "$out/slm-public/checkpoints/model.safetensors" --max-tokens 512 --exact-match 0 \
  --json "$work/alpha0.json" --set 'data.languages=["fortunes-de","fortunes-it"]' \
  --set data.clients_per_language=1 > "$work/alpha0.log" 2>&1 || { cat "$work/alpha0.log"; fail "eval"; }
python3 - "$work/alpha0.json" <<'PY' || fail "proxy-tune at strength 0 is not the LLM's loss"
import json, sys
langs = json.load(open(sys.argv[1]))["languages"]
assert all(abs(v["test_proxy_tuned"] - v["test"]) <= 1e-6 * v["test"] for v in langs.values()), langs
PY
# Each option alone reached its run, and only it.
python3 - "$out" <<'PY' || fail "the one-option runs"
import sys, tomllib
out = sys.argv[1]
expected = {"ensemble": ("ensemble", "confidence"), "weighting": ("confidence_weighting", True),
            "english": ("english_weight", 0.5)}
for run, (key, value) in expected.items():
    config = tomllib.load(open(f"{out}/distill-up-{run}-s1/config.toml", "rb"))["distill-up"]
    assert config.get(key) == value, (run, config)
    for other, (k, _) in expected.items():
        assert other == run or k not in config, (run, config)
PY
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
# The private runs: ε after the run's one round is what the accountant's command line says for the
# σ it was given (q = 1, one step, δ = 1e-5), and the options reached the runs.
sigma=$("$TANDEM" privacy sigma --q 1 --steps 1 --delta 1e-5 --target-epsilon 4 --json)
for upload in mean votes; do
  run="$out/distill-up-dp-$upload-e4-s1"
  expected=$("$TANDEM" privacy epsilon --q 1 --steps 1 --delta 1e-5 --json \
               --sigma "$(python3 -c 'import json, sys; print(repr(json.loads(sys.argv[1])["sigma"]))' "$sigma")")
  python3 - "$run" "$expected" "$upload" <<'PY' || fail "$upload: ε is not the accountant's"
import json, sys
d, expected, upload = sys.argv[1], json.loads(sys.argv[2])["epsilon"], sys.argv[3]
last = [json.loads(l) for l in open(d + "/metrics.jsonl")][-1]
assert abs(last["epsilon"] - expected) <= 1e-9 * expected, (last["epsilon"], expected)
assert abs(expected - 4.0) < 1e-3, expected
import tomllib
config = tomllib.load(open(d + "/config.toml", "rb"))
assert config["distill-up"]["ensemble"] == upload, config["distill-up"]
PY
done
python3 - "$out" <<'PY' || fail "the +conf and up-only runs lack their options or their English term"
import json, sys, tomllib
out = sys.argv[1]
for m in ("distill-up", "fedmkt", "fedcollm"):
    config = tomllib.load(open(f"{out}/{m}-conf-s1/config.toml", "rb"))[m]
    assert config["english_weight"] == 0.5 and config["confidence_weighting"] is True, config
    last = [json.loads(l) for l in open(f"{out}/{m}-conf-s1/metrics.jsonl")][-1]
    assert "llm_english_ce" in last, (m, sorted(last))
config = tomllib.load(open(f"{out}/fedmkt-mince-conf-s1/config.toml", "rb"))["fedmkt"]
assert config["english_weight"] == 0.5 and config["confidence_weighting"] is True, config
assert config.get("selection", "min-ce") == "min-ce" and "ensemble" not in config, config
config = tomllib.load(open(f"{out}/fedmkt-up-only-s1/config.toml", "rb"))["fedmkt"]
assert config["client_weight"] == 0 and "english_weight" not in config, config
PY
rows=$(grep -c '^| \(LLM\|SLM\) |' "$work/log")
[ "$rows" -eq 21 ] || { cat "$work/log"; fail "the table has $rows rows, not 21"; }
grep -q '| model | method | n | de | it | en | private | gap | vs pool |' "$work/log" \
  || fail "the table's columns"
grep -q "^| local only (distill-up's clients) | 1 | [0-9]" "$work/log" || fail "the local-only SLMs"
grep -q "^| fedmkt's clients | 1 | [0-9]" "$work/log" || fail "fedmkt's SLMs"
for shared in fedavg distill-down fedcollm; do
  grep -q "^| $shared (one shared SLM) | 1 | [0-9]" "$work/log" || fail "$shared's shared SLM"
done
# The baselines ran on the seed and show their wall time (tandem train sends no bytes).
for baseline in pool oracle; do
  python3 -c 'import sys, tomllib; assert tomllib.load(open(sys.argv[1], "rb"))["seed"] == 1' \
    "$out/xling-$baseline-s1/config.toml" || fail "the $baseline baseline's seed"
done
grep -q '^| LLM | transfer pool alone .* | — | — | [0-9.]* min |$' "$work/log" || fail "the pool's cost"
# The oracle closes all of its own gap, the starting point none of it.
grep -q '^| LLM | oracle .* | 100.0 % |' "$work/log" || fail "the oracle's gap share"
grep -q '^| LLM | before collaboration .* | 0.0 % |' "$work/log" || fail "the start's gap share"
# A run with an aborted round had less of the shared budget: the table leaves it out, and says so.
python3 - "$out/fedmkt-s1/summary.json" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
summary["aborted_rounds"] = 1
json.dump(summary, open(sys.argv[1], "w"))
PY
python3 scripts/experiments/xling_table.py "$out" --seeds 1 --epsilons 4 > "$work/table2" 2> "$work/table2.err" \
  || fail "xling_table.py with an aborted run"
grep -q "fedmkt-s1 left out: 1 of its rounds were aborted" "$work/table2.err" || fail "no note: $(cat "$work/table2.err")"
! grep -q '^| LLM | fedmkt (min-ce selection) |' "$work/table2" || fail "the aborted run is still in the table"
grep -q '^| LLM | fedmkt (min-ce selection) + weighted KD' "$work/table2" || fail "the other fedmkt rows went too"
echo "ok: xling.sh ran every step and scored every model per language"

#!/usr/bin/env bash
# scripts/experiments/prune.sh end to end on a tiny budget (an slm-micro parent stopped at step 25
# of 30, two seeds, a width and a depth cut, recovery of 1, 2 and 10 steps; about 40 s alone):
# every cut is scored before recovery and at every budget, the from-scratch models have the cuts'
# exact shapes, the reference SLM is scored, the losses `tandem prune --json` reports are those
# `tandem eval` measures on the written child, the table has every row, and a second run redoes
# nothing.
# Usage: prune_experiment_test.sh TANDEM_BINARY SOURCE_DIR
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
# slm-micro: d_model 64, 2 blocks of 2 heads of 32, MLP 256. Width 0.68 keeps 44 channels, both
# heads and 175 neurons; layers=1 keeps one block.
export OUT="$work/out" SEEDS="1 2" STEPS=20 BATCH=2 RECOVER_PERCENT="5 10 50" EVAL_TOKENS=1024 \
  XLING=1 XLING_SET='--set data.languages=["fortunes-de","fortunes-it"] --set data.clients_per_language=1' \
  SET="--set model.preset=slm-micro" \
  PARENT_STOP=25 PUBLIC_SET="--set train.steps=30 --set train.batch=4 --set train.eval_every=0 --set train.checkpoint_every=0 --set train.eval_tokens=256" \
  SHAPES="w50:width:0.68:model.d_model=44,model.n_head=2,model.d_head=32,model.d_mlp=175
d50:depth:layers=1:model.n_layer=1"
timeout 300 bash scripts/experiments/prune.sh "$work/build" > "$work/log" 2>&1 \
  || { cat "$work/log"; fail "prune.sh failed"; }
out="$work/out"

python3 - "$out" <<'PY' || { cat "$work/log"; fail "the cuts' results"; }
import json, math, os, sys
out = sys.argv[1]
cuts = [f"w50-{m}-s{s}" for m in ("activation", "taylor", "magnitude", "random") for s in (1, 2)]
cuts += [f"d50-activation-s{s}" for s in (1, 2)]
for cut in cuts:
    j = json.load(open(f"{out}/cuts/{cut}.json"))
    # 5%, 10% and 50% of 20 steps, the last one the recovery's end.
    assert [r["steps"] for r in j["recovery"]] == [1, 2, 10], (cut, j["recovery"])
    losses = [j["pruned_loss"]] + [r["loss"] for r in j["recovery"]]
    assert all(math.isfinite(v) for v in losses), (cut, losses)
    assert j["parent"]["loss"] is None  # measured once, by tandem eval
    assert j["batch"] == 2 and j["eval_tokens"] == 1024 and j["seed"] == int(cut[-1]), (cut, j)
    assert os.path.exists(f"{out}/cuts/{cut}.safetensors"), cut
    # Ten steps of distillation from the parent lower the held-out loss of the cut.
    assert losses[-1] < losses[0], (cut, losses)
w = json.load(open(f"{out}/cuts/w50-activation-s1.json"))
assert w["child"]["model"].startswith("d_model=44 n_layer=2 n_head=2"), w["child"]
d = json.load(open(f"{out}/cuts/d50-activation-s1.json"))
assert len(d["child"]["parent_layers"]) == 1, d["child"]
for shape, cut in (("w50", w), ("d50", d)):
    for s in (1, 2):
        summary = json.load(open(f"{out}/scratch-{shape}-s{s}/summary.json"))
        assert summary["model"] == cut["child"]["model"], (shape, summary["model"])
        assert summary["steps"] == 20, summary
        ev = json.load(open(f"{out}/eval/scratch-{shape}-s{s}.json"))
        assert math.isfinite(ev["validation"]["loss"]), ev
# The parent stopped at step 25 of its 30 (PARENT_STOP).
assert json.load(open(f"{out}/llm-public/summary.json"))["steps"] == 25
# Different seeds: different from-scratch models.
a, b = (json.load(open(f"{out}/eval/scratch-w50-s{s}.json"))["validation"]["loss"] for s in (1, 2))
assert a != b, a
for name in ("parent", "w50-activation-s1", "d50-activation-s1", "scratch-w50-s1"):
    langs = json.load(open(f"{out}/eval/xling-{name}.json"))["languages"]
    assert set(langs) == {"de", "it", "en"}, (name, langs)
PY

# The loss `tandem prune` reports after the recovery is the one `tandem eval` measures on the child
# it wrote (the same 1024 held-out tokens).
"$TANDEM" eval configs/prune-scratch.toml --checkpoint "$out/cuts/w50-taylor-s2.safetensors" \
  --max-tokens 1024 --json "$work/check.json" > /dev/null 2>&1 || fail "tandem eval of a cut"
python3 - "$out/cuts/w50-taylor-s2.json" "$work/check.json" <<'PY' || fail "prune's loss vs eval's"
import json, sys
cut, ev = (json.load(open(p)) for p in sys.argv[1:])
assert abs(cut["recovery"][-1]["loss"] - ev["validation"]["loss"]) < 1e-4, (cut["recovery"], ev)
PY

# shellcheck disable=SC2016  # the backquotes are the table's, not a command
rows=$(grep -c '^| \(width\|depth\) `[^`]*` | ' "$out/table.md")
[ "$rows" -eq 5 ] || { cat "$out/table.md"; fail "the table has $rows rows, not 5"; }
grep -q '| before recovery | +5% distill | +10% distill | +50% distill | from scratch' \
  "$out/table.md" || fail "the table's columns"
# shellcheck disable=SC2016
grep -q '^| width `0.68` | .* | taylor | [0-9.]* ± [0-9.]* |' "$out/table.md" ||
  { cat "$out/table.md"; fail "no mean ± sd over the two seeds"; }
grep -q '^| parent |' "$out/table.md" || fail "no cross-lingual table"
grep -q '^Reference: d_model=64 n_layer=2 .* from scratch at the parent.s own budget' \
  "$out/table.md" || { cat "$out/table.md"; fail "no reference SLM"; }

# Everything exists: a second run only prints the table.
timeout 60 bash scripts/experiments/prune.sh "$work/build" > "$work/log2" 2>&1 ||
  { cat "$work/log2"; fail "the second run failed"; }
if grep -qE '^\[ *[0-9]+s\] (from scratch|cut|evaluating|training)' "$work/log2"; then
  cat "$work/log2"; fail "the second run redid a step"
fi
echo "ok: prune.sh cut, recovered and scored every model, and trained every shape from scratch"

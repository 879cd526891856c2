#!/usr/bin/env bash
# The pruning experiment (docs/results.md "Pruning: the public LLM cut to SLM size"): the public
# LLM (configs/llm-public.toml) is cut to half and to a quarter of its parameters, in width by
# each importance score and in depth by Block Influence (ShortGPT), and recovered by distillation
# from it (Minitron) with 1%, 3% and 10% of the token budget that trains the same shape from
# scratch. The from-scratch model of exactly the child's shape is trained too
# (configs/prune-scratch.toml). Every held-out loss is on the public LLM's validation split: the
# pruned ones from `tandem prune --json` (before recovery and at each budget), the others from
# `tandem eval --json`. Steps whose result exists are skipped, so an interrupted run picks up where
# it stopped; delete the output directory to start over. The from-scratch runs come first: they
# need only the shapes, not the parent.
#
# Usage: scripts/experiments/prune.sh [BUILD_DIR]
#   SEEDS="1 2 3"        seeds: from-scratch initialisation and batches; calibration windows,
#                        random scores and recovery windows of the cuts (the data split is fixed)
#   OUT=runs/prune       where everything goes
#   PARENT=FILE          the parent checkpoint; default: train configs/llm-public.toml into OUT
#   PARENT_STOP=0        when training it: stop after this many of its 600 steps (its schedule
#                        unchanged: train.stop_at_step); 0 trains it to the end
#   SLM=FILE             a reference from scratch at the parent's own budget: slm-tiny trained as
#                        the parent was; default: train it into OUT; "none" skips it
#   STEPS=100            the from-scratch budget in steps of BATCH sequences of the parent's
#   BATCH=4              context; recovery budgets are RECOVER_PERCENT of it, at the same batch
#   RECOVER_PERCENT="1 3 10"
#   RECOVER_LR=1e-3      the recovery's learning rate (tandem prune --lr); the table's runs used
#                        1e-3, before the tool's default became 3e-4
#   EVAL_TOKENS=8192     held-out tokens every loss is measured on (the same prefix for all)
#   METHODS="activation taylor magnitude random"   the width cuts' importance scores
#   SHAPES="..."         the cuts, one word each: NAME:KIND:TO:SCRATCH, where KIND is width or
#                        depth (depth cuts use activation's Block Influence), TO is
#                        `tandem prune --to`, and SCRATCH the comma-separated model.KEY=VALUE
#                        settings of the same shape for `tandem train` (the table checks that
#                        both shapes agree). The default is for llm-small.
#   XLING=0              1: also score the 10% children and the from-scratch models of the first
#                        seed on the cross-lingual setup's held-out sets (configs/xling-pool.toml)
#   XLING_SET="..."      extra `--set key=value` words for those evaluations alone
#   SET="..."            extra `--set key=value` words for every prune, train and eval
#   PUBLIC_SET="..."     extra words for the parent's training (without PARENT)
# The tests run it on a tiny budget through these.
set -euo pipefail
set -f  # the *SET words hold TOML lists, not file patterns
BUILD_DIR="${1:-build}"
SEEDS="${SEEDS:-1 2 3}"
OUT="${OUT:-runs/prune}"
PARENT="${PARENT:-}"
SLM="${SLM:-}"
PARENT_STOP="${PARENT_STOP:-0}"
STEPS="${STEPS:-100}"
BATCH="${BATCH:-4}"
RECOVER_PERCENT="${RECOVER_PERCENT:-1 3 10}"
RECOVER_LR="${RECOVER_LR:-1e-3}"
EVAL_TOKENS="${EVAL_TOKENS:-8192}"
METHODS="${METHODS:-activation taylor magnitude random}"
# llm-small (10.80M parameters): width 0.68 keeps 50.2%, width 0.5 25.4%, 3 blocks 50.7% and 2
# blocks 34.2% (one block would keep 17.8%; two is the nearer to a quarter that still has depth).
SHAPES="${SHAPES:-w50:width:0.68:model.d_model=262,model.n_head=5,model.d_head=64,model.d_mlp=1045
w25:width:0.5:model.d_model=192,model.n_head=3,model.d_head=64,model.d_mlp=768
d50:depth:layers=3:model.n_layer=3
d75:depth:layers=2:model.n_layer=2}"
XLING="${XLING:-0}"
XLING_SET="${XLING_SET:-}"
SET="${SET:-}"
PUBLIC_SET="${PUBLIC_SET:-}"
TANDEM="$BUILD_DIR/apps/tandem"
CONFIG=configs/prune-scratch.toml
HERE="$(cd "$(dirname "$0")" && pwd)"

[ -x "$TANDEM" ] || { echo "no $TANDEM: build first (make build)" >&2; exit 1; }
mkdir -p "$OUT/eval" "$OUT/cuts"
started=$(date +%s)
step() { printf '[%5ds] %s\n' $(( $(date +%s) - started )) "$*"; }
# Runs a command with its output in LOG; on failure shows the end of it and stops.
logged() {
  local log="$1"; shift
  "$@" > "$log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$log" >&2; exit 1; }
}
table() {
  # shellcheck disable=SC2086
  /usr/bin/python3 "$HERE/prune_table.py" "$OUT" --seeds $SEEDS --shapes $SHAPES \
    --methods $METHODS --recover-percent $RECOVER_PERCENT > "$OUT/table.md.tmp" &&
    mv "$OUT/table.md.tmp" "$OUT/table.md"
}
# Recovery steps for a percentage of the from-scratch budget (at least one).
recover_steps() { echo $(( (STEPS * $1 + 50) / 100 > 0 ? (STEPS * $1 + 50) / 100 : 1 )); }
max_percent=0
for p in $RECOVER_PERCENT; do [ "$p" -gt "$max_percent" ] && max_percent=$p; done
eval_at=""
for p in $RECOVER_PERCENT; do eval_at="$eval_at${eval_at:+,}$(recover_steps "$p")"; done
# The budget, for the table (echo unquoted: one comma between percentages however spaced).
# shellcheck disable=SC2086
printf '{"steps": %d, "batch": %d, "eval_tokens": %d, "recover_percent": [%s]}\n' \
  "$STEPS" "$BATCH" "$EVAL_TOKENS" "$(echo $RECOVER_PERCENT | tr ' ' ',')" > "$OUT/budget.json"

# Scores a checkpoint on the public LLM's held-out split (tandem eval --json).
evaluate() {  # evaluate NAME CHECKPOINT
  local name="$1" checkpoint="$2"
  [ -f "$OUT/eval/$name.json" ] && return
  step "evaluating $name"
  # shellcheck disable=SC2086
  logged "$OUT/eval/$name.log" "$TANDEM" eval "$CONFIG" --checkpoint "$checkpoint" \
    --max-tokens "$EVAL_TOKENS" --exact-match 0 --json "$OUT/eval/$name.json.tmp" $SET
  mv "$OUT/eval/$name.json.tmp" "$OUT/eval/$name.json"
}
# The same on the cross-lingual setup's held-out sets, one per language.
evaluate_xling() {  # evaluate_xling NAME CHECKPOINT
  local name="$1" checkpoint="$2"
  [ "$XLING" = 1 ] || return 0
  [ -f "$OUT/eval/xling-$name.json" ] && return
  step "evaluating $name per language"
  # shellcheck disable=SC2086
  logged "$OUT/eval/xling-$name.log" "$TANDEM" eval configs/xling-pool.toml \
    --checkpoint "$checkpoint" --max-tokens "$EVAL_TOKENS" --exact-match 0 \
    --json "$OUT/eval/xling-$name.json.tmp" $XLING_SET
  mv "$OUT/eval/xling-$name.json.tmp" "$OUT/eval/xling-$name.json"
}

# ---- From scratch: each cut's exact shape, trained at the budget (needs no parent). ----
first_seed="${SEEDS%% *}"
for seed in $SEEDS; do
  for shape in $SHAPES; do
    IFS=: read -r name _ _ scratch <<< "$shape"
    run="scratch-$name-s$seed"
    if [ ! -f "$OUT/$run/summary.json" ]; then
      step "from scratch: $name, seed $seed ($STEPS steps of $BATCH)"
      sets=()
      for kv in ${scratch//,/ }; do sets+=(--set "$kv"); done
      # shellcheck disable=SC2086
      logged "$OUT/$run.log" "$TANDEM" train "$CONFIG" --overwrite --set out_dir="$OUT" \
        --set name="$run" --set seed="$seed" --set train.steps="$STEPS" \
        --set train.batch="$BATCH" --set train.warmup_steps=$(( STEPS / 10 )) "${sets[@]}" $SET
    fi
    evaluate "$run" "$OUT/$run/checkpoints/model.safetensors"
    [ "$seed" = "$first_seed" ] && evaluate_xling "$run" "$OUT/$run/checkpoints/model.safetensors"
    rm -f "$OUT/$run/checkpoints/train_state.safetensors"  # the optimizer's state: not needed
  done
  table
done

# ---- The parent. ----
if [ -z "$PARENT" ]; then
  PARENT="$OUT/llm-public/checkpoints/model.safetensors"
  if [ ! -f "$OUT/llm-public/summary.json" ]; then
    step "training the parent (configs/llm-public.toml)"
    # shellcheck disable=SC2086
    logged "$OUT/llm-public.log" "$TANDEM" train configs/llm-public.toml --overwrite \
      --set out_dir="$OUT" --set train.stop_at_step="$PARENT_STOP" $PUBLIC_SET $SET
  fi
fi
[ -f "$PARENT" ] || { echo "no parent checkpoint $PARENT" >&2; exit 1; }
evaluate parent "$PARENT"
evaluate_xling parent "$PARENT"
if [ -z "$SLM" ]; then
  SLM="$OUT/slm-public/checkpoints/model.safetensors"
  if [ ! -f "$OUT/slm-public/summary.json" ]; then
    step "training the reference SLM (configs/llm-public.toml as slm-tiny)"
    # shellcheck disable=SC2086
    logged "$OUT/slm-public.log" "$TANDEM" train configs/llm-public.toml --overwrite \
      --set out_dir="$OUT" --set name=slm-public --set model.preset=slm-tiny $PUBLIC_SET $SET
  fi
fi
if [ "$SLM" != none ]; then
  [ -f "$SLM" ] || { echo "no reference SLM checkpoint $SLM" >&2; exit 1; }
  evaluate slm-public "$SLM"
fi

# ---- The cuts: prune, score, recover by distillation from the parent, score at each budget. ----
for seed in $SEEDS; do
  for shape in $SHAPES; do
    IFS=: read -r name kind to _ <<< "$shape"
    methods="$METHODS"
    [ "$kind" = depth ] && methods=activation  # Block Influence: the block score of the literature
    for method in $methods; do
      cut="$name-$method-s$seed"
      if [ ! -f "$OUT/cuts/$cut.json" ]; then
        step "cut $cut (--to $to, recovery $(recover_steps "$max_percent") steps of $BATCH)"
        # shellcheck disable=SC2086
        logged "$OUT/cuts/$cut.log" "$TANDEM" prune "$CONFIG" --checkpoint "$PARENT" --to "$to" \
          --method "$method" --seed "$seed" --batch "$BATCH" --eval-tokens "$EVAL_TOKENS" \
          --no-parent-eval --recover-steps "$(recover_steps "$max_percent")" --eval-at "$eval_at" \
          --lr "$RECOVER_LR" \
          --out "$OUT/cuts/$cut.safetensors" --json "$OUT/cuts/$cut.json.tmp" $SET
        mv "$OUT/cuts/$cut.json.tmp" "$OUT/cuts/$cut.json"
      fi
      if [ "$seed" = "$first_seed" ]; then
        evaluate_xling "$cut" "$OUT/cuts/$cut.safetensors"
      fi
    done
  done
  table
done
step "done"
cat "$OUT/table.md"

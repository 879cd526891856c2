# Shared by scripts/experiments/submodel.sh and emulator.sh (sourced, not run): the variables,
# logging, `tandem eval --json` scoring and the reference rows of the LLM experiments in the
# cross-lingual setup. Both scripts write into one OUT, so the references are made once.
#   LLM=F               the public LLM (llm-small on the English public categories); default:
#                       OUT/llm-public/checkpoints/model.safetensors, trained if absent
#                       (tandem train configs/llm-public.toml)
#   SEEDS="1 2"         seeds of the federated runs
#   OUT=runs/xling-llm  where everything goes
#   EVAL_TOKENS=1024    tokens of each held-out set (per language, validation and test) per score
#   DATA_SET="..."      extra `--set key=value` words for the setup's data, given to every run,
#                       reference and evaluation alike
#   SET="..."           extra words for every federated run
#   ORACLE_SET="..."    the oracle's budget (tandem train configs/xling-oracle.toml); default: as
#                       many sequences as one federated run's clients train on (3 rounds x 8
#                       clients x 3 steps x 4 = 288 = 36 steps x 8), at the clients' lr
#   PUBLIC_SET="..."    extra words for the public LLM, when it is trained here
set -euo pipefail
set -f  # the *_SET words hold TOML lists, not file patterns
BUILD_DIR="${1:-build}"
SEEDS="${SEEDS:-1 2}"
OUT="${OUT:-runs/xling-llm}"
EVAL_TOKENS="${EVAL_TOKENS:-1024}"
DATA_SET="${DATA_SET:-}"
SET="${SET:-}"
ORACLE_SET="${ORACLE_SET:---set train.steps=36 --set train.batch=8 --set train.lr=5e-4 --set train.warmup_steps=5 --set train.eval_tokens=1024}"
PUBLIC_SET="${PUBLIC_SET:-}"
TANDEM="$BUILD_DIR/apps/tandem"
LLM="${LLM:-$OUT/llm-public/checkpoints/model.safetensors}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

[ -x "$TANDEM" ] || { echo "no $TANDEM: build first (make build)" >&2; exit 1; }
mkdir -p "$OUT/eval"
started=$(date +%s)
step() { printf '[%4ds] %s\n' $(( $(date +%s) - started )) "$*"; }
# Runs a command with its output in LOG; on failure shows the end of it and stops.
logged() {
  local log="$1"; shift
  "$@" > "$log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$log" >&2; exit 1; }
}

# Every score: a checkpoint on the setup's held-out sets, per language (tandem eval --json).
evaluate() {  # evaluate NAME CHECKPOINT
  local name="$1" checkpoint="$2"
  [ -f "$OUT/eval/$name.json" ] && return
  step "evaluating $name"
  # shellcheck disable=SC2086  # the *_SET variables are lists of words
  logged "$OUT/eval/$name.log" "$TANDEM" eval configs/xling-pool.toml --checkpoint "$checkpoint" \
    --max-tokens "$EVAL_TOKENS" --exact-match 0 --json "$OUT/eval/$name.json.tmp" $DATA_SET
  mv "$OUT/eval/$name.json.tmp" "$OUT/eval/$name.json"
}

# A federated run from the public LLM; skipped when its summary exists.
run() {  # run NAME CONFIG [--set ...]
  local name="$1" config="$2"; shift 2
  [ -f "$OUT/$name/summary.json" ] && return
  step "run $name"
  rm -rf "${OUT:?}/$name"
  # shellcheck disable=SC2086
  logged "$OUT/$name.log" "$TANDEM" run "$config" --overwrite --set name="$name" \
    --set out_dir="$OUT" --set data.seed=1 --set model.init_checkpoint="$LLM" "$@" $DATA_SET $SET
}

# ---- The reference rows: the LLM before collaboration, and the oracle (the public LLM
# fine-tuned on the pooled private data of every client, which no coordinator may see). ----
if [ ! -f "$LLM" ]; then
  step "training the public LLM (configs/llm-public.toml)"
  # shellcheck disable=SC2086
  logged "$OUT/llm-public.log" "$TANDEM" train configs/llm-public.toml --overwrite \
    --set out_dir="$OUT" $PUBLIC_SET
fi
evaluate llm-public "$LLM"
if [ ! -f "$OUT/xling-oracle/summary.json" ]; then
  step "oracle xling-oracle (configs/xling-oracle.toml $ORACLE_SET)"
  # shellcheck disable=SC2086
  logged "$OUT/xling-oracle.log" "$TANDEM" train configs/xling-oracle.toml --overwrite \
    --set out_dir="$OUT" --set model.init_checkpoint="$LLM" $ORACLE_SET $DATA_SET
fi
evaluate llm-oracle "$OUT/xling-oracle/checkpoints/model.safetensors"

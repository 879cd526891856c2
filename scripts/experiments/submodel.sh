#!/usr/bin/env bash
# Sub-model federated training of the cloud LLM in the cross-lingual setup (docs/results.md
# "Sub-model federated training"): configs/xling-submodel.toml, eight clients over four
# languages training llm-small through sub-models cut from it (algorithm submodel), on several
# seeds, for four client mixes and three windows:
#   full          every client at full width (FedAvg of the LLM)
#   half-quarter  half full, half 1/4 (each language one of each), rolling windows
#   uniform       widths 1, 1/4, 1/2, 1/8 (each language one of {1, 1/2}, one of {1/4, 1/8}),
#                 rolling
#   quarter-{static,rolling,importance}   every client at 1/4: the global model wider than all
# Every final LLM and every tier's final sub-model (checkpoints/submodel_d<d>.safetensors) is
# scored by `tandem eval --json` per language; with the references (the LLM before
# collaboration, the oracle) from xling_llm_common.sh. Steps whose result exists are skipped,
# so an interrupted run picks up where it stopped; delete OUT to start over.
#
# Usage: scripts/experiments/submodel.sh [BUILD_DIR]   (variables: xling_llm_common.sh, and
#   MIXES="full quarter-rolling"   a subset of the mixes above, run in that order)
source "$(dirname "$0")/xling_llm_common.sh"

# name, then its --set words (every one reads configs/xling-submodel.toml).
mixes=(
  "full|--set submodel.width_divisors=[1]"
  "half-quarter|--set submodel.width_divisors=[1,4] --set submodel.window=rolling"
  "uniform|--set submodel.width_divisors=[1,4,2,8] --set submodel.window=rolling"
  "quarter-static|--set submodel.width_divisors=[4] --set submodel.window=static"
  "quarter-rolling|--set submodel.width_divisors=[4] --set submodel.window=rolling"
  "quarter-importance|--set submodel.width_divisors=[4] --set submodel.window=importance"
)
# MIXES="full quarter-rolling ..." runs those alone, in that order (default: all, as listed).
if [ -n "${MIXES:-}" ]; then
  chosen=()
  for want in $MIXES; do
    found=""
    for mix in "${mixes[@]}"; do [ "${mix%%|*}" = "$want" ] && found="$mix"; done
    [ -n "$found" ] || { echo "MIXES: no mix '$want'" >&2; exit 1; }
    chosen+=("$found")
  done
  mixes=("${chosen[@]}")
fi
for seed in $SEEDS; do
  for mix in "${mixes[@]}"; do
    name="sm-${mix%%|*}-s$seed"
    # shellcheck disable=SC2086
    run "$name" configs/xling-submodel.toml --set seed="$seed" ${mix#*|}
    evaluate "$name" "$OUT/$name/checkpoints/model.safetensors"
    for d in 2 4; do
      sub="$OUT/$name/checkpoints/submodel_d$d.safetensors"
      [ -f "$sub" ] && evaluate "$name-d$d" "$sub"
    done
  done
done
step "done"
# shellcheck disable=SC2086
/usr/bin/python3 "$HERE/xling_llm_table.py" submodel "$OUT" --seeds $SEEDS \
  | tee "$OUT/submodel-table.md"

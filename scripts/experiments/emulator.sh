#!/usr/bin/env bash
# Emulator and plug-in in the cross-lingual setup (docs/results.md "Emulator and plug-in"): the
# cloud LLM (llm-small) fine-tuned through an emulator by eight clients over four languages
# (configs/xling-offsite.toml, configs/xling-fedbiot.toml), on several seeds, at emulator drop
# ratios 0.5 and 0.25 (of the four middle blocks, 2 and 3 kept: emulator_keep = 1 - drop):
#   uniform     offsite, the plain uniform-drop emulator (server_steps = 0)
#   distilled   offsite, the emulator distilled to the LLM before round 1
#   fedbiot     the emulator re-aligned before every round, proximal clients
# and, at the drop ratios of LORA_DROPS, the same two with LoRA adapters (adapters = "lora",
# rank LORA_RANK on every linear of the adapter blocks; only the factors move):
#   off-distilled-lora, fedbiot-lora
# Every final LLM (adapters plugged in) and the emulators with their adapters
# (checkpoints/emulator.safetensors) are scored by `tandem eval --json` per language; with the
# references (the LLM before collaboration, the oracle) from xling_llm_common.sh. Steps whose
# result exists are skipped; delete OUT to start over.
#
# Usage: scripts/experiments/emulator.sh [BUILD_DIR]   (variables: xling_llm_common.sh, and
#   DROPS="0.5 0.25"    the emulator drop ratios of the full-adapter rows
#   METHODS="off-uniform off-distilled fedbiot"   which full-adapter rows to run ("" = none)
#   LORA_DROPS="0.5"    the drop ratios of the LoRA rows ("" = none)
#   LORA_RANK=8         their rank)
source "$(dirname "$0")/xling_llm_common.sh"
DROPS="${DROPS:-0.5 0.25}"
METHODS="${METHODS-off-uniform off-distilled fedbiot}"
LORA_DROPS="${LORA_DROPS-0.5}"
LORA_RANK="${LORA_RANK:-8}"
has() { [[ " $METHODS " == *" $1 "* ]]; }

for seed in $SEEDS; do
  for drop in $DROPS; do
    keep=$(python3 -c "print(1 - $drop)")
    tag="d$(python3 -c "print(round(100 * $drop))")"
    if has off-uniform; then
      run "off-uniform-$tag-s$seed" configs/xling-offsite.toml --set seed="$seed" \
        --set offsite.emulator_keep="$keep" --set offsite.server_steps=0
    fi
    if has off-distilled; then
      run "off-distilled-$tag-s$seed" configs/xling-offsite.toml --set seed="$seed" \
        --set offsite.emulator_keep="$keep"
    fi
    if has fedbiot; then
      run "fedbiot-$tag-s$seed" configs/xling-fedbiot.toml --set seed="$seed" \
        --set fedbiot.emulator_keep="$keep"
    fi
    for method in $METHODS; do
      evaluate "$method-$tag-s$seed" "$OUT/$method-$tag-s$seed/checkpoints/model.safetensors"
    done
    for method in off-uniform off-distilled; do  # the emulators with their adapters
      has "$method" || continue
      name="$method-$tag-s$seed-emulator"
      evaluate "$name" "$OUT/${name%-emulator}/checkpoints/emulator.safetensors"
    done
  done
  # LoRA adapters: the LLM a run writes has the factors merged in, so it is scored as it is.
  for drop in $LORA_DROPS; do
    keep=$(python3 -c "print(1 - $drop)")
    tag="d$(python3 -c "print(round(100 * $drop))")"
    run "off-distilled-lora-$tag-s$seed" configs/xling-offsite.toml --set seed="$seed" \
      --set offsite.emulator_keep="$keep" --set offsite.adapters=lora \
      --set offsite.lora.rank="$LORA_RANK"
    run "fedbiot-lora-$tag-s$seed" configs/xling-fedbiot.toml --set seed="$seed" \
      --set fedbiot.emulator_keep="$keep" --set fedbiot.adapters=lora \
      --set fedbiot.lora.rank="$LORA_RANK"
    for method in off-distilled-lora fedbiot-lora; do
      evaluate "$method-$tag-s$seed" "$OUT/$method-$tag-s$seed/checkpoints/model.safetensors"
    done
  done
done
step "done"
# shellcheck disable=SC2086
/usr/bin/python3 "$HERE/xling_llm_table.py" emulator "$OUT" --seeds $SEEDS \
  --drops $(printf '%s\n' $DROPS $LORA_DROPS | sort -u -r) --lora-rank "$LORA_RANK" \
  | tee "$OUT/emulator-table.md"

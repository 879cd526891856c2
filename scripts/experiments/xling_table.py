#!/usr/bin/env python3
"""The cross-lingual experiment's table (scripts/experiments/xling.sh): test loss per language of
every final model, mean +- sd over seeds, from the `tandem eval --json` files in OUT/eval (and,
for fedcollm's SLM, whose adapters only its run evaluates, from its summary.json)."""
import argparse
import json
import math
import os
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def languages_of(evaluation):
    return {lang: v.get("test") for lang, v in (evaluation or {}).get("languages", {}).items()}


def cell(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--seeds", nargs="+", default=["1"])
    ap.add_argument("--epsilons", nargs="*", default=["1", "4", "8"],
                    help="the ε of the private distill-up runs")
    args = ap.parse_args()
    ev = os.path.join(args.out, "eval")

    rows = []  # (model, method, {lang: [values]})
    def add(model, method, names):
        per = {}
        for name in names:
            for lang, v in languages_of(load(os.path.join(ev, name + ".json"))).items():
                per.setdefault(lang, []).append(v)
        rows.append((model, method, per))

    add("LLM", "before collaboration", ["llm-public"])
    add("LLM", "transfer pool alone (baseline)", ["llm-pool"])
    for m in ("distill-up", "fedmkt", "fedcollm"):
        add("LLM", m, [f"llm-{m}-s{s}" for s in args.seeds])
    # The soundness options (docs/distillation.md "Sound upward distillation").
    add("LLM", "distill-up + confidence ensemble, weighted KD, English kept",
        [f"llm-distill-up-conf-s{s}" for s in args.seeds])
    add("LLM", "fedmkt + confidence ensemble (for min-ce), weighted KD, English kept",
        [f"llm-fedmkt-conf-s{s}" for s in args.seeds])
    add("LLM", "fedcollm + weighted KD, English kept",
        [f"llm-fedcollm-conf-s{s}" for s in args.seeds])
    for eps in args.epsilons:
        for upload, what in (("mean", "probabilities"), ("votes", "votes (PATE)")):
            add("LLM", f"distill-up, DP ε = {eps}, {what}",
                [f"llm-distill-up-dp-{upload}-e{eps}-s{s}" for s in args.seeds])
    add("LLM", "oracle (pooled private data)", ["llm-oracle"])
    add("SLM", "before collaboration", ["slm-public"])
    for m in ("fedavg", "distill-down"):
        add("SLM", m, [f"slm-{m}-s{s}" for s in args.seeds])
    per = {}
    for s in args.seeds:
        summary = load(os.path.join(args.out, f"fedcollm-s{s}", "summary.json")) or {}
        for k, v in summary.items():
            if k.startswith("final_test_loss_") and "." not in k:
                per.setdefault(k[len("final_test_loss_"):], []).append(v)
    rows.append(("SLM", "fedcollm (its run's evaluation)", per))

    langs = sorted({lang for _, _, per in rows for lang in per})
    if not langs:
        print(f"no evaluations in {ev}", file=sys.stderr)
        return 1
    # The public corpus last: the column that shows forgetting.
    if "en" in langs:
        langs = [l for l in langs if l != "en"] + ["en"]
    print(f"Test loss per language (nats/token; seeds {' '.join(args.seeds)}; 'en' is the public "
          "corpus: lower is better everywhere)\n")
    print("| model | method | " + " | ".join(langs) + " |")
    print("|---|---|" + "---|" * len(langs))
    for model, method, per in rows:
        print(f"| {model} | {method} | " + " | ".join(cell(per.get(l, [])) for l in langs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

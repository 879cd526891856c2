#!/usr/bin/env python3
"""The pruning experiment's table (scripts/experiments/prune.sh): held-out loss of every cut before
recovery and after recovery by distillation at each share of the from-scratch budget, and of the
same shape trained from scratch, mean +- sd over seeds; wall seconds of the longest recovery and of
the from-scratch run. Reads OUT/cuts/*.json (`tandem prune --json`), OUT/eval/*.json
(`tandem eval --json`) and OUT/scratch-*/summary.json. Exits 1 when a cut's shape differs from the
shape trained from scratch beside it."""
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


def finite(values):
    return [v for v in values if v is not None and not math.isnan(v)]


def mean(values):
    values = finite(values)
    return statistics.mean(values) if values else None


def cell(values, digits=4):
    values = finite(values)
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def seconds(values):
    values = finite(values)
    return f"{statistics.mean(values):.0f}" if values else "—"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--seeds", nargs="+", default=["1"])
    ap.add_argument("--shapes", nargs="+", required=True, help="NAME:KIND:TO:SCRATCH words")
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--recover-percent", nargs="+", type=int, required=True)
    args = ap.parse_args()
    out = args.out
    budget = load(os.path.join(out, "budget.json")) or {}
    parent_eval = load(os.path.join(out, "eval", "parent.json"))
    parent_loss = (parent_eval or {}).get("validation", {}).get("loss")

    lines = []
    mismatch = []
    xling_rows = []
    parent_params = None
    for shape in args.shapes:
        name, kind, to, _ = shape.split(":", 3)
        scratch = [load(os.path.join(out, f"scratch-{name}-s{s}", "summary.json")) for s in args.seeds]
        scratch_loss = [((load(os.path.join(out, "eval", f"scratch-{name}-s{s}.json")) or {})
                         .get("validation", {}).get("loss")) for s in args.seeds]
        scratch_seconds = [d.get("seconds") for d in scratch if d]
        scratch_model = next((d["model"] for d in scratch if d), None)
        scratch_params = next((d["parameters"] for d in scratch if d), None)
        methods = args.methods if kind == "width" else ["activation"]
        for method in methods:
            cuts = [load(os.path.join(out, "cuts", f"{name}-{method}-s{s}.json")) for s in args.seeds]
            cuts = [c for c in cuts if c]
            before = [c.get("pruned_loss") for c in cuts]
            after = {}
            rec_seconds = []
            for c in cuts:
                parent_params = c["parent"]["parameters"]
                if scratch_model and c["child"]["model"] != scratch_model:
                    mismatch.append(f"{name}: cut {c['child']['model']} but from scratch {scratch_model}")
                rec = c.get("recovery", [])
                steps = budget.get("steps")
                for p in args.recover_percent:
                    want = max(1, (steps * p + 50) // 100) if steps else None
                    for r in rec:
                        if r["steps"] == want:
                            after.setdefault(p, []).append(r["loss"])
                if rec:
                    rec_seconds.append(rec[-1]["seconds"])
            params = cuts[0]["child"]["parameters"] if cuts else scratch_params
            label = f"{kind} `{to}`"
            kept = f"{params / 1e6:.2f}M" if params else "—"
            if params and parent_params:
                kept += f" ({100 * params / parent_params:.0f}%)"
            # The smallest budget at which the recovered cut is as good as from scratch (means).
            matched = "—"
            s_mean = mean(scratch_loss)
            b_mean = mean(before)
            if b_mean is not None and s_mean is not None and b_mean <= s_mean:
                matched = "0% (before recovery)"
            for p in ([] if matched != "—" else args.recover_percent):
                m = mean(after.get(p, []))
                if m is not None and s_mean is not None and m <= s_mean:
                    matched = f"{p}% ({100 / p:.0f}× fewer tokens)"
                    break
            lines.append(f"| {label} | {kept} | {method if kind == 'width' else 'block (1 − cos)'} | "
                         f"{cell(before)} | "
                         + " | ".join(cell(after.get(p, [])) for p in args.recover_percent)
                         + f" | {cell(scratch_loss)} | {matched} | {seconds(rec_seconds)} | "
                         f"{seconds(scratch_seconds)} |")
            # The cross-lingual scores, if prune.sh XLING=1 made them (first seed only).
            x = load(os.path.join(out, "eval", f"xling-{name}-{method}-s{args.seeds[0]}.json"))
            if x:
                xling_rows.append((f"{label}, {method if kind == 'width' else 'block'}, "
                                   f"{max(args.recover_percent)}% recovery", x))
        x = load(os.path.join(out, "eval", f"xling-scratch-{name}-s{args.seeds[0]}.json"))
        if x:
            xling_rows.append((f"{label} from scratch", x))

    steps, batch = budget.get("steps"), budget.get("batch")
    print(f"Held-out loss (nats/byte, the public LLM's validation split, "
          f"{budget.get('eval_tokens', '?')} tokens; mean ± sd over seeds "
          f"{' '.join(args.seeds)}; lower is better). Parent: "
          + (f"{parent_params / 1e6:.2f}M parameters, " if parent_params else "")
          + (f"{parent_loss:.4f}" if parent_loss is not None else "—")
          + f". From scratch: {steps} steps of {batch} sequences; recovery: "
          + ", ".join(f"{p}% = {max(1, (steps * p + 50) // 100) if steps else '?'} steps"
                      for p in args.recover_percent)
          + ".\n")
    print("| cut | kept | importance | before recovery | "
          + " | ".join(f"+{p}% distill" for p in args.recover_percent)
          + " | from scratch (100%) | recovered ≤ scratch at | recovery s | scratch s |")
    print("|---|---|---|---|" + "---|" * len(args.recover_percent) + "---|---|---|---|")
    for line in lines:
        print(line)
    slm = load(os.path.join(out, "eval", "slm-public.json"))
    if slm:
        print(f"\nReference: {slm.get('model', '?')} trained from scratch at the parent's own budget "
              f"(its recipe, configs/llm-public.toml): {slm['validation']['loss']:.4f}.")
    if xling_rows:
        print(f"\nCross-lingual held-out sets (configs/xling-pool.toml, test split, seed "
              f"{args.seeds[0]}): English and the mean over the other languages.\n")
        print("| model | en | mean of others |")
        print("|---|---|---|")
        p = load(os.path.join(out, "eval", "xling-parent.json"))
        if p:
            xling_rows.insert(0, ("parent", p))
        for label, x in xling_rows:
            langs = x.get("languages", {})
            others = [v.get("test") for k, v in langs.items() if k != "en"]
            print(f"| {label} | {cell([langs.get('en', {}).get('test')])} | {cell([mean(others)])} |")
    for m in mismatch:
        print("shape mismatch: " + m, file=sys.stderr)
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())

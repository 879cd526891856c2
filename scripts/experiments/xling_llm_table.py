#!/usr/bin/env python3
"""The tables of the LLM experiments in the cross-lingual setup (scripts/experiments/submodel.sh
and emulator.sh): test loss per language of every final model from the `tandem eval --json`
files in OUT/eval, mean +- sd over seeds; `private` is the mean over the clients' languages
(everything but 'en', the public corpus). never_updated_fraction and bytes come from each run's
metrics.jsonl (bytes: the mean over its rounds of bytes_up and bytes_down).

  xling_llm_table.py submodel OUT --seeds 1 2
  xling_llm_table.py emulator OUT --seeds 1 2 --drops 0.5 0.25 [--lora-rank 8]"""
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


def test_losses(out, name):
    """{language: test loss} of OUT/eval/NAME.json, plus 'private' (the mean but 'en'); {} if
    it is missing."""
    ev = load(os.path.join(out, "eval", name + ".json")) or {}
    losses = {lang: v["test"] for lang, v in ev.get("languages", {}).items() if "test" in v}
    private = [v for lang, v in losses.items() if lang != "en"]
    if private:
        losses["private"] = statistics.mean(private)
    return losses


def rounds_of(out, run):
    try:
        with open(os.path.join(out, run, "metrics.jsonl")) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []
    return [m for m in lines if m.get("round", 0) >= 1 and not m.get("aborted")]


def per_round(out, run, key):
    rounds = rounds_of(out, run)
    values = [m[key] for m in rounds if key in m]
    return statistics.mean(values) if values else None


def last(out, run, key):
    rounds = rounds_of(out, run)
    return rounds[-1].get(key) if rounds else None


def cell(values, digits=4, scale=1.0, suffix=""):
    values = [v * scale for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}{suffix}"
    return (f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
            f"{suffix}")


def mib(values):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    v = statistics.mean(values)
    return f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 2**10:.1f} KiB"


def languages(out, names):
    langs = set()
    for name in names:
        langs |= set(test_losses(out, name))
    langs.discard("private")
    return sorted(l for l in langs if l != "en") + (["en"] if "en" in langs else [])


MIXES = [  # run stem, clients' widths, window
    ("full", "all 1", "—"),
    ("half-quarter", "half 1, half 1/4", "rolling"),
    ("uniform", "1, 1/2, 1/4, 1/8", "rolling"),
    ("quarter-static", "all 1/4", "static"),
    ("quarter-rolling", "all 1/4", "rolling"),
    ("quarter-importance", "all 1/4", "importance"),
]


def submodel_table(out, seeds):
    names = ["llm-public", "llm-oracle"] + [f"sm-{m}-s{s}" for m, _, _ in MIXES for s in seeds]
    langs = languages(out, names)
    if not langs:
        print(f"no evaluations in {out}/eval", file=sys.stderr)
        return 1
    print(f"Test loss of the global LLM (nats/token; seeds {' '.join(seeds)}; 'private' = mean "
          "over the clients' languages, 'en' the public corpus; lower is better). Sub-models: "
          "each tier's final sub-model cut from the global LLM, its private-language loss. "
          "Never updated: share of the LLM's coordinates no round moved. Bytes: mean per round.\n")
    print("| clients' widths | window | LLM private | " + " | ".join(langs) +
          " | sub-model 1/2 | sub-model 1/4 | never updated | up / round | down / round |")
    print("|---|---|---|" + "---|" * len(langs) + "---|---|---|---|---|")

    def row(label, window, runs, evals):
        losses = [test_losses(out, e) for e in evals]
        cols = [cell([l.get("private") for l in losses])]
        cols += [cell([l.get(lang) for l in losses]) for lang in langs]
        for d in (2, 4):
            cols.append(cell([test_losses(out, f"{e}-d{d}").get("private") for e in evals]))
        if runs:
            cols.append(cell([last(out, r, "never_updated_fraction") for r in runs], 1, 100, "%"))
            cols.append(mib([per_round(out, r, "bytes_up") for r in runs]))
            cols.append(mib([per_round(out, r, "bytes_down") for r in runs]))
        else:
            cols += ["—", "—", "—"]
        print(f"| {label} | {window} | " + " | ".join(cols) + " |")

    row("before collaboration (public LLM)", "—", [], ["llm-public"])
    for stem, widths, window in MIXES:
        runs = [f"sm-{stem}-s{s}" for s in seeds]
        row(widths, window, runs, runs)
    row("oracle (pooled private data)", "—", [], ["llm-oracle"])
    return 0


def emulator_table(out, seeds, drops, lora_rank=8):
    tags = {d: f"d{round(100 * float(d))}" for d in drops}
    names = ["llm-public", "llm-oracle"] + [
        f"{m}-{t}-s{s}" for t in tags.values()
        for m in ("off-uniform", "off-distilled", "fedbiot", "off-distilled-lora", "fedbiot-lora")
        for s in seeds]
    langs = languages(out, names)
    if not langs:
        print(f"no evaluations in {out}/eval", file=sys.stderr)
        return 1
    before = test_losses(out, "llm-public").get("private")
    oracle = test_losses(out, "llm-oracle").get("private")
    print(f"Test loss (nats/token; seeds {' '.join(seeds)}; 'private' = mean over the clients' "
          "languages, 'en' the public corpus; lower is better). Gap closed = (before − x) / "
          "(before − oracle) on 'private', per seed. Bytes: mean per round (the emulator goes "
          "down in round 1, and with fedbiot every round).\n")
    for drop in drops:
        tag = tags[drop]
        print(f"Drop ratio {drop} (emulator_keep = {1 - float(drop):g}):\n")
        print("| model | private | " + " | ".join(langs) +
              " | gap closed | up / round | down / round |")
        print("|---|---|" + "---|" * len(langs) + "---|---|---|")

        def row(label, evals, runs, optional=False):
            losses = [test_losses(out, e) for e in evals]
            if optional and not any(losses):
                return
            cols = [cell([l.get("private") for l in losses])]
            cols += [cell([l.get(lang) for l in losses]) for lang in langs]
            gaps = []
            if before is not None and oracle is not None and before != oracle:
                gaps = [(before - l["private"]) / (before - oracle) for l in losses
                        if "private" in l]
            cols.append(cell(gaps, 2))
            cols.append(mib([per_round(out, r, "bytes_up") for r in runs]) if runs else "—")
            cols.append(mib([per_round(out, r, "bytes_down") for r in runs]) if runs else "—")
            print(f"| {label} | " + " | ".join(cols) + " |")

        def runs(method):
            return [f"{method}-{tag}-s{s}" for s in seeds]

        row("LLM before collaboration (zero-shot)", ["llm-public"], [])
        row("emulator, uniform drop, fine-tuned (adapters in, not plugged)",
            [r + "-emulator" for r in runs("off-uniform")], [])
        row("emulator, distilled, fine-tuned (adapters in, not plugged)",
            [r + "-emulator" for r in runs("off-distilled")], [])
        row("plug-in, uniform-drop emulator (offsite, server_steps = 0)", runs("off-uniform"),
            runs("off-uniform"))
        row("plug-in, distilled emulator (offsite)", runs("off-distilled"), runs("off-distilled"))
        row("fedbiot (re-aligned emulator, plug-in)", runs("fedbiot"), runs("fedbiot"))
        row(f"plug-in, distilled emulator, LoRA r = {lora_rank} (offsite)",
            runs("off-distilled-lora"), runs("off-distilled-lora"), optional=True)
        row(f"fedbiot, LoRA r = {lora_rank} (re-aligned emulator, plug-in)", runs("fedbiot-lora"),
            runs("fedbiot-lora"), optional=True)
        row("oracle: full fine-tuning on pooled private data", ["llm-oracle"], [])
        print()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", choices=["submodel", "emulator"])
    ap.add_argument("out")
    ap.add_argument("--seeds", nargs="+", default=["1"])
    ap.add_argument("--drops", nargs="+", default=["0.5", "0.25"])
    ap.add_argument("--lora-rank", type=int, default=8, help="the LoRA rows' rank (a label)")
    args = ap.parse_args()
    if args.table == "submodel":
        return submodel_table(args.out, args.seeds)
    return emulator_table(args.out, args.seeds, args.drops, args.lora_rank)


if __name__ == "__main__":
    sys.exit(main())

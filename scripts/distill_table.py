#!/usr/bin/env python3
"""The distillation table of docs/results.md, from the runs scripts/distill-experiment.sh left in
OUT: every held-out loss is the last round's, on the same first 32 768 validation tokens of the
private categories; each cell is the mean over seeds ± the sample standard deviation."""
import argparse
import json
import math
import os
import statistics
import sys


def load_json(path):
    with open(path) as f:
        return json.load(f)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def last(run_dir, key):
    """The key's value in the last metrics line that has it."""
    values = [m[key] for m in metrics(run_dir) if key in m]
    if not values:
        raise KeyError(f"{run_dir}: no '{key}' in metrics.jsonl")
    return values[-1]


def cell(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def mib(x):
    return f"{x / 2**20:.2f} MiB" if x >= 2**20 else f"{x / 2**10:.1f} KiB"


class Runs:
    def __init__(self, out):
        self.out = out

    def path(self, name):
        return os.path.join(self.out, name)

    def eval_loss(self, name, split="validation"):
        return load_json(self.path(name + ".json"))[split]["loss"]

    def run(self, name):
        return self.path(name)

    def summary(self, name):
        return load_json(os.path.join(self.path(name), "summary.json"))

    def traffic(self, names):
        """Bytes up and down per round of the method itself (evaluation tasks left out, from the
        engine's per-task counts), and wall time, averaged over the runs."""
        up, down, secs = [], [], []
        for n in names:
            secs.append(self.summary(n)["seconds"])
            for line in metrics(self.run(n)):
                kinds = [k[len("bytes_down."):] for k in line if k.startswith("bytes_down.")]
                if line.get("round", 0) < 1 or not kinds:
                    continue  # round 0, or a run made before tandem counted bytes per task
                kept = [k for k in kinds if not k.endswith(".eval")]
                up.append(sum(line.get("bytes_up." + k, 0.0) for k in kept))
                down.append(sum(line["bytes_down." + k] for k in kept))
        if not up:
            return "—", "—", f"{statistics.fmean(secs) / 60:.1f} min"
        return (mib(statistics.fmean(up)), mib(statistics.fmean(down)),
                f"{statistics.fmean(secs) / 60:.1f} min")


def slm_table(runs, seeds, prefix=""):
    # (label, run name stem, own key, all key). A run without a key (the clients' own evaluations
    # are refused with privacy on) shows "—".
    rows = [
        ("local only (each client's own SLM, no communication)", "distill-up",
         "slm_own_val_loss", "slm_all_val_loss"),
        ("fedavg", "fedavg", "client_val_loss", "val_loss"),
        ("distill-down", "distill-down", "client_val_loss", "val_loss"),
        ("distill-down, SLMs kept local", "distill-down-local", "slm_own_val_loss",
         "slm_all_val_loss"),
        ("fedmkt", "fedmkt", "slm_own_val_loss", "slm_all_val_loss"),
        ("fedcollm", "fedcollm", "client_val_loss", "val_loss"),
    ]
    lines = ["| SLM (slm-tiny) | own categories | all private categories | up / round | "
             "down / round | wall time |", "|---|---|---|---|---|---|"]
    public = runs.eval_loss("slm-public")
    lines.append(f"| trained on public categories only (the start) | — | {public:.3f} | — | — | — |")
    for label, stem, own_key, all_key in rows:
        if prefix and stem == "distill-up":
            continue  # nothing leaves a client: privacy changes nothing
        names = [f"{prefix}{stem}-s{s}" for s in seeds]
        names = [n for n in names if os.path.exists(os.path.join(runs.run(n), "summary.json"))]
        if not names:
            continue
        have = lambda n, k: any(k in m for m in metrics(runs.run(n)))
        own = [last(runs.run(n), own_key) for n in names if have(n, own_key)]
        alls = [last(runs.run(n), all_key) for n in names if have(n, all_key)]
        if not own and not alls:
            continue  # the SLMs stay on the clients, and their evaluation is off under privacy
        if stem == "distill-up":
            traffic = ("0", "0", "—")
        else:
            traffic = runs.traffic(names)
        lines.append(f"| {label} | {cell(own)} | {cell(alls)} | " + " | ".join(traffic) + " |")
    return lines


def llm_table(runs, seeds, prefix=""):
    before = runs.eval_loss("llm-public")
    oracle = runs.eval_loss("oracle")
    gap = before - oracle
    lines = ["| LLM (llm-small) | private categories | share of the gap to the oracle closed | "
             "up / round | down / round | wall time |", "|---|---|---|---|---|---|"]
    lines.append(f"| before collaboration (public categories only) | {before:.3f} | 0 | — | — | — |")
    rows = [("distill-up", "distill-up", "val_loss"), ("fedmkt", "fedmkt", "val_loss"),
            ("fedcollm", "fedcollm", "llm_val_loss")]
    for label, stem, key in rows:
        names = [f"{prefix}{stem}-s{s}" for s in seeds]
        names = [n for n in names if os.path.exists(os.path.join(runs.run(n), "summary.json"))]
        if not names:
            continue
        losses = [last(runs.run(n), key) for n in names]
        shares = [(before - x) / gap for x in losses]
        lines.append(f"| {label} | {cell(losses)} | {cell(shares, 2)} | " +
                     " | ".join(runs.traffic(names)) + " |")
    names = [f"{prefix}proxy-tune-s{s}" for s in seeds]
    names = [n for n in names if os.path.exists(runs.path(n + ".json"))]
    if names:
        losses = [runs.eval_loss(n, "validation_proxy_tuned") for n in names]
        shares = [(before - x) / gap for x in losses]
        fed = runs.traffic([f"{prefix}fedavg-s{s}" for s in seeds])
        lines.append(f"| proxy-tune (LLM + fedavg's SLM − public SLM, no LLM training) | "
                     f"{cell(losses)} | {cell(shares, 2)} | {fed[0]} | {fed[1]} | "
                     f"{fed[2]} (fedavg) |")
    lines.append(f"| oracle (fine-tuned on the pooled private data) | {oracle:.3f} | 1 | — | — | — |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--seeds", nargs="+", default=["1"])
    parser.add_argument("--dp-seeds", nargs="*", default=[])
    args = parser.parse_args()
    runs = Runs(args.out)
    before_run = runs.run(f"distill-up-s{args.seeds[0]}")
    round0 = [m for m in metrics(before_run) if m.get("round") == 0][0]["val_loss"]
    if not math.isclose(round0, runs.eval_loss("llm-public"), abs_tol=1e-4):
        sys.exit(f"the runs and `tandem eval` disagree on the public LLM: {round0} vs "
                 f"{runs.eval_loss('llm-public')}; they must score the same tokens")
    out = [f"Seeds {', '.join(args.seeds)}; held-out loss (nats per byte) after the last round.", ""]
    out += slm_table(runs, args.seeds) + [""] + llm_table(runs, args.seeds)
    if args.dp_seeds:
        s = runs.summary(f"dp-fedavg-s{args.dp_seeds[0]}")
        out += ["", f"With differential privacy (ε = {s['epsilon']:.3g}, δ = 1e-5, σ = "
                f"{s['noise_multiplier']:.3g}, distributed noise) and secure aggregation; seeds "
                f"{', '.join(args.dp_seeds)}:", ""]
        out += slm_table(runs, args.dp_seeds, "dp-") + [""] + llm_table(runs, args.dp_seeds, "dp-")
    print("\n".join(out))


if __name__ == "__main__":
    main()

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


def cell(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def run_cost(out, runs):
    """Mean bytes up and down per round and wall seconds of the runs' summary.json files; the
    bytes are None for a run of one process (tandem train), which sends none."""
    up, down, secs = [], [], []
    for run in runs:
        summary = load(os.path.join(out, run, "summary.json"))
        if not summary or "seconds" not in summary:
            continue
        if summary.get("rounds"):
            up.append(summary["bytes_up"] / summary["rounds"])
            down.append(summary["bytes_down"] / summary["rounds"])
        secs.append(summary["seconds"])
    if not secs:
        return None
    bytes_of = lambda b: statistics.mean(b) if b else None
    return bytes_of(up), bytes_of(down), statistics.mean(secs)


def mib(b):
    if b is None:
        return "—"
    return f"{b / 2**20:.2f} MiB" if b >= 2**20 else f"{b / 2**10:.1f} KiB"


def last_round(metrics_path):
    """The last line of a run's metrics.jsonl, {} if there is none."""
    try:
        return [json.loads(line) for line in open(metrics_path)][-1]
    except (OSError, ValueError, IndexError):
        return {}


def last_round_languages(metrics_path):
    """{lang: {"validation": loss}} from the val_loss_<lang> entries of a run's last round."""
    return {k[len("val_loss_"):]: {"validation": v}
            for k, v in last_round(metrics_path).items() if k.startswith("val_loss_")}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--seeds", nargs="+", default=["1"],
                    help="the seeds of the headline rows (distill-up without and with every option)")
    ap.add_argument("--wide-seeds", nargs="*", default=None,
                    help="the seeds of every other row (default: --seeds)")
    ap.add_argument("--epsilons", nargs="*", default=["1", "4", "8"],
                    help="the ε of the private distill-up runs")
    args = ap.parse_args()
    wide = args.wide_seeds if args.wide_seeds is not None else args.seeds
    # Every seed any row ran, the headline rows' first.
    headline = list(dict.fromkeys(args.seeds + wide))
    ev = os.path.join(args.out, "eval")

    rows = []  # (model, method, {lang: [values]}, runs)
    def add(model, method, names, runs=(), key="test"):
        """A row of NAMES' evaluations; RUNS, one per name, are the runs that made them."""
        per, kept = {}, []
        for i, name in enumerate(names):
            # A round that timed out left the model unchanged: that run had less of the budget
            # every row shares, so it is left out (and said so) rather than averaged in.
            run = runs[i] if i < len(runs) else None
            summary = load(os.path.join(args.out, run, "summary.json")) if run else None
            if summary and summary.get("aborted_rounds"):
                print(f"note: {run} left out: {summary['aborted_rounds']} of its rounds were "
                      f"aborted (delete {os.path.join(args.out, run)} and rerun)", file=sys.stderr)
                continue
            if run:
                kept.append(run)
            evaluation = load(os.path.join(ev, name + ".json")) or {}
            for lang, v in evaluation.get("languages", {}).items():
                if v.get(key) is not None:
                    per.setdefault(lang, []).append(v[key])
        rows.append((model, method, per, kept))

    def seeded(model, method, prefix, seeds):
        add(model, method, [f"{model.lower()}-{prefix}-s{s}" for s in seeds],
            [f"{prefix}-s{s}" for s in seeds])

    add("LLM", "before collaboration", ["llm-public"])
    add("LLM", "transfer pool alone (baseline, the upward runs' LLM budget)",
        [f"llm-pool-s{s}" for s in headline], [f"xling-pool-s{s}" for s in headline])
    seeded("LLM", "distill-up", "distill-up", headline)
    seeded("LLM", "distill-up + confidence ensemble, weighted KD, English kept", "distill-up-conf",
           headline)
    seeded("LLM", "distill-up + confidence ensemble only", "distill-up-ensemble", wide)
    seeded("LLM", "distill-up + KD weighted by confidence only", "distill-up-weighting", wide)
    seeded("LLM", "distill-up + English kept only", "distill-up-english", wide)
    seeded("LLM", "fedmkt (min-ce selection)", "fedmkt", wide)
    seeded("LLM", "fedmkt (min-ce selection), clients ignore the LLM's targets (client_weight 0)",
           "fedmkt-up-only", wide)
    seeded("LLM", "fedmkt + confidence ensemble (for min-ce), weighted KD, English kept",
           "fedmkt-conf", wide)
    seeded("LLM", "fedmkt (min-ce selection) + weighted KD, English kept", "fedmkt-mince-conf",
           wide)
    seeded("LLM", "fedcollm", "fedcollm", wide)
    seeded("LLM", "fedcollm + weighted KD, English kept", "fedcollm-conf", wide)
    add("LLM", "proxy-tune (public LLM + fedavg's SLM − public SLM)",
        [f"llm-proxy-tune-s{s}" for s in wide], [f"fedavg-s{s}" for s in wide],
        key="test_proxy_tuned")
    for eps in args.epsilons:
        for upload, what in (("mean", "probabilities"), ("votes", "votes (PATE)")):
            seeded("LLM", f"distill-up, DP ε = {eps}, {what}", f"distill-up-dp-{upload}-e{eps}",
                   wide)
    add("LLM", "oracle (pooled private data, the same LLM budget)",
        [f"llm-oracle-s{s}" for s in headline], [f"xling-oracle-s{s}" for s in headline])
    add("SLM", "before collaboration", ["slm-public"])
    for m in ("fedavg", "distill-down"):
        seeded("SLM", m, m, wide)
    per = {}
    for s in wide:
        summary = load(os.path.join(args.out, f"fedcollm-s{s}", "summary.json")) or {}
        for k, v in summary.items():
            if k.startswith("final_test_loss_") and "." not in k:
                per.setdefault(k[len("final_test_loss_"):], []).append(v)
    rows.append(("SLM", "fedcollm (its run's evaluation)", per, [f"fedcollm-s{s}" for s in wide]))

    langs = sorted({lang for _, _, per, _ in rows for lang in per})
    if not langs:
        print(f"no evaluations in {ev}", file=sys.stderr)
        return 1
    # The public corpus last: the column that shows forgetting.
    private = [l for l in langs if l != "en"]
    if "en" in langs:
        langs = private + ["en"]

    def private_mean(per):
        """Per seed, the mean over the private languages (empty unless every one is there)."""
        columns = [per.get(l, []) for l in private]
        n = min((len(c) for c in columns), default=0)
        if n == 0:
            return []
        return [statistics.mean(c[i] for c in columns) for i in range(n)]

    def find(model, method_start):
        for m, method, per, _ in rows:
            if m == model and method.startswith(method_start):
                return private_mean(per)
        return []
    # The baselines ran on every seed: a row is measured against their means.
    before, oracle, pool = (statistics.mean(v) if v else None for v in (
        find("LLM", "before"), find("LLM", "oracle"), find("LLM", "transfer pool")))
    gap = before - oracle if before is not None and oracle is not None else None

    print(f"Test loss per language (nats/token; headline rows and the two baselines seeds "
          f"{' '.join(headline)}, other rows {' '.join(wide)}, whatever of them has run: n; 'en' "
          "is the public corpus: lower is better everywhere). 'private' is the mean over the "
          "clients' languages; 'gap' the share of the LLM's gap to the oracle it closes there, "
          "(before - row) / (before - oracle); 'vs pool' the row minus the transfer-pool "
          "baseline there (negative: better than the baseline), and in brackets the "
          "share of the oracle's lead over the baseline that the row makes up, "
          "(pool - row) / (pool - oracle), with the oracle and the pool the means over their "
          "seeds.\n")
    print("| model | method | n | " + " | ".join(langs) +
          " | private | gap | vs pool | up / round | down / round | wall |")
    print("|---|---|---|" + "---|" * len(langs) + "---|---|---|---|---|---|")
    for model, method, per, runs in rows:
        n = max((len(v) for v in per.values()), default=0)
        if n == 0:
            continue
        means = private_mean(per)
        closed = vs = "—"
        if model == "LLM" and means and gap:
            shares = [100 * (before - m) / gap for m in means]
            closed = (f"{shares[0]:.1f} %" if len(shares) == 1 else
                      f"{statistics.mean(shares):.1f} ± {statistics.stdev(shares):.1f} %")
            if pool is not None:
                vs = cell([m - pool for m in means])
                if oracle is not None and pool != oracle:
                    beyond = [100 * (pool - m) / (pool - oracle) for m in means]
                    vs += (f" ({beyond[0]:.0f} %)" if len(beyond) == 1 else
                           f" ({statistics.mean(beyond):.0f} ± {statistics.stdev(beyond):.0f} %)")
        cost = run_cost(args.out, runs)
        up = down = wall = "—"
        if cost:
            up, down, wall = mib(cost[0]), mib(cost[1]), f"{cost[2] / 60:.1f} min"
        print(f"| {model} | {method} | {n} | " + " | ".join(cell(per.get(l, [])) for l in langs) +
              f" | {cell(means)} | {closed} | {vs} | {up} | {down} | {wall} |")
    # The clients' own SLMs (eval.clients): distill-up's train on their own data alone, fedmkt's
    # also distil the LLM's targets.
    slm_rows = []
    for method, prefix, seeds in (("local only (distill-up's clients)", "distill-up", headline),
                                  ("fedmkt's clients", "fedmkt", wide),
                                  ("fedmkt + options' clients", "fedmkt-conf", wide)):
        own, every = [], []
        for s in seeds:
            last = last_round(os.path.join(args.out, f"{prefix}-s{s}", "metrics.jsonl"))
            if "slm_own_val_loss" in last:
                own.append(last["slm_own_val_loss"])
                every.append(last["slm_all_val_loss"])
        if own:
            slm_rows.append((method, own, every))
    # The runs whose clients end with one shared SLM: own language and all are the same model, so
    # both are the mean of its per-language validation losses (tandem eval's, or for fedcollm's
    # SLM its run's last round's).
    def evaluated(name):
        return lambda s: (load(os.path.join(ev, f"slm-{name}-s{s}.json")) or {}).get("languages")
    for method, loader in (
            ("fedavg (one shared SLM)", evaluated("fedavg")),
            ("distill-down (one shared SLM)", evaluated("distill-down")),
            ("fedcollm (one shared SLM)", lambda s: last_round_languages(
                os.path.join(args.out, f"fedcollm-s{s}", "metrics.jsonl")))):
        shared = []
        for s in wide:
            langs_of = loader(s) or {}
            values = [langs_of.get(l, {}).get("validation") for l in private]
            if values and all(v is not None for v in values):
                shared.append(statistics.mean(values))
        if shared:
            slm_rows.append((method, shared, shared))
    if slm_rows:
        print("\nThe clients' own SLMs after the last round (validation loss, nats/token; own: each "
              "client on its own categories, weighted by their tokens; all: each on every private "
              "category, averaged over clients; for one shared SLM both are the mean of its "
              "per-language validation losses):\n")
        print("| SLMs | n | own language | all languages |")
        print("|---|---|---|---|")
        for method, own, every in slm_rows:
            print(f"| {method} | {len(own)} | {cell(own)} | {cell(every)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

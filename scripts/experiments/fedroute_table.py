#!/usr/bin/env python3
"""The federated-routing table (docs/results.md "Federated routing") from fedroute.sh's output
directory: per method, mean ± sample std over the seeds present, of accuracy / local accuracy /
call ratio on each client's held-out prompts (the last line of a route-gapg run: eval.part<P>.*)
and on the union (`tandem route eval`'s JSON), the gap closed on the union, cloud queries and
bytes moved (every frame of the coordinator's socket: the rounds and the clients' sessions with the
service); then the device, the cloud, random and the router, each part's gap closed and the
held-out prompt counts."""
import glob
import json
import os
import re
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "."


def last_line(run):
    path = os.path.join(out, "runs", run, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    return lines


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt(values, pct=True, digits=1):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    scale = 100.0 if pct else 1.0
    m = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{m:.{digits}f}"
    s = statistics.stdev(values) * scale
    return f"{m:.{digits}f} ± {s:.{digits}f}"


seeds = sorted({int(m.group(1)) for p in glob.glob(os.path.join(out, "results", "*-s*.json"))
                if (m := re.search(r"-s(\d+)\.json$", p))})
methods = [("fed", "federated GAPG (2 clients)", "fed"),
           ("pooled", "GAPG on the pooled prompts", "score-pooled"),
           ("alone0", "client 0 alone", "alone0"),
           ("alone1", "client 1 alone", "alone1")]
cols = ["part 0: acc", "local acc", "call", "part 1: acc", "local acc", "call",
        "union: acc", "local acc", "call", "gap closed", "cloud queries", "kB moved"]
print(f"seeds: {' '.join(map(str, seeds))}")
print()
print("| method | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")


def row(name, get):
    cells = []
    for key in ["p0.acc", "p0.local", "p0.call", "p1.acc", "p1.local", "p1.call",
                "u.acc", "u.local", "u.call", "gap"]:
        cells.append(fmt([get(s, key) for s in seeds]))
    cells.append(fmt([get(s, "queries") for s in seeds], pct=False, digits=0))
    cells.append(fmt([get(s, "kb") for s in seeds], pct=False, digits=0))
    print(f"| {name} | " + " | ".join(cells) + " |")


for stem, name, score_run in methods:
    def get(seed, key, stem=stem, score_run=score_run):
        lines = last_line(f"{score_run}-s{seed}")
        union = load(os.path.join(out, "results", f"{stem}-s{seed}.json"))
        dev = load(os.path.join(out, "results", f"device-s{seed}.json"))
        cloud = load(os.path.join(out, "results", f"cloud-s{seed}.json"))
        last = lines[-1] if lines else {}
        if key.startswith("p"):
            part, what = key[1], key.split(".")[1]
            k = {"acc": "accuracy", "local": "local_accuracy", "call": "call_ratio"}[what]
            return last.get(f"eval.part{part}.{k}")
        if key.startswith("u."):
            if union is None:
                return None
            return union[{"u.acc": "accuracy", "u.local": "local_accuracy",
                          "u.call": "call_ratio"}[key]]
        if key == "gap":
            if None in (union, dev, cloud) or cloud["accuracy"] == dev["accuracy"]:
                return None
            return (union["accuracy"] - dev["accuracy"]) / (cloud["accuracy"] - dev["accuracy"])
        if key == "queries":
            if stem == "pooled":
                summary = load(os.path.join(out, "runs", f"pooled-s{seed}", "summary.json"))
                return summary and summary.get("cloud_queries_this_session")
            own = last_line(f"{stem}-s{seed}")
            return own[-1].get("cloud_queries_total") if own else None
        if key == "kb":
            if stem == "pooled":
                return 0.0
            own = last_line(f"{stem}-s{seed}")
            if not own:
                return None
            # The coordinator's bytes_up/bytes_down count every frame of its socket, the
            # clients' service sessions included (serve_bytes_* is their share, not extra).
            rounds = sum(l.get("bytes_up", 0) + l.get("bytes_down", 0) for l in own)
            return rounds / 1000.0
        return None
    row(name, get)

def part_of(run, seed, part, what):
    lines = last_line(f"{run}-s{seed}")
    return lines[-1].get(f"eval.part{part}.{what}") if lines else None


# The two ends on each part: the device and the cloud alone on the part's held-out prompts, as
# the federated run's last round measured them (the same prompts and models in every run).
for b, what in (("device", "device_accuracy"), ("cloud", "cloud_accuracy")):
    accs = [load(os.path.join(out, "results", f"{b}-s{s}.json")) for s in seeds]
    parts = []
    for p in (0, 1):
        parts += [fmt([part_of("fed", s, p, what) for s in seeds]), "–",
                  "0.0" if b == "device" else "100.0"]
    print(f"| {b} alone | " + " | ".join(parts) + " | " +
          fmt([a and a["accuracy"] for a in accs]) + " | – | " +
          ("0.0" if b == "device" else "100.0") + " | – | – | – |")

# The baselines on the union through the same cap (`tandem route eval`, route.baseline).
for b, name in (("random", "random (union)"), ("router", "router (union)")):
    rows = [load(os.path.join(out, "results", f"{b}-s{s}.json")) for s in seeds]
    if not any(rows):
        continue
    gaps = []
    for s, r in zip(seeds, rows):
        dev = load(os.path.join(out, "results", f"device-s{s}.json"))
        cloud = load(os.path.join(out, "results", f"cloud-s{s}.json"))
        if None in (r, dev, cloud) or cloud["accuracy"] == dev["accuracy"]:
            gaps.append(None)
        else:
            gaps.append((r["accuracy"] - dev["accuracy"]) / (cloud["accuracy"] - dev["accuracy"]))
    print(f"| {name} | " + " | ".join(["–"] * 6) + " | " +
          fmt([r and r["accuracy"] for r in rows]) + " | " +
          fmt([r and r["local_accuracy"] for r in rows]) + " | " +
          fmt([r and r["call_ratio"] for r in rows]) + " | " + fmt(gaps) + " | – | – |")

# Each part's gap closed: (accuracy - device) / (cloud - device) on the part's held-out prompts,
# per seed (random's expectation under the ranked cap is its call ratio).
print()
print("| method | part 0: gap closed | part 1: gap closed |")
print("|---|---|---|")
for stem, name, score_run in methods:
    cells = []
    for p in (0, 1):
        gaps = []
        for s in seeds:
            acc = part_of(score_run, s, p, "accuracy")
            dev = part_of(score_run, s, p, "device_accuracy")
            cloud = part_of(score_run, s, p, "cloud_accuracy")
            gaps.append(None if None in (acc, dev, cloud) or cloud == dev
                        else (acc - dev) / (cloud - dev))
        cells.append(fmt(gaps))
    print(f"| {name} | " + " | ".join(cells) + " |")

# Paired differences (the same seed: the same held-out prompts, device and cloud), in points of
# accuracy: what the seeds' spread of each method hides when the methods move together.
def acc_of(stem, score_run, seed, where):
    if where == "union":
        r = load(os.path.join(out, "results", f"{stem}-s{seed}.json"))
        return r and r["accuracy"]
    return part_of(score_run, seed, where, "accuracy")


print()
print("| paired difference, accuracy | part 0 | part 1 | union |")
print("|---|---|---|---|")
by_stem = {stem: score_run for stem, _, score_run in methods}
for a, b in (("fed", "pooled"), ("fed", "alone0"), ("fed", "alone1"), ("alone0", "alone1")):
    cells = []
    for where in (0, 1, "union"):
        diffs = []
        for s in seeds:
            x, y = acc_of(a, by_stem[a], s, where), acc_of(b, by_stem[b], s, where)
            diffs.append(None if None in (x, y) else x - y)
        cells.append(fmt(diffs))
    print(f"| {a} − {b} | " + " | ".join(cells) + " |")

print()
counts = []
for s in seeds:
    union = load(os.path.join(out, "results", f"device-s{s}.json"))
    p0, p1 = part_of("fed", s, 0, "queries"), part_of("fed", s, 1, "queries")
    counts.append(f"seed {s}: part 0 {p0 and int(p0)}, part 1 {p1 and int(p1)}, "
                  f"union {union and union.get('queries')}")
print("held-out prompts: " + "; ".join(counts))

#!/usr/bin/env python3
"""The routing experiment's tables (docs/results.md, "Routing") from routing.sh's results/*.json:
mean and standard deviation over seeds of overall accuracy, conditional local accuracy and call
ratio at a 30% budget, the share of the device-to-cloud gap each method closes, and a budget
sweep. Usage: routing_table.py RESULTS_DIR"""
import glob, json, os, re, statistics, sys
from collections import defaultdict

runs = defaultdict(dict)  # (method, budget) -> seed -> result
for path in glob.glob(os.path.join(sys.argv[1], "*.json")):
    m = re.match(r"(\w+)-b([0-9.]+)-s(\d+)\.json$", os.path.basename(path))
    if m:
        runs[(m[1], m[2])][int(m[3])] = json.load(open(path))

def stat(values):
    values = list(values)
    if not values:
        return "-"
    mean = 100 * statistics.mean(values)
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"

def row(method, budget, label):
    r = runs.get((method, budget), {})
    if not r:
        return None
    seeds = sorted(r)
    device = runs[("device", "0.3")]
    cloud = runs[("cloud", "0.3")]
    closed = [(r[s]["accuracy"] - device[s]["accuracy"]) /
              (cloud[s]["accuracy"] - device[s]["accuracy"])
              for s in seeds if s in device and s in cloud
              and cloud[s]["accuracy"] > device[s]["accuracy"]]
    local = [r[s]["local_accuracy"] for s in seeds if r[s]["local_answered"] > 0]
    extra = ""
    if "preferred_ratio" in r[seeds[0]]:
        extra = stat(r[s]["preferred_ratio"] for s in seeds)
    return (f"| {label} | {stat(r[s]['accuracy'] for s in seeds)} | {stat(local)} | "
            f"{stat(r[s]['call_ratio'] for s in seeds)} | {stat(closed)} | {extra} |")

seeds = sorted(runs.get(("device", "0.3"), {}))
queries = [runs[("device", "0.3")][s]["queries"] for s in seeds]
print(f"seeds {seeds}, held-out prompts per seed {queries}; mean ± standard deviation over seeds, in %\n")
print("| method (budget 30%) | accuracy | local accuracy | call ratio | gap closed | call ratio it prefers without a cap |")
print("|---|---|---|---|---|---|")
for method, label in [("device", "device only"), ("cloud", "cloud only"), ("random", "random"),
                      ("router", "router (logistic regression)"), ("grpo", "GRPO"),
                      ("gapg", "GAPG"),
                      ("gapgtop", "GAPG, top block + marker row, the device answering"),
                      ("gapgtopown", "GAPG, top block + marker row, answering itself"),
                      ("oracle", "oracle router")]:
    line = row(method, "0.3", label)
    if line:
        print(line)
for method, budget, label in [
        ("gapgtopown", "0.0", "that policy alone, no hand-offs (budget 0)"),
        ("gapgtopwarm", "0.0", "its warm start alone, no hand-offs (budget 0)")]:
    line = row(method, budget, label)
    if line:
        print(line)
if runs.get(("ptdevice", "0.3")):
    print("\nThe top-block policy as the answering device (gap closed from its own answers to the cloud):\n")
    print("| method (budget 30%) | accuracy | local accuracy | call ratio | gap closed | |")
    print("|---|---|---|---|---|---|")
    base = runs[("ptdevice", "0.3")]
    for method, label in [("ptdevice", "the policy alone"), ("ptrandom", "random"),
                          ("ptrouter", "router on its confidence"),
                          ("gapgtopown", "GAPG: its own hand-offs"), ("ptoracle", "oracle router")]:
        r = runs.get((method, "0.3"), {})
        seeds = sorted(s for s in r if s in base and s in runs[("cloud", "0.3")])
        if not seeds:
            continue
        cl = runs[("cloud", "0.3")]
        closed = [(r[s]["accuracy"] - base[s]["accuracy"]) / (cl[s]["accuracy"] - base[s]["accuracy"])
                  for s in seeds]
        local = [r[s]["local_accuracy"] for s in seeds if r[s]["local_answered"] > 0]
        print(f"| {label} | {stat(r[s]['accuracy'] for s in seeds)} | {stat(local)} | "
              f"{stat(r[s]['call_ratio'] for s in seeds)} | {stat(closed)} | |")
budgets = sorted({b for (m, b) in runs if m == "gapg"}, key=float)
print("\n| budget | method | accuracy | local accuracy | call ratio | gap closed | preferred call ratio |")
print("|---|---|---|---|---|---|---|")
for b in budgets:
    for method in ["random", "router", "gapg", "oracle"]:
        line = row(method, b, f"{float(b):.0%} | {method}")
        if line:
            print(line)

#!/usr/bin/env python3
"""Shrink a `ringpoll compare` results.json for committing beside the docs: per-run HDR
histograms are dropped (each cell keeps its merged histogram, from which its percentiles
come), floats are rounded to 5 significant digits, and the JSON is written without
indentation. Everything the report and docs/BENCHMARKS.md read is kept.

    python3 bench-scripts/slim-results.py docs/bench/main/results.json [...]
"""
import json
import sys


def rounded(v):
    if isinstance(v, float):
        return float(f"{v:.5g}")
    if isinstance(v, list):
        return [rounded(x) for x in v]
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    return v


for path in sys.argv[1:]:
    with open(path) as f:
        r = json.load(f)
    for c in r.get("cells", []):
        for run in c.get("runs", []):
            run.pop("histogram", None)
    for p in r.get("sweep", []):
        if isinstance(p.get("run"), dict):
            p["run"].pop("histogram", None)
    with open(path, "w") as f:
        json.dump(rounded(r), f, separators=(",", ":"))
        f.write("\n")

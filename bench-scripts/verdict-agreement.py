#!/usr/bin/env python3
"""Do two runs of the same comparison agree? (issue 13's acceptance, reproducible)

usage: python3 bench-scripts/verdict-agreement.py --run DIR_A DIR_B [-- COMPARE FLAGS...]
       python3 bench-scripts/verdict-agreement.py DIR_A DIR_B          (tabulate existing runs)

With --run, runs `ringpoll compare --workloads echo-64B-c512,http-c64 --target-ci 5%` (or the
flags given after `--`) twice back to back, into DIR_A and DIR_B. Then, for every comparison
both runs made (each backend vs epoll, vs the best peer, on both cost metrics), it prints the
two ratios with their 95% intervals and marks where the verdicts differ (one says "less",
the other "no difference" or "more") or the intervals do not overlap. Markdown on stdout.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import RINGPOLL, ensure_ringpoll  # noqa: E402

DEFAULT = ["--workloads", "echo-64B-c512,http-c64", "--target-ci", "5%"]


def side(iv):
    if iv["hi"] < 1:
        return "less"
    if iv["lo"] > 1:
        return "more"
    return "no difference"


def load(d):
    with open(os.path.join(d, "results.json")) as f:
        return json.load(f)


def table(a_dir, b_dir):
    a, b = load(a_dir), load(b_dir)
    out = []
    p = out.append
    for name, r in (("A", a), ("B", b)):
        steps = "; ".join(f"{g['workload']}: {g['outcome']} ({g['seconds']:.0f} s)" for g in r["progress"])
        p(f"- run {name} ({r['machine']['date_utc']}): `{r['command']}`: {steps}")
    p("")
    p("| workload | comparison | metric | A | B | |")
    p("|---|---|---|---|---|---|")

    def key(v):
        return (v["workload"], v["a"], v["b"], v["metric"])

    bv = {key(v): v for v in b["verdicts"] if v.get("interval")}
    n = agree = overlap = 0
    edge = []  # for each differing pair: how close the nearer interval end comes to 1.0
    for v in a["verdicts"]:
        w = bv.get(key(v))
        if not v.get("interval") or not w:
            continue
        ia, ib = v["interval"], w["interval"]
        n += 1
        same = side(ia) == side(ib)
        ov = ia["lo"] <= ib["hi"] and ib["lo"] <= ia["hi"]
        agree += same
        overlap += ov
        if not same:
            edge.append(min(abs(x - 1) for iv in (ia, ib) for x in (iv["lo"], iv["hi"])))
        flag = " ".join(x for x in ("" if same else "verdicts differ", "" if ov else "no overlap") if x)
        star = " *" if v.get("headline") else ""

        def fmt(iv):
            return f"{iv['ratio']:.2f}× ({iv['lo']:.2f}–{iv['hi']:.2f}, {iv['n']} rounds) {side(iv)}"

        p(f"| {v['workload']} | {v['a']} / {v['b']}{star} | {v['metric']} | {fmt(ia)} | {fmt(ib)} | {flag} |")
    p("")
    p(f"{n} comparisons (`*` headline): verdicts agree in {agree}, intervals overlap in {overlap}.")
    if edge:
        p(f"In each of the {len(edge)} whose verdicts differ, an end of one of the two intervals lies within "
          f"{max(edge):.3f} of 1.0: an effect that small sits at the edge of what an interval of that width "
          "tells apart from none, so which side of the edge a run lands on is chance.")
    return "\n".join(out) + "\n"


def main():
    args = sys.argv[1:]
    flags = DEFAULT
    if "--" in args:
        i = args.index("--")
        args, flags = args[:i], args[i + 1:]
    run = bool(args) and args[0] == "--run"
    if run:
        args = args[1:]
    if len(args) != 2:
        sys.exit(__doc__)
    if run:
        ensure_ringpoll()
        for d in args:
            print(f"ringpoll compare {' '.join(flags)} --out {d}", file=sys.stderr)
            subprocess.run([RINGPOLL, "compare", *flags, "--out", d], check=True)
    sys.stdout.write(table(*args))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Do two runs of the same comparison agree? (issue 13's acceptance, reproducible)

usage: python3 bench-scripts/verdict-agreement.py --run DIR_A DIR_B [-- COMPARE FLAGS...]
       python3 bench-scripts/verdict-agreement.py DIR_A DIR_B          (tabulate existing runs)

With --run, runs `ringpoll compare --workloads echo-64B-c512,http-c64 --target-ci 5%` (or the
flags given after `--`) twice back to back, into DIR_A and DIR_B. Then, for every comparison
both runs made (each backend vs epoll, vs the best peer, on both cost metrics), it prints the
two ratios with their 95% intervals and marks where the verdicts differ (one says "less",
the other "no difference" or "more") or the intervals do not overlap. For anchored runs
(epoll between every two other servers of a round) it then shows how noisy a round's ratio
is against how far apart its two runs were: each run against the epoll runs beside it (what
compare uses) and against the round's epoll runs further away (what a plain shuffled round
pairs on average). Markdown on stdout.
"""
import json
import math
import os
import statistics
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


BUSY_STEP = 1.15  # crates/compare/src/verdicts.rs, for the table's caption


def busy_share(r, workload):
    """(busy, all): the rounds of a workload's uring-vs-epoll verdict (else its first one)
    that compare counted as measured while the host was busy (`busy` in results.json)."""
    vs = [v for v in r["verdicts"] if v["workload"] == workload and v["metric"] == "process_cpu"
          and v.get("interval") and v.get("busy") is not None]
    v = next((v for v in vs if v["a"] == "uring" and v["b"] == "epoll"), vs[0] if vs else None)
    return (v["busy"], v["interval"]["n"]) if v else None


def in_state(v, state):
    """The verdict's interval over the rounds of one host state: its own split, or the whole
    interval when every one of its rounds was in that state."""
    if v.get("states"):
        return v["states"][state]
    busy, n = v.get("busy"), v["interval"]["n"]
    if busy is not None and ((state == "busy" and busy == n) or (state == "quiet" and busy == 0)):
        return v["interval"]
    return None


def table(a_dir, b_dir):
    a, b = load(a_dir), load(b_dir)
    out = []
    p = out.append
    for name, r in (("A", a), ("B", b)):
        steps = "; ".join(f"{g['workload']}: {g['outcome']} ({g['seconds']:.0f} s)" for g in r["progress"])
        mix = []
        for g in r["progress"]:
            m = busy_share(r, g["workload"])
            if m and m[1]:
                mix.append(f"{g['workload']} {m[0]} of {m[1]}")
        host = f"; rounds measured while the host was busy (uring vs epoll): {', '.join(mix)}" if mix else ""
        p(f"- run {name} ({r['machine']['date_utc']}): `{r['command']}`: {steps}{host}")
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
        which = "In the one whose verdicts differ" if len(edge) == 1 else f"In each of the {len(edge)} whose verdicts differ"
        p(f"{which}, an end of one of the two intervals lies within "
          f"{max(edge):.3f} of 1.0: an effect that small sits at the edge of what an interval of that width "
          "tells apart from none, so which side of the edge a run lands on is chance.")
    states = state_table(a, b)
    if states:
        p("")
        p(states)
    return "\n".join(out) + "\n"


def state_table(a, b):
    """The comparisons again, host state by state, where both runs measured that state."""
    out = []
    p = out.append

    def key(v):
        return (v["workload"], v["a"], v["b"], v["metric"])

    bv = {key(v): v for v in b["verdicts"] if v.get("interval")}
    n = agree = overlap = 0
    rows = []
    for v in a["verdicts"]:
        w = bv.get(key(v))
        if not v.get("interval") or not w:
            continue
        for state in ("quiet", "busy"):
            ia = in_state(v, state)
            ib = in_state(w, state)
            if not ia or not ib:
                continue
            n += 1
            same = side(ia) == side(ib)
            ov = ia["lo"] <= ib["hi"] and ib["lo"] <= ia["hi"]
            agree += same
            overlap += ov
            flag = " ".join(x for x in ("" if same else "verdicts differ", "" if ov else "no overlap") if x)

            def fmt(iv):
                return f"{iv['ratio']:.2f}× ({iv['lo']:.2f}–{iv['hi']:.2f}, {iv['n']} rounds) {side(iv)}"

            rows.append(f"| {v['workload']} | {v['a']} / {v['b']} | {v['metric']} | {state} | {fmt(ia)} | "
                        f"{fmt(ib)} | {flag} |")
    if not rows:
        return ""
    p("The same comparisons within one host state (quiet: the epoll runs beside a run within "
      f"{(BUSY_STEP - 1) * 100:.0f}% of the workload's quietest; busy: above that), wherever both runs "
      "measured that state in at least six rounds (compare states a split only from six rounds in each state):\n")
    p("| workload | comparison | metric | host | A | B | |")
    p("|---|---|---|---|---|---|---|")
    out.extend(rows)
    p("")
    p(f"{n} state-matched comparisons: verdicts agree in {agree}, intervals overlap in {overlap}.")
    return "\n".join(out)


def distance_table(dirs):
    """Spread (standard deviation) of the per-round log ratio x / epoll, process CPU, by how
    many runs apart x and the epoll run(s) it is divided by were."""
    out = []
    rows = {}  # (workload, label) -> {distance: [log ratios]}
    for d in dirs:
        r = load(d)
        if not r.get("anchor"):
            continue
        for c in r["cells"]:
            if c["label"] == r["anchor"] or c.get("peer") or c.get("loadgen", "ringpoll") != "ringpoll":
                continue
            e = next((x for x in r["cells"] if x["workload"]["name"] == c["workload"]["name"]
                      and x["label"] == r["anchor"] and x.get("loadgen", "ringpoll") == "ringpoll"), None)
            if not e:
                continue
            for run in c["runs"]:
                if run.get("slot") is None:
                    continue
                s, cost = run["slot"], run["cpu_us_per_req"]
                base = {x["slot"]: x["cpu_us_per_req"] for x in e["runs"]
                        if x["round"] == run["round"] and x.get("slot") is not None}
                near = [base[t] for t in (s - 1, s + 1) if t in base]
                if near and cost > 0:
                    g = rows.setdefault((c["workload"]["name"], c["label"]), {})
                    g.setdefault("beside", []).append(math.log(cost) - sum(map(math.log, near)) / len(near))
                    for t, b in base.items():
                        if abs(t - s) >= 3 and b > 0:
                            g.setdefault("far", []).append(math.log(cost / b))
    if not rows:
        return ""
    out.append("Per-round noise against how far apart the two runs of a ratio were (anchored runs above, "
               "process CPU): the standard deviation of ln(x / epoll) over rounds, with x taken against the "
               "two epoll runs beside it, and against each epoll run of its round three or more runs away "
               "(as far apart as a plain shuffled round of six servers puts the two sides of 6 of its 15 "
               "pairs).\n")
    out.append("| workload | x / epoll | rounds | SD beside | SD 3+ runs apart |")
    out.append("|---|---|---|---|---|")

    def sd(v):
        return f"{statistics.stdev(v) * 100:.1f}%" if len(v) > 1 else "-"

    for (w, label), g in sorted(rows.items()):
        out.append(f"| {w} | {label} | {len(g.get('beside', []))} | {sd(g.get('beside', []))} | "
                   f"{sd(g.get('far', []))} |")
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
    extra = distance_table(args)
    if extra:
        sys.stdout.write("\n" + extra)


if __name__ == "__main__":
    main()

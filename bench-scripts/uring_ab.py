#!/usr/bin/env python3
"""Shared driver of the io_uring technique A/B scripts (uring-*-ab.py), also usable alone.

It runs `ringpoll compare` with the technique off and on as two `--variant` rows of the uring
backend: the same run, paired interleaved rounds (both rows once per round, in a shuffled
order), and compare's statistic for each ratio (its 95% interval over the paired rounds, see
crates/compare/src/stats.rs; "no difference detectable" when it spans 1.0). Server: one worker
pinned to CPU 0; load generator on CPU 1. Then it prints, per workload, both rows (req/s,
server CPU µs/req, pinned-core busy µs/req, syscalls/req, p50, p99) and the on/off ratios,
and writes the same as Markdown to OUT/ab.md for docs/BENCHMARKS.md.

Closed loop by default (CPU per request then also depends on how much the worker batches);
`--rate N` runs every workload open loop at N requests/s instead, so that both variants do the
same work per second.

    cargo build --release
    python3 bench-scripts/uring_ab.py NAME FLAG [--off VALUE] [--on VALUE] [options]
    python3 bench-scripts/uring_ab.py send-zc uring-send-zc-min --off 0 --on 1 --workloads echo-16KiB-c64
(FLAG without its leading dashes, so that it is not taken for an option of this script.)
options: --rounds N (5) --duration D (3s) --warmup D (1s) --workloads LIST --rate N --out DIR
         --quick (2 rounds of 300 ms after 200 ms: checks the pipeline, measures nothing)
"""
import argparse
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LOAD_CPU, RINGPOLL, ROOT, SERVER_CPU, ensure_ringpoll  # noqa: E402

# The figures: echo 64 B at 64 and 512 connections, echo 16 KiB, HTTP, proxy 64 B and 16 KiB.
WORKLOADS = ["echo-64B-c64", "echo-64B-c512", "echo-16KiB-c64", "http-c64", "proxy-64B-c64", "proxy-16KiB-c64"]


def rate_spec(name, rate):
    """A built-in workload name as a `--workload` spec at a fixed rate."""
    m = re.fullmatch(r"(echo|proxy)-(\d+(?:B|KiB|MiB))-c(\d+)", name) or re.fullmatch(r"(http)-c(\d+)", name)
    if not m:
        sys.exit(f"--rate: cannot turn workload '{name}' into a fixed-rate one")
    if m.group(1) == "http":
        return f"http conns={m.group(2)} rate={rate} name={name}-r{rate}"
    return f"{m.group(1)} size={m.group(2)} conns={m.group(3)} rate={rate} name={name}-r{rate}"


def parser(name=None, flag=None, workloads=None, doc=None):
    ap = argparse.ArgumentParser(description=(doc or __doc__).split("\n")[0])
    if name is None:
        ap.add_argument("name", help="short name of the technique (the rows are NAME-off and NAME-on)")
        ap.add_argument("flag", help="the `ringpoll serve` flag without its dashes, e.g. uring-bundle")
    ap.add_argument("--off", default="off", help="the flag's value for the A row (default: off)")
    ap.add_argument("--on", default="on", help="the flag's value for the B row (default: on)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", default="3s")
    ap.add_argument("--warmup", default="1s")
    ap.add_argument("--workloads", default=",".join(workloads or WORKLOADS))
    ap.add_argument("--rate", type=int, help="open loop at this many requests/s (every workload)")
    ap.add_argument("--out", help="output directory (default: bench-out/ab-NAME)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 300 ms: checks the pipeline only")
    return ap


def fmt_iv(v):
    iv = v and v.get("interval")
    if not iv:
        return "-"
    return f"{iv['ratio']:.2f}× ({iv['lo']:.2f}–{iv['hi']:.2f})"


def verdict(r, w, a, b, metric):
    for v in r.get("verdicts", []):
        if v["workload"] == w and v["a"] == a and v["b"] == b and v["metric"] == metric:
            return v
    return None


def report(r, name, off, on):
    """The Markdown table and verdict lines of one A/B."""
    out = [f"#### {name}: `{off}` vs `{on}`\n",
           f"`{r['command']}` — Linux {r['machine']['kernel']}, {r['machine']['date_utc']}, "
           f"{r['repeat']} paired rounds of {r['duration_s']:.1f} s after {r['warmup_s']:.1f} s.\n",
           "| workload | row | req/s | CPU µs/req | core µs/req | syscalls/req | p50 µs | p99 µs | on / off CPU (95% CI) | on / off core busy |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    names = []
    for c in r["cells"]:
        if c["workload"]["name"] not in names:
            names.append(c["workload"]["name"])
    lines = []
    for w in names:
        for label in (off, on):
            c = next((c for c in r["cells"] if c["workload"]["name"] == w and c["label"] == label), None)
            if c is None:
                continue
            if c.get("error") or not c["runs"]:
                why = (c.get("error") or "no runs").strip().split("\n")[0].replace("|", "/")
                out.append(f"| {w} | {label} | failed: {why} | | | | | | | |")
                continue
            m = c["median"]
            ratio = ""
            core = ""
            if label == on:
                ratio = fmt_iv(verdict(r, w, on, off, "process_cpu"))
                core = fmt_iv(verdict(r, w, on, off, "core_busy"))
                v = verdict(r, w, on, off, "process_cpu")
                if v:
                    lines.append(f"- {w}: {v['text']}")
            sc = m.get("syscalls_per_req")
            out.append(f"| {w} | {label} | {m['rps']:.0f} | {m['cpu_us_per_req']:.2f} | "
                       f"{(m.get('core_us_per_req') or 0):.2f} | {'-' if sc is None else f'{sc:.3f}'} | "
                       f"{m['p50_us']:.0f} | {m['p99_us']:.0f} | {ratio} | {core} |")
    if r.get("skipped"):
        out.append("\nNot run: " + "; ".join(r["skipped"]) + ".")
    return "\n".join(out + [""] + lines) + "\n"


def run(name, flag, args):
    ensure_ringpoll()
    off, on = f"{name}-off", f"{name}-on"
    out = args.out or os.path.join(ROOT, "bench-out", f"ab-{name}")
    cmd = [RINGPOLL, "compare", "--variant", f"{off}=uring {flag} {args.off}", "--variant", f"{on}=uring {flag} {args.on}",
           "--server-cpu", SERVER_CPU, "--load-cpu", LOAD_CPU, "--out", out]
    if args.quick:
        cmd += ["--rounds", "2", "--duration", "300ms", "--warmup", "200ms"]
    else:
        cmd += ["--rounds", str(args.rounds), "--duration", args.duration, "--warmup", args.warmup]
    workloads = [w for w in args.workloads.split(",") if w]
    if args.rate:
        for w in workloads:
            cmd += ["--workload", rate_spec(w, args.rate)]
    else:
        cmd += ["--workloads", ",".join(workloads)]
    print("+ " + " ".join(f"'{a}'" if " " in a else a for a in cmd), flush=True)
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        sys.exit(f"ringpoll compare failed (exit {rc}) before writing {path}")
    with open(path) as f:
        r = json.load(f)
    md = report(r, name, off, on)
    with open(os.path.join(out, "ab.md"), "w") as f:
        f.write(md)
    print(md)
    failed = [c["label"] for c in r["cells"] if c.get("error")]
    if failed:
        print(f"note: {', '.join(sorted(set(failed)))} failed to run (does this ringpoll take {flag}?)", file=sys.stderr)
    print(f"wrote {out}/ab.md (and compare's results.json, report.md, plots)")
    return 1 if rc not in (0,) or failed else 0


def technique_main(name, flag, doc, workloads=None):
    """Entry point of a per-technique script: the driver with its name and flag fixed."""
    args = parser(name, flag, workloads, doc).parse_args()
    sys.exit(run(name, flag, args))


if __name__ == "__main__":
    a = parser().parse_args()
    sys.exit(run(a.name, "--" + a.flag.lstrip("-"), a))

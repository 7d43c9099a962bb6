#!/usr/bin/env python3
"""How the host's noise looks over time: one server, many short runs in a row.

usage: python3 bench-scripts/host-regimes.py [RUNS] [--out MD]      (default 45 runs, ~2 min)

One `ringpoll serve --backend epoll --mode echo` (one worker, CPU 0) stays up; RUNS loads of
2 s (`ringpoll load -c 512 -t 1`, CPU 1) follow each other. For every run it records the
server's CPU µs per request (utime+stime from /proc over the load's window / requests) and,
just before the load, a fixed-work probe on CPU 0 (pipe write+read round trips, timed): does
the CPU itself get slower when the server does?

What it showed on this VM (docs/BENCHMARKS.md): the cost per request sits on one level for
a few seconds to a minute, then jumps by up to 50% to another, while the probe moves by about
a tenth as much. So the noise is not a slower CPU that a calibration could divide out; it is a
regime of the whole loopback path. That is why `ringpoll compare` runs many short rounds: the shorter a
round, the fewer paired runs fall on either side of a switch.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LOAD_CPU, RINGPOLL, SERVER_CPU, emit, ensure_ringpoll  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def probe_ns(rounds=20000):
    """ns per 64-byte pipe write+read on this process's CPU."""
    r, w = os.pipe()
    buf = b"x" * 64
    try:
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            os.write(w, buf)
            os.read(r, 64)
        return (time.perf_counter_ns() - t0) / rounds
    finally:
        os.close(r)
        os.close(w)


def regimes(costs, tol=0.06):
    """Consecutive runs within ±tol of their level's first run, as (start, length, mean)."""
    out = []
    for i, c in enumerate(costs):
        if out and abs(c / costs[out[-1][0]] - 1) <= tol:
            s, n, _ = out[-1]
            out[-1] = (s, n + 1, sum(costs[s:s + n + 1]) / (n + 1))
        else:
            out.append((i, 1, c))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="?", type=int, default=45)
    ap.add_argument("--out", help="write the markdown summary here (default: stdout)")
    a = ap.parse_args()
    if not 3 <= a.runs <= 1000:
        sys.exit("RUNS must be 3 to 1000")
    ensure_ringpoll()
    srv = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, RINGPOLL, "serve", "--listen", "127.0.0.1:0", "--mode", "echo",
         "--backend", "epoll", "--workers", "1", "--no-pin"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    rows = []
    try:
        line = srv.stdout.readline()
        if not line.startswith("listening on "):
            sys.exit(f"server did not start: {line!r}")
        addr = line.split()[-1]
        os.sched_setaffinity(0, {int(SERVER_CPU)})  # the probe runs where the server runs
        start = time.monotonic()
        for i in range(a.runs):
            pr = probe_ns()
            t0 = cpu_ticks(srv.pid)
            out = subprocess.run(
                ["taskset", "-c", LOAD_CPU, RINGPOLL, "load", "--mode", "echo", "-c", "512", "-t", "1",
                 "--duration", "2s", "--size", "64", "--json", addr],
                capture_output=True, text=True, timeout=60)
            t1 = cpu_ticks(srv.pid)
            if out.returncode != 0:
                sys.exit(f"load failed: {out.stderr.strip()}")
            reqs = json.loads(out.stdout)["requests"]
            rows.append((time.monotonic() - start, (t1 - t0) / TICK * 1e6 / reqs, pr))
            print(f"  run {i + 1:3}: {rows[-1][1]:5.2f} µs CPU/req, probe {pr:6.0f} ns", file=sys.stderr)
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()

    costs = [r[1] for r in rows]
    probes = [r[2] for r in rows]
    per_run = rows[-1][0] / len(rows)
    levels = regimes(costs)
    md = []
    p = md.append
    p(f"`python3 bench-scripts/host-regimes.py {a.runs}`: one epoll echo server (one worker, CPU 0) kept up, "
      f"{a.runs} loads of 2 s in a row (`ringpoll load -c 512 -t 1`, CPU 1), {per_run:.1f} s apart; before each, "
      "a fixed-work probe on CPU 0 (64-byte pipe write+read round trips).\n")
    p("| runs | seconds | server CPU µs/req (mean) | probe ns (mean) |")
    p("|---|---|---|---|")
    for s, n, mean in levels:
        pm = sum(probes[s:s + n]) / n
        p(f"| {s + 1}–{s + n} | {n * per_run:.0f} | {mean:.2f} | {pm:.0f} |")
    lo, hi = min(costs), max(costs)
    plo, phi = sorted(probes)[len(probes) // 10], sorted(probes)[-len(probes) // 10 - 1]
    p("")
    p(f"Server cost per request: {lo:.2f} to {hi:.2f} µs ({hi / lo:.2f}×), in {len(levels)} stretches of runs "
      f"within ±6% of each other. The probe's 10th to 90th percentile: {plo:.0f} to {phi:.0f} ns "
      f"({phi / plo:.2f}×).")
    emit(md, a.out)


if __name__ == "__main__":
    main()

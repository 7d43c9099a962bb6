#!/usr/bin/env python3
"""How far apart two measurements of one server drift, against how long each one is.

usage: python3 bench-scripts/host-timescales.py [SECONDS] [--out MD]   (default 120 s)

One `ringpoll serve --backend epoll --mode echo --metrics` (one worker, CPU 0) under one
steady `ringpoll load -c 512 -t 1` (CPU 1) for SECONDS. Every 100 ms this script (on CPU 1)
reads the server's CPU time (/proc/PID/task/*/schedstat, ns) and its received-bytes counter.
It then cuts the series into windows of 0.1 s to 8 s and, for each length, gives the
standard deviation of ln(cost) between adjacent windows: how different two measurements of
the same server are when taken one right after the other, each that long.

What it showed on this VM (docs/BENCHMARKS.md, "How reproducible the verdicts are"): about
3% at every length from 0.1 s to 4 s, more beyond. Averaging longer does not bring two
neighbouring windows closer; so a paired comparison gains by many short slots side by side,
which is how `ringpoll compare` measures its anchored rounds (crates/compare/src/interleave.rs):
the SD of a difference times the square root of the slot length (the noise of a mean over a
fixed time) falls with the slot.
"""
import argparse
import glob
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LOAD_CPU, emit, ensure_ringpoll, load_cmd, start_ringpoll  # noqa: E402

STEP = 0.1


def cpu_ns(pid):
    total = 0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(f) as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def received(metrics):
    with urllib.request.urlopen(metrics, timeout=2) as r:
        body = r.read().decode()
    return sum(float(l.split()[-1]) for l in body.splitlines() if l.startswith("ringpoll_received_bytes_total{"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seconds", nargs="?", type=int, default=120)
    ap.add_argument("--out", help="write the markdown summary here (default: stdout)")
    a = ap.parse_args()
    if not 20 <= a.seconds <= 3600:
        sys.exit("SECONDS must be 20 to 3600")
    ensure_ringpoll()
    srv = start_ringpoll("echo", "epoll", "--metrics", "127.0.0.1:0")
    load = None
    samples = []
    try:
        mline = srv.proc.stdout.readline()
        if not mline.startswith("metrics on "):
            sys.exit(f"server gave no metrics address: {mline!r}")
        metrics = mline.split()[-1]
        load = subprocess.Popen(
            load_cmd("echo", 512, srv.addr, a.seconds + 5),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.sched_setaffinity(0, {int(LOAD_CPU)})
        time.sleep(2)
        end = time.monotonic() + a.seconds
        nxt = time.monotonic()
        while time.monotonic() < end:
            if load.poll() is not None:
                sys.exit(f"the load generator exited early ({load.returncode})")
            samples.append((cpu_ns(srv.proc.pid), received(metrics)))
            nxt += STEP
            time.sleep(max(0.0, nxt - time.monotonic()))
    finally:
        if load is not None and load.poll() is None:
            load.terminate()
            load.wait()
        srv.stop()

    steps = [(c1 - c0, b1 - b0) for (c0, b0), (c1, b1) in zip(samples, samples[1:]) if c1 > c0 and b1 > b0]
    if len(steps) < 40:
        sys.exit(f"too few samples ({len(steps)})")
    mean_us = statistics.mean(c / (b / 64) for c, b in steps) / 1e3
    md = []
    p = md.append
    p(f"`python3 bench-scripts/host-timescales.py {a.seconds}`: one epoll echo server (one worker, CPU 0) under one "
      f"steady `ringpoll load -c 512 -t 1` (CPU 1), its CPU time and request count read every {STEP:.1f} s for "
      f"{a.seconds} s ({mean_us:.2f} µs CPU per request on average). For windows of each length: the standard "
      "deviation of ln(cost) between adjacent windows, and that times √(length), which is what the noise of a "
      "paired mean over a fixed time goes with.\n")
    p("| window | adjacent pairs | SD between adjacent windows | × √(window/s) |")
    p("|---|---|---|---|")
    for m in (1, 2, 5, 10, 20, 40, 80):
        blocks = [math.log(sum(c for c, _ in steps[i:i + m]) / sum(b for _, b in steps[i:i + m]))
                  for i in range(0, len(steps) - m + 1, m)]
        diffs = [y - x for x, y in zip(blocks, blocks[1:])]
        if len(diffs) < 5:
            break
        sd = math.sqrt(statistics.mean(d * d for d in diffs))
        p(f"| {m * STEP:.1f} s | {len(diffs)} | {sd * 100:.2f}% | {sd * math.sqrt(m * STEP) * 100:.2f} |")
    emit(md, a.out)


if __name__ == "__main__":
    main()

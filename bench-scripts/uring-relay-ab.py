#!/usr/bin/env python3
"""A/B of the io_uring proxy relays (--uring-relay zero-copy vs copy) at a FIXED request rate.

Closed-loop runs (`ringpoll compare`) let throughput float with the load side (load generator
and upstream share CPU 1), and CPU per request falls as a busier worker batches more; a fixed
rate makes both relays do the same work per second. The relays alternate, one pair per round.

Proxy: `taskset -c 0 ringpoll serve --mode proxy --backend uring --workers 1`; upstream
(`ringpoll serve --mode echo`) and `ringpoll load -c 64 --rate RATE --warmup 2s` on CPU 1.
Per round trip: server CPU (utime+stime from /proc/PID/stat over the measured window), its
user part, perf task-clock, and syscalls (`perf stat -e raw_syscalls:sys_enter -p PID`).

    cargo build --release
    python3 bench-scripts/uring-relay-ab.py SIZE RATE DURATION ROUNDS
    python3 bench-scripts/uring-relay-ab.py 16384 30000 6s 5
    python3 bench-scripts/uring-relay-ab.py 64 40000 6s 5
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LOAD_CPU, RINGPOLL, cpu_times, ensure_ringpoll, start_ringpoll  # noqa: E402


def main():
    size, rate, dur = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    ensure_ringpoll()
    up = start_ringpoll("echo", "epoll", cpu=LOAD_CPU)
    cols = ("req/s", "cpu_us", "user_us", "task_clock_us", "syscalls", "p99_us")
    res = {"zero-copy": [], "copy": []}
    try:
        for _ in range(rounds):
            for relay in res:
                px = start_ringpoll("proxy", "uring", "--upstream", up.addr, "--uring-relay", relay)
                load = subprocess.Popen(["taskset", "-c", LOAD_CPU, RINGPOLL, "load", "-c", "64", "-d", dur,
                                         "--warmup", "2s", "--size", str(size), "--rate", str(rate), "--json",
                                         px.addr], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                time.sleep(2.3)  # connect + warm-up
                t0 = cpu_times(px.proc.pid)
                perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter,task-clock", "-p",
                                         str(px.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                out = load.communicate()[0]
                t1 = cpu_times(px.proc.pid)
                perf.send_signal(2)
                lines = perf.communicate()[1].decode().splitlines()
                px.stop()
                j = json.loads(out)
                n = j["requests"]
                num = lambda key: next((float(l.split(",")[0]) for l in lines if key in l), float("nan"))
                row = (round(j["rps"]), round((sum(t1) - sum(t0)) * 1e6 / n, 2), round((t1[0] - t0[0]) * 1e6 / n, 2),
                       round(num("task-clock") * 1e3 / n, 2), round(num("sys_enter") / n, 3), j["latency_us"]["p99"])
                res[relay].append(row)
                print(relay, dict(zip(cols, row)), flush=True)
    finally:
        up.stop()
    for relay, rows in res.items():
        med = [sorted(r[i] for r in rows)[len(rows) // 2] for i in range(len(cols))]
        print(f"median {relay:9}", dict(zip(cols, med)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A/B of io_uring zero-copy sends (IORING_OP_SEND_ZC, `--uring-send-zc-min`) against plain
sends, for echo at a FIXED request rate, alternating the two servers ROUNDS times.

Echo server: `ringpoll serve --mode echo --backend uring --workers 1 --uring-echo-zero-copy off`
pinned to CPU 0 (echoing through the output buffer: sends straight out of a receive buffer are
never zero-copy), with and without `--uring-send-zc-min 1` (every send zero-copy); `ringpoll load -c CONNS --size
SIZE --rate RATE --warmup 2s` pinned to CPU 1. A fixed rate makes both servers do the same work
per second (closed-loop CPU per request falls as a busier worker batches more). Reported per
round trip: server CPU (utime+stime from /proc/PID/stat over the measured part of the run),
and p99 latency; medians over the rounds.

    cargo build --release
    python3 bench-scripts/uring-send-zc-ab.py SIZE RATE SECONDS ROUNDS [CONNS]
    python3 bench-scripts/uring-send-zc-ab.py 65536 8000 5 3
"""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LOAD_CPU, RINGPOLL, cpu_seconds, ensure_ringpoll, start_ringpoll  # noqa: E402


def main():
    size, rate, secs, rounds = (int(a) for a in sys.argv[1:5])
    conns = int(sys.argv[5]) if len(sys.argv) > 5 else 64
    ensure_ringpoll()
    variants = {"send": [], "send-zc": []}
    print(f"echo {size} B, {conns} connections, {rate} req/s for {secs} s after 2 s; server CPU 0, load CPU {LOAD_CPU}")
    for r in range(1, rounds + 1):
        for name, rows in variants.items():
            # Sends straight out of a receive buffer are never zero-copy: both rows echo through
            # the output buffer, so that the only difference is the send opcode.
            extra = ["--uring-echo-zero-copy", "off"] + (["--uring-send-zc-min", "1"] if name == "send-zc" else [])
            srv = start_ringpoll("echo", "uring", *extra)
            try:
                load = subprocess.Popen(["taskset", "-c", LOAD_CPU, RINGPOLL, "load", "-c", str(conns), "-t1",
                                         "-d", f"{secs}s", "--warmup", "2s", "--size", str(size), "--rate",
                                         str(rate), "--json", srv.addr], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
                time.sleep(2.2)  # connect + warm-up
                c0 = cpu_seconds(srv.proc.pid)
                out = json.loads(load.communicate(timeout=secs + 60)[0])
                c1 = cpu_seconds(srv.proc.pid)
            finally:
                srv.stop()
            n = max(out["requests"], 1)
            row = (out["rps"], (c1 - c0) * 1e6 / n, out["latency_us"]["p99"], sum(out["errors"].values()))
            rows.append(row)
            print(f"round {r} {name:8} {row[0]:>9.0f} req/s {row[1]:>8.2f} µs CPU/req  p99 {row[2]:>8.0f} µs"
                  f"  errors {row[3]}", flush=True)
    for name, rows in variants.items():
        print(f"median {name:8} {statistics.median(r[0] for r in rows):>9.0f} req/s "
              f"{statistics.median(r[1] for r in rows):>8.2f} µs CPU/req  "
              f"p99 {statistics.median(r[2] for r in rows):>8.0f} µs")


if __name__ == "__main__":
    main()

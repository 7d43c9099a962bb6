#!/usr/bin/env python3
"""Load-generator efficiency: `ringpoll load -t1` against `wrk -t1`.

Same server (`ringpoll serve --mode http`, one worker pinned to CPU 0), same pinning for the
load generators (CPU 1), alternated ROUNDS times. Prints requests/s and client CPU
(user+sys of the load generator process, from wait4) per request for every run, and medians.

    python3 bench-scripts/loadgen-vs-wrk.py [ROUNDS] [SECONDS] [CONNECTIONS]
"""
import json
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import LOAD_CPU, RINGPOLL, ensure_ringpoll, start_ringpoll  # noqa: E402

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
secs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
conns = int(sys.argv[3]) if len(sys.argv) > 3 else 64
ensure_ringpoll()
binary = RINGPOLL
srv = start_ringpoll("http", "epoll")
url = srv.target("http")


def run(cmd):
    """Run pinned to CPU 1; return (stdout, client CPU seconds)."""
    p = subprocess.Popen(["taskset", "-c", LOAD_CPU] + cmd, stdout=subprocess.PIPE, text=True)
    out = p.stdout.read()
    _, _, ru = os.wait4(p.pid, 0)
    return out, ru.ru_utime + ru.ru_stime


rows = {"wrk": [], "ringpoll": []}
print(f"server: {url} (ringpoll serve --mode http, 1 worker, CPU 0); load on CPU 1; -c{conns} -d{secs}s")
print(f"{'tool':<9}{'round':>6}{'req/s':>12}{'client µs/req':>16}")
try:
    for r in range(1, rounds + 1):
        out, cpu = run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", url])
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        rows["wrk"].append((rps, cpu * 1e6 / reqs))
        print(f"{'wrk':<9}{r:>6}{rps:>12.0f}{cpu * 1e6 / reqs:>16.2f}")
        out, cpu = run([binary, "load", "-t1", "-c", str(conns), "-d", f"{secs}s", "--json", url])
        j = json.loads(out)
        rows["ringpoll"].append((j["rps"], cpu * 1e6 / j["requests"]))
        print(f"{'ringpoll':<9}{r:>6}{j['rps']:>12.0f}{cpu * 1e6 / j['requests']:>16.2f}")
    for tool, v in rows.items():
        print(f"median {tool:<9} {statistics.median(x[0] for x in v):>10.0f} req/s "
              f"{statistics.median(x[1] for x in v):>8.2f} client µs/req")
finally:
    srv.stop()

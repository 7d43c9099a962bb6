#!/usr/bin/env python3
"""Where a request's server cost goes: system calls by kind, and heap allocations, per request.

For each workload and server, the server runs with one worker pinned to CPU 0 and
`ringpoll load -t1` runs pinned to CPU 1, twice, each time under `perf stat -p SERVER`: first
counting every `syscalls:sys_enter_*` tracepoint, then uprobes on libc's malloc, calloc,
realloc and posix_memalign (every Rust, tokio and nginx allocation goes through one of them).
Counts are divided by the requests the load generator completed. perf's probes add CPU time,
so this script reports counts only; CPU per request comes from `ringpoll compare`.

Needs root (perf probe, tracepoints), `perf` (Debian: linux-perf), target/release/ringpoll;
peers from bench-scripts/build-peers.sh and nginx are used when present.

    python3 bench-scripts/per-request-costs.py [SECONDS] [--out FILE.md]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import SIZES, WORKLOADS, ensure_ringpoll, load_cmd  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
secs = int(args[0]) if args else 5
out_md = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
ensure_ringpoll()
if not shutil.which("perf"):
    sys.exit("perf is not installed (Debian: linux-perf)")

LIBC = next((p for p in ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6",
                         "/usr/lib64/libc.so.6"] if os.path.exists(p)), None)
ALLOC_FNS = ["malloc", "calloc", "realloc", "posix_memalign"]
alloc_events = []
if LIBC:
    for fn in ALLOC_FNS:
        r = subprocess.run(["perf", "probe", "-q", "-x", LIBC, "--add", fn], capture_output=True, text=True)
        if r.returncode == 0 or "already exists" in r.stderr:
            alloc_events.append(f"probe_libc:{fn}")
if not alloc_events:
    print("note: libc uprobes unavailable; allocations are not counted", file=sys.stderr)


def perf_load(pid, mode, conns, target, events, size=64):
    """Run the load (no warm-up) under `perf stat -p PID`; returns (load JSON, counts)."""
    load = load_cmd(mode, conns, target, secs, size=size)
    with tempfile.NamedTemporaryFile("r", suffix=".csv") as f:
        perf = ["perf", "stat", "-x", ",", "-o", f.name, "-p", str(pid)]
        for e in events:
            perf += ["-e", e]
        r = subprocess.run(perf + ["--"] + load, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
        counts = {}
        for line in f.read().splitlines():
            parts = line.split(",")
            if len(parts) > 3 and parts[0].isdigit():
                counts[parts[2].split(":")[-1]] = int(parts[0])
    return json.loads(r.stdout), counts


def measure(mode, conns, srv, size=64):
    """Two runs against one server: system calls (no uprobes, which would slow an allocating
    server down and change how its calls batch), then allocations."""
    pid, target = srv.proc.pid, srv.target(mode)
    try:
        out, sc = perf_load(pid, mode, conns, target, ["raw_syscalls:sys_enter", "syscalls:sys_enter_*"], size)
        reqs = max(out["requests"], 1)
        allocs = None
        if alloc_events:
            a_out, ac = perf_load(pid, mode, conns, target, alloc_events, size)
            allocs = (sum(ac.values()), max(a_out["requests"], 1))
    finally:
        srv.stop()
    return out["rps"], {k: v / reqs for k, v in sc.items()}, allocs


lines = [f"Per-request server costs: `python3 bench-scripts/per-request-costs.py {secs}`; one server worker "
         f"on CPU 0, `ringpoll load -t1 -d {secs}s --warmup 0s` on CPU 1 under `perf stat -p SERVER`; counts "
         "are divided by the requests of the whole run, so connection set-up is included (a few calls and "
         "allocations per connection). Allocations (malloc+calloc+realloc+posix_memalign, libc uprobes) "
         "are counted in a second run against the same server, so the probes cannot change the call mix.", ""]
try:
    for name, mode, conns, servers in WORKLOADS:
        lines += [f"#### {name}", "",
                  "| server | req/s | syscalls/req | syscalls by kind (per request) | allocations / requests |",
                  "|---|---|---|---|---|"]
        for sname, start in servers:
            srv = start()
            if srv is None:
                lines.append(f"| {sname} | not available | | | |")
                continue
            rps, per, allocs = measure(mode, conns, srv, SIZES.get(name, 64))
            total = per.pop("sys_enter", 0.0)
            kinds = sorted(((k.removeprefix("sys_enter_"), v) for k, v in per.items() if v >= 0.005),
                           key=lambda kv: -kv[1])
            alloc_cell = f"{allocs[0]} / {allocs[1]} ({allocs[0] / allocs[1]:.3f})" if allocs else "-"
            lines.append(f"| {sname} | {rps:.0f} | {total:.2f} | "
                         + ", ".join(f"{k} {v:.2f}" for k, v in kinds) + f" | {alloc_cell} |")
            print(lines[-1], flush=True)
        lines.append("")
finally:
    for fn in ALLOC_FNS:
        subprocess.run(["perf", "probe", "-q", "--del", f"probe_libc:{fn}"], capture_output=True)

text = "\n".join(lines) + "\n"
print(text)
if out_md:
    with open(out_md, "w") as f:
        f.write(text)

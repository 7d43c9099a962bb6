#!/usr/bin/env python3
"""Where the server CPU goes: a sampled profile of CPU 0 (the server's CPU), by category.

For each workload and server (see benchlib.WORKLOADS), the server runs with one worker pinned
to CPU 0 and `ringpoll load -t1` on CPU 1; once the load is running, `perf record -e cpu-clock
-C 0` samples CPU 0 for SECONDS (the server's own code, and the kernel work done on its
behalf: system calls, TCP/IP processing of loopback packets, softirqs, wake-ups). Each sample
is put in a category by the function it landed in, and every category is shown in µs per
request: share of samples x SECONDS / requests in that time (the load's rate x SECONDS).
Software sampling (cpu-clock) is used because this machine has no hardware counters.

Needs root and perf (Debian: linux-perf); peers from bench-scripts/build-peers.sh and nginx
are used when present.

    python3 bench-scripts/cpu-profile.py [SECONDS] [--only WORKLOAD] [--idle N]

`--idle N` adds N idle connections to the load (`ringpoll load --idle N`), e.g. to see what
the epoll re-arm costs when the interest list is large:
    python3 bench-scripts/cpu-profile.py 4 --only echo-64B-c64 --idle 15000
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import SERVER_CPU, SIZES, WORKLOADS, ensure_ringpoll, load_cmd  # noqa: E402

ap = argparse.ArgumentParser(description="CPU 0 profile by category, per request")
ap.add_argument("seconds", nargs="?", type=int, default=4)
ap.add_argument("--only", help="one workload of benchlib.WORKLOADS")
ap.add_argument("--idle", type=int, default=0, help="extra idle connections held by the load")
opts = ap.parse_args()
secs, only, idle = opts.seconds, opts.only, opts.idle
# Idle connections are opened first: give them time before sampling.
settle = 1.5 + idle / 5000
ensure_ringpoll()
if not shutil.which("perf"):
    sys.exit("perf is not installed (Debian: linux-perf)")

# First match wins; patterns apply to the function a sample landed in.
CATEGORIES = [
    ("idle", r"^(pv_native_safe_halt|default_idle|cpu_idle|do_idle|intel_idle|acpi_idle|poll_idle)"),
    ("io_uring", r"^(__)?io_"),
    ("epoll/poll/select", r"^(ep_|__ep_|do_epoll|epoll|__x64_sys_epoll|do_sys_poll|do_poll|core_sys_select|"
                          r"do_select|__pollwait|pollwake|sock_poll|tcp_poll|__x64_sys_poll|__x64_sys_select)"),
    ("TCP/IP, skbs, copies", r"^(tcp|__tcp|ip_|__ip|inet|__inet|skb|__skb|kfree_skb|__kfree_skb|sk_|__sk_|sock|"
                             r"__sock|__sys_send|__sys_recv|__dev|dev_|loopback|net_|__netif|netif|process_backlog|"
                             r"bbr|__alloc_skb|_copy_|copy_|__check_object|validate_xmit|napi|__napi|lock_sock|"
                             r"release_sock|__release_sock|ipv4|raw_v4|nf_|csum|ip_send_check|__put_user|"
                             r"__get_user|rep_movs|memcpy|memset|__memcpy|__memset)"),
    ("syscall entry/exit, fd lookup", r"^(entry_|syscall|do_syscall|__x64_sys|x64_sys|__do_sys|fget|fput|__fget|"
                                      r"__fput|sock_from_file|__fdget|fdget|exit_to_user|__rseq|rseq|"
                                      r"__task_pid_nr|__se_sys|__do_fast_syscall)"),
    ("scheduler, wake-ups, irq, timers", r"^(_raw_spin|raw_spin|native_queued|queued_spin|schedule|__schedule|"
                                         r"finish_task|try_to_wake|ttwu|enqueue|dequeue|update_|pick_|__wake|"
                                         r"wake_up|__update|psi_|select_task|set_next|put_prev|sched|hrtimer|"
                                         r"ktime|read_tsc|native_sched|__cgroup|cpuacct|rcu|__rcu|irq|__irq|"
                                         r"sysvec|smp_|__smp|native_smp|handle_softirqs|do_softirq|__do_softirq|"
                                         r"local_bh|__local_bh|llist|__flush_smp|flush_smp|task_work|"
                                         r"__set_task|check_preempt|resched|__resched|reweight|avg_vruntime|"
                                         r"place_entity|vruntime|__calc_delta|__enqueue|__dequeue)"),
    ("slab/page allocation", r"^(kmem|__kmem|kfree|__slab|slab|___slab|kmalloc|__kmalloc|mod_objcg|obj_cgroup|"
                             r"refill_obj|page_|__page|free_|alloc_|__alloc|mod_memcg|memcg|__mod_memcg|"
                             r"consume_obj|__refill)"),
]


def category(dso_kind, sym):
    if dso_kind == ".":
        return "user space"
    for name, pat in CATEGORIES:
        if re.match(pat, sym):
            return name
    return "other kernel"


def profile(srv, mode, conns, size):
    load = subprocess.Popen(load_cmd(mode, conns, srv.target(mode), secs + 2 + int(settle), size=size, idle=idle),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(settle)
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "perf.data")
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999", "-C", SERVER_CPU, "-o", data,
                        "--", "sleep", str(secs)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym", "--stdio",
                                 "-g", "none"], capture_output=True, text=True).stdout
    out = json.loads(load.communicate(timeout=secs + 60)[0])
    shares = {}
    for line in report.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
        if m:
            k = category(m[2], m[3])
            shares[k] = shares.get(k, 0.0) + float(m[1]) / 100
    return out["rps"], shares


flags = (f" --only {only}" if only else "") + (f" --idle {idle}" if idle else "")
print(f"CPU 0 profile: `python3 bench-scripts/cpu-profile.py {secs}{flags}`; one server worker on CPU 0, "
      f"`ringpoll load -t1` on CPU 1, `perf record -e cpu-clock -F 4999 -C 0` for {secs} s during the load. "
      "Figures: µs of CPU 0 per request, by the function each sample landed in.\n")
names = [c[0] for c in CATEGORIES if c[0] != "idle"] + ["user space", "other kernel"]
for wname, mode, conns, servers in WORKLOADS:
    if only and wname != only:
        continue
    cols = []
    for sname, start in servers:
        srv = start()
        if srv is None:
            continue
        try:
            rps, shares = profile(srv, mode, conns, SIZES.get(wname, 64))
        finally:
            srv.stop()
        cols.append((sname, rps, shares))
        print(f"  {wname} {sname}: {rps:.0f} req/s", file=sys.stderr, flush=True)
    print(f"#### {wname}" + (f" + {idle} idle connections" if idle else "") + "\n")
    print("| µs of CPU 0 per request | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for k in names:
        print(f"| {k} | " + " | ".join(f"{c[2].get(k, 0.0) * 1e6 / c[1]:.2f}" for c in cols) + " |")
    model = ["io_uring", "epoll/poll/select", "syscall entry/exit, fd lookup", "user space"]
    print("| *I/O model and server code (the four rows that differ by design)* | "
          + " | ".join(f"*{sum(c[2].get(k, 0.0) for k in model) * 1e6 / c[1]:.2f}*" for c in cols) + " |")
    busy = [sum(v for k, v in c[2].items() if k != "idle") for c in cols]
    print("| **busy total** | " + " | ".join(f"**{b * 1e6 / c[1]:.2f}**" for b, c in zip(busy, cols)) + " |")
    print("| CPU 0 busy | " + " | ".join(f"{b:.0%}" for b in busy) + " |")
    print("| req/s | " + " | ".join(f"{c[1]:.0f}" for c in cols) + " |\n", flush=True)

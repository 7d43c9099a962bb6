#!/usr/bin/env python3
"""Assemble docs/BENCHMARKS.md from `ringpoll compare` outputs (results.json + report.md + SVGs).

usage: assemble.py MAIN_DIR IDLE_DIR [COSTS_MD PROFILE_MD] > docs/BENCHMARKS.md
       assemble.py --readme README.md MAIN_DIR   (rewrites the headline table in README.md)
COSTS_MD and PROFILE_MD are the outputs of per-request-costs.py and cpu-profile.py, included
as they are when present.
Every figure comes from the results.json files; the text states the ratios it computes.
"""
import json
import os
import sys


def load(d):
    with open(os.path.join(d, "results.json")) as f:
        return json.load(f)


def cells(r, workload=None):
    return [c for c in r["cells"] if c["error"] is None and (workload is None or c["workload"]["name"] == workload)]


def find(r, workload, label):
    for c in cells(r, workload):
        if c["label"] == label:
            return c["median"]
    return None


def cpu_min(c):
    return min(x["cpu_us_per_req"] for x in c["runs"]) if c["runs"] else None


def find_cell(r, workload, label):
    for c in cells(r, workload):
        if c["label"] == label:
            return c
    return None


def best_peer(r, workload):
    peers = [c for c in cells(r, workload) if c["peer"] and c["loadgen"] == "ringpoll"]
    return min(peers, key=lambda c: c["median"]["cpu_us_per_req"]) if peers else None


def rel(doc_dir, d, name):
    return os.path.relpath(os.path.join(d, name), doc_dir)


def headline(m):
    """The headline table: epoll and uring beside the best peer, medians."""
    lines = []
    p = lines.append
    order = [c["workload"]["name"] for c in m["cells"]]
    rows = []
    for w in sorted({c["workload"]["name"] for c in cells(m)}, key=order.index):
        bp = best_peer(m, w)
        ep = find(m, w, "epoll")
        ur = find(m, w, "uring")

        def ratio(a, b):
            return f"{a['cpu_us_per_req'] / b['cpu_us_per_req']:.2f}x" if a and b and b["cpu_us_per_req"] > 0 else "-"

        rows.append((w, ep, ur, bp, ratio(ep, bp["median"] if bp else None),
                     ratio(ur, bp["median"] if bp else None), ratio(ur, ep)))
    p("| workload | epoll CPU µs/req | uring CPU µs/req | best peer (CPU µs/req) | epoll / peer | uring / peer | uring / epoll |")
    p("|---|---|---|---|---|---|---|")
    for w, ep, ur, bp, a, b, c in rows:
        peer = f"{bp['label']} ({bp['median']['cpu_us_per_req']:.2f})" if bp else "-"
        fmt = lambda x: f"{x['cpu_us_per_req']:.2f}" if x else "-"
        p(f"| {w} | {fmt(ep)} | {fmt(ur)} | {peer} | {a} | {b} | {c} |")
    return lines


def update_readme(readme, main_dir):
    """Replace the table between README's headline markers with this run's headline."""
    with open(readme) as f:
        text = f.read()
    begin, end = "<!-- headline -->\n", "<!-- /headline -->"
    i, j = text.index(begin) + len(begin), text.index(end)
    with open(readme, "w") as f:
        f.write(text[:i] + "\n".join(headline(load(main_dir))) + "\n" + text[j:])


def main():
    if sys.argv[1] == "--readme":
        update_readme(sys.argv[2], sys.argv[3])
        return
    main_dir, idle_dir = sys.argv[1], sys.argv[2]
    extras = [x for x in sys.argv[3:5] if os.path.exists(x)]
    doc_dir = "docs"
    m = load(main_dir)
    out = []
    p = out.append
    mach = m["machine"]
    p("# Benchmarks\n")
    p("All figures on this page come from one run of each command below, on this machine:")
    p(f"{mach['cpus']} CPUs ({mach['cpu_model']}), Linux {mach['kernel']}, {mach['date_utc']}. ")
    p("The server under test runs **one worker pinned to CPU 0**; the load generator runs on **CPU 1** "
      "(`taskset`); reference servers run the same way. Figures drift between runs, so compare rows "
      "within one table, not across pages.\n")
    p("Regenerate everything with `bash bench-scripts/regen-docs.sh`, which runs:\n")
    p("```sh")
    p(m["command"])
    if os.path.exists(os.path.join(idle_dir, "results.json")):
        p(load(idle_dir)["command"])
    p("```\n")
    p("How each column is measured: requests/s and latency percentiles come from the load generator's "
      "HDR histogram; **CPU µs/req** is the server's utime+stime (from /proc) over the load's measured "
      "window divided by the requests in it; **syscalls/req** is the server's own count of the system calls "
      "it made (every call goes through one counted layer); **user %** is the user-space share of server CPU.\n")

    p("## Headline\n")
    out.extend(headline(m))
    p("")
    p("This machine is a shared 2-vCPU VM and its noise is bimodal: a cell's repeats cluster around two "
      "levels some 25% apart (host contention comes and goes). The medians above are what `compare` "
      "reports; since noise only ever adds CPU time, the **minimum over the repeats** is the steadier "
      "estimate of a server's own cost, so here are the same ratios on minima:\n")
    p("| workload | epoll min | uring min | best peer min | epoll / peer | uring / peer | uring / epoll |")
    p("|---|---|---|---|---|---|---|")
    order = [c["workload"]["name"] for c in m["cells"]]
    for w in sorted({c["workload"]["name"] for c in cells(m)}, key=order.index):
        e, u = find_cell(m, w, "epoll"), find_cell(m, w, "uring")
        peers = [c for c in cells(m, w) if c["peer"] and c["loadgen"] == "ringpoll"]
        bp = min(peers, key=cpu_min) if peers else None
        em, um, bm = (cpu_min(x) if x else None for x in (e, u, bp))
        f = lambda v: f"{v:.2f}" if v else "-"
        q = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
        p(f"| {w} | {f(em)} | {f(um)} | {bp['label'] + ' ' + f(bm) if bp else '-'} | {q(em, bm)} | {q(um, bm)} | {q(um, em)} |")
    p("")
    p(f"![throughput]({rel(doc_dir, main_dir, 'throughput.svg')})\n")
    p(f"![server CPU per request]({rel(doc_dir, main_dir, 'cpu.svg')})\n")
    p(f"![latency]({rel(doc_dir, main_dir, 'latency.svg')})\n")
    p("## Full comparison\n")
    with open(os.path.join(main_dir, "report.md")) as f:
        body = f.read().split("\n", 1)[1]
    p(body.replace("](", f"]({os.path.relpath(main_dir, doc_dir)}/"))

    if os.path.exists(os.path.join(idle_dir, "results.json")):
        r = load(idle_dir)
        p("\n## The idle-connection experiment\n")
        p("64 active ping-pong connections (64-byte echo) plus N idle connections held open by "
          "`ringpoll load --idle N`; one server worker on CPU 0, load on CPU 1. The claim under test: "
          "select and poll cost grows with every watched descriptor, idle or not, while epoll and "
          "io_uring do not.\n")
        p(f"![idle]({rel(doc_dir, idle_dir, 'idle.svg')})\n")
        labels = []
        for c in cells(r):
            if c["label"] not in labels:
                labels.append(c["label"])
        levels = sorted({c["workload"]["idle"] for c in cells(r)})
        p("Each cell: server CPU µs per active round trip, median of the repeats / minimum of the repeats "
          "(round trips/s, syscalls per round trip). The growth column compares the largest idle count "
          "with zero idle, on medians and on minima.\n")
        p("| backend | " + " | ".join(f"idle {n}" for n in levels) + " | CPU at max idle / at 0 | server RSS per idle connection |")
        p("|---|" + "---|" * (len(levels) + 2))
        for lab in labels:
            row = []
            by = {c["workload"]["idle"]: c["median"] for c in cells(r) if c["label"] == lab}
            mins = {c["workload"]["idle"]: cpu_min(c) for c in cells(r) if c["label"] == lab}
            for n in levels:
                x = by.get(n)
                row.append(f"{x['cpu_us_per_req']:.2f} / {mins[n]:.2f} ({x['rps']:.0f}, {x['syscalls_per_req'] or 0:.2f})" if x else "n/a")
            top = max(by) if by else 0
            growth = (f"{by[top]['cpu_us_per_req'] / by[0]['cpu_us_per_req']:.2f}x / {mins[top] / mins[0]:.2f}x at {top}"
                      if 0 in by and top and by[0]["cpu_us_per_req"] > 0 else "-")
            rss = f"{(by[top]['rss_kib'] - by[0]['rss_kib']) * 1024 / top:.0f} B" if 0 in by and top and by[top].get('rss_kib') else "-"
            p(f"| {lab} | " + " | ".join(row) + f" | {growth} | {rss} |")
        if r.get("skipped"):
            p("\nNot run: " + "; ".join(r["skipped"]) + ".")
        # The verdict, computed from the minima (see above for why minima).
        def mins_of(lab):
            return {c["workload"]["idle"]: cpu_min(c) for c in cells(r) if c["label"] == lab}
        p("\n**What the data says.**")
        pm = mins_of("poll")
        if pm and 0 in pm:
            steps = ", ".join(f"{n}: {pm[n]:.1f} µs ({pm[n] / pm[0]:.1f}x)" for n in sorted(pm) if n)
            p(f"poll's CPU per active round trip grows with the idle descriptors it scans on every call "
              f"(0 idle: {pm[0]:.1f} µs; {steps}). The growth is faster than linear at the top: as each "
              f"call gets slower, fewer active events share the cost of one scan.")
        sm = mins_of("select")
        if sm:
            p(f"select cannot watch descriptor 1024 or above, so it stops at its cap; below it "
              f"(500 idle) it costs {max(sm.values()) / sm[0]:.2f}x its zero-idle figure.")
        flat = {}
        for lab in ("epoll", "epoll-lt", "epoll-et", "uring"):
            mm = mins_of(lab)
            if mm and 0 in mm:
                flat[lab] = max(v / mm[0] for v in mm.values())
        if flat:
            listed = ", ".join(f"{lab} {w:.2f}x" for lab, w in flat.items())
            over = [lab for lab, w in flat.items() if w > 1.2]
            p("For epoll (all three modes) and io_uring, the largest ratio to their zero-idle figure at "
              f"any idle level is {listed} (on minima; medians swing with the machine's noise, see the "
              "table).")
            if not over:
                p("The expectation (within about 1.2x) holds.")
            else:
                top = max(pm) if pm and 0 in pm else None
                contrast = (f" poll at {top} idle costs {pm[top] / pm[0]:.1f}x, so the contrast the experiment "
                            "is about stands, but" if top else "")
                p(f"The expectation (within about 1.2x) is **not met** in this run by {', '.join(over)};{contrast} "
                  "the 1.2x bound does not hold on every run on this machine.")
    if extras:
        p("\n## Where the server's time goes\n")
        p("Two diagnostics explain the CPU figures above; each comes from its own run of the command "
          "it names (same pinning), so compare within a table. The first counts what each server asks "
          "of the kernel per request (which system calls, how many heap allocations). The second splits "
          "the CPU time of the server's core by where it is spent: the rows an I/O model controls (the "
          "event API, system-call entry and exit, the server's own code) against the TCP/IP work on "
          "loopback that every server pays for the same bytes, which is most of the total.\n")
        for x in extras:
            with open(x) as f:
                p(f.read().rstrip() + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Assemble docs/BENCHMARKS.md from `ringpoll compare` outputs (results.json + report.md + SVGs).

usage: assemble.py --main DIR --idle DIR [--sweep DIR] [--veth DIR] [--costs MD] [--profile MD]
                   > docs/BENCHMARKS.md
       assemble.py --readme README.md --main DIR   (rewrites the headline in README.md)
COSTS and PROFILE are the outputs of per-request-costs.py and cpu-profile.py, included as
they are when present. Every figure comes from the results.json files; the verdicts and
their intervals are the ones `ringpoll compare` computed (paired rounds, 95% CI).
"""
import argparse
import json
import os
import sys


def load(d):
    with open(os.path.join(d, "results.json")) as f:
        return json.load(f)


def have(d):
    return d and os.path.exists(os.path.join(d, "results.json"))


def cells(r, workload=None):
    return [c for c in r["cells"] if c["error"] is None and c["runs"]
            and (workload is None or c["workload"]["name"] == workload)]


def find(r, workload, label):
    for c in cells(r, workload):
        if c["label"] == label:
            return c["median"]
    return None


def cpu_min(c):
    return min(x["cpu_us_per_req"] for x in c["runs"]) if c["runs"] else None


def best_peer(r, workload):
    peers = [c for c in cells(r, workload) if c["peer"] and c["loadgen"] == "ringpoll"]
    return min(peers, key=lambda c: c["median"]["cpu_us_per_req"]) if peers else None


def rel(doc_dir, d, name):
    return os.path.relpath(os.path.join(d, name), doc_dir)


def workloads(r):
    order = []
    for c in r["cells"]:
        if c["workload"]["name"] not in order:
            order.append(c["workload"]["name"])
    return [w for w in order if cells(r, w)]


def verdict(r, w, a, b, metric="process_cpu"):
    for v in r.get("verdicts", []):
        if v["workload"] == w and v["a"] == a and v["b"] == b and v["metric"] == metric:
            return v
    return None


def cell_text(v):
    """`**0.74x** (0.70-0.79)` when the interval excludes 1.0, else `no difference (0.93-1.08)`."""
    if not v or not v.get("interval"):
        return "-"
    iv = v["interval"]
    if iv["lo"] <= 1.0 <= iv["hi"]:
        return f"no difference ({iv['lo']:.2f}–{iv['hi']:.2f})"
    return f"**{iv['ratio']:.2f}×** ({iv['lo']:.2f}–{iv['hi']:.2f})"


def rounds_of(r, w):
    for p in r.get("progress", []):
        if p["workload"] == w:
            return p["rounds"]
    return max((len(c["runs"]) for c in cells(r, w)), default=0)


def how(r):
    """One sentence on how the headline was produced."""
    t = r.get("target_ci")
    target = f", rounds added until every interval was within ±{t * 100:.0f}% or time ran out" if t else ""
    return (f"Ratios of server CPU per request (process utime+stime) over paired rounds: per workload every "
            f"server ran once per round in a shuffled order, {r['duration_s']:g} s measured after "
            f"{r['warmup_s']:g} s warm-up, one worker pinned to CPU {r.get('server_cpu', 0)}, `ringpoll load -t1` "
            f"on CPU {r.get('load_cpu', 1)}{target}. Each cell: the ratio and its 95% confidence interval "
            f"({r.get('interval_method') or 'Student-t interval on the per-round log ratios'}); **bold** when the "
            f"interval excludes 1.0, \"no difference\" "
            f"when it spans 1.0. From `{r['command']}`.")


def headline(m):
    """The headline table: uring vs epoll, and each vs the best peer, with intervals."""
    lines = [how(m), ""]
    p = lines.append
    p("| workload | rounds | epoll CPU µs/req | uring CPU µs/req | uring / epoll | uring / epoll (core busy) | best peer | epoll / peer | uring / peer |")
    p("|---|---|---|---|---|---|---|---|---|")
    for w in workloads(m):
        ep, ur, bp = find(m, w, "epoll"), find(m, w, "uring"), best_peer(m, w)
        fmt = lambda x: f"{x['cpu_us_per_req']:.2f}" if x else "-"
        peer = bp["label"] if bp else None
        p(f"| {w} | {rounds_of(m, w)} | {fmt(ep)} | {fmt(ur)} | {cell_text(verdict(m, w, 'uring', 'epoll'))} | "
          f"{cell_text(verdict(m, w, 'uring', 'epoll', 'core_busy'))} | "
          f"{peer + ' (' + fmt(bp['median']) + ')' if bp else '-'} | "
          f"{cell_text(verdict(m, w, 'epoll', peer)) if peer else '-'} | "
          f"{cell_text(verdict(m, w, 'uring', peer)) if peer else '-'} |")
    return lines


def update_readme(readme, main_dir):
    """Replace what is between README's headline markers with this run's headline."""
    with open(readme) as f:
        text = f.read()
    begin, end = "<!-- headline -->\n", "<!-- /headline -->"
    i, j = text.index(begin) + len(begin), text.index(end)
    with open(readme, "w") as f:
        f.write(text[:i] + "\n".join(headline(load(main_dir))) + "\n" + text[j:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--main", required=True)
    ap.add_argument("--idle")
    ap.add_argument("--sweep")
    ap.add_argument("--veth")
    ap.add_argument("--costs")
    ap.add_argument("--profile")
    ap.add_argument("--stability", help="how reproducible the verdicts are: a markdown file kept beside the docs "
                                        "(host-regimes.py and verdict-agreement.py outputs), included as it is")
    ap.add_argument("--readme")
    ap.add_argument("--ab", nargs="*", default=[], help="ab.md files written by the uring-*-ab.py scripts")
    a = ap.parse_args()
    if a.readme:
        update_readme(a.readme, a.main)
        return
    main_dir, idle_dir = a.main, a.idle
    extras = [x for x in (a.costs, a.profile) if x and os.path.exists(x)]
    doc_dir = "docs"
    m = load(main_dir)
    out = []
    p = out.append
    mach = m["machine"]
    p("# Benchmarks\n")
    p("All figures on this page come from one run of each command below, on this machine:")
    p(f"{mach['cpus']} CPUs ({mach['cpu_model']}), Linux {mach['kernel']}, {mach['date_utc']}. ")
    p("The server under test runs **one worker pinned to CPU 0**; the load generator runs on **CPU 1** "
      "(`taskset`); reference servers run the same way. This machine is a shared VM whose noise is large "
      "(a cell's repeats spread up to ±30%), so no single figure is a verdict: servers run in paired, "
      "interleaved rounds and every comparison is a ratio with its 95% confidence interval.\n")
    p("The commands that produced these figures are below, each table also names its own. "
      "`bash bench-scripts/regen-docs.sh` runs all of them and rewrites this page (main matrix: "
      "at least 10 rounds of 1 s after 0.5 s of warm-up, more until every interval is within ±5%; "
      "the other suites: 3 s after 1 s), and its header says how to change that.\n")
    p("```sh")
    for d in (main_dir, idle_dir, a.sweep, a.veth):
        if have(d):
            p(load(d)["command"])
    p("```\n")
    p("How each column is measured: requests/s and latency percentiles come from the load generator's "
      "HDR histograms (merged over a cell's runs); **CPU µs/req** is the server process's utime+stime "
      "(from /proc) over the load's measured window divided by the successful requests in it; **core µs/req** "
      "is the busy time of the server's pinned core from /proc/stat (user+nice+system+irq+softirq) over the "
      "same window, which includes the TCP/IP work the kernel does in softirq on that core for loopback "
      "traffic (and anything else that ran there); **syscalls/req** is the server's own count of the system "
      "calls it made; **user %** is the user-space share of server CPU.\n")
    p("## Headline\n")
    out.extend(headline(m))
    p("")
    p(f"![verdicts]({rel(doc_dir, main_dir, 'verdicts.svg')})\n")
    p(f"![throughput]({rel(doc_dir, main_dir, 'throughput.svg')})\n")
    p(f"![server CPU per request]({rel(doc_dir, main_dir, 'cpu.svg')})\n")
    p(f"![latency]({rel(doc_dir, main_dir, 'latency.svg')})\n")
    p("## Full comparison\n")
    with open(os.path.join(main_dir, "report.md")) as f:
        body = f.read().split("\n", 1)[1]
    # The report's own headline is the table above; its other sections sit one level down.
    i = body.find("\n## Headline")
    if i >= 0:
        j = body.find("\n## ", i + 1)
        body = body[:i] + (body[j:] if j >= 0 else "")
    body = body.replace("\n## ", "\n### ")
    p(body.replace("](", f"]({os.path.relpath(main_dir, doc_dir)}/"))

    if a.stability and os.path.exists(a.stability):
        p("\n## How reproducible the verdicts are\n")
        p("Three measurements of this host's noise, and what they mean for a verdict. First, one server under "
          "a steady load, run after run: its cost per request moves between levels (regimes) that last from a "
          "few seconds to a minute, while a fixed-work CPU probe on the same core barely moves. A round whose "
          "two runs fall on either side of a switch gives a ratio far off the others. Second, how far apart "
          "two adjacent measurements of one running server are, against how long each one is: no closer for "
          "being longer. That is why `ringpoll compare` anchors its rounds on epoll (epoll runs between every "
          "two other servers, and each server is taken against the two epoll runs beside it), measures them "
          "in interleaved blocks of short slots (every server running, their load generators taking turns), "
          "and from six rounds on states the Hodges–Lehmann estimate with the Wilcoxon signed-rank interval, "
          "which the remaining wild rounds do not throw about (crates/compare/src/{plan,interleave,verdicts,"
          "stats}.rs). Third, the same comparison run twice, back to back, with every interval driven to "
          "±5%.\n")
        with open(a.stability) as f:
            p(f.read().rstrip() + "\n")

    if have(a.sweep):
        r = load(a.sweep)
        p("\n## Latency against load (rate sweep)\n")
        p("Open loop at rising offered rates (fractions of the fastest server's closed-loop maximum, the same "
          "rates for every server), latency corrected for coordinated omission. A server's **knee** is the "
          f"highest achieved rate whose p99 stayed at or under {r.get('slo_us', 1000):.0f} µs. Each point is "
          "one run, so a knee is known to within one rate step, and one noisy run can move it a step.\n")
        p(f"![latency against throughput]({rel(doc_dir, a.sweep, 'curves.svg')})\n")
        p("| workload | server | knee req/s | p99 at knee µs | max req/s | knee / epoll's |")
        p("|---|---|---|---|---|---|")
        for k in r.get("knees", []):
            ep = next((e["rps"] for e in r["knees"] if e["workload"] == k["workload"] and e["label"] == "epoll"), None)
            ratio = f"{k['rps'] / ep:.2f}×" if k["rps"] and ep else "-"
            knee = f"{k['rps']:.0f}" if k["rps"] else "none"
            p99 = f"{k['p99_us']:.0f}" if k["p99_us"] else "-"
            p(f"| {k['workload']} | {k['label']} | {knee} | {p99} | {k['max_rps']:.0f} | {ratio} |")
    if have(a.veth):
        r = load(a.veth)
        p("\n## Loopback and veth\n")
        p("The same workloads over loopback and across a veth pair between two network namespaces "
          "(198.18.0.0/15 inside them only), so that traffic crosses a device (qdisc, GRO, softirq "
          "scheduling) as it would off the machine. Does the verdict change off loopback?\n")
        p("| workload | uring / epoll, loopback | uring / epoll, veth |")
        p("|---|---|---|")
        for w in workloads(r):
            if w.endswith("@veth"):
                continue
            p(f"| {w} | {cell_text(verdict(r, w, 'uring', 'epoll'))} | {cell_text(verdict(r, w + '@veth', 'uring', 'epoll'))} |")
        p("")

    if have(idle_dir):
        r = load(idle_dir)
        actives = sorted({c["workload"]["conns"] for c in cells(r)})
        p("\n## The idle-connection experiment\n")
        p(f"{', '.join(map(str, actives))} active ping-pong connections (64-byte echo) plus N idle connections "
          "held open by `ringpoll load --idle N`; one server worker on CPU 0, load on CPU 1. The idle levels of "
          "one active count run in the same shuffled rounds, so that each is compared with its zero-idle twin "
          "in paired rounds. The claims under test: select and poll cost grows with every watched descriptor, "
          "idle or not, while epoll and io_uring do not; and the round trip of a lone active connection does "
          "not slow down when idle connections are held open.\n")
        p(f"![idle]({rel(doc_dir, idle_dir, 'idle.svg')})\n")
        p(f"![idle latency]({rel(doc_dir, idle_dir, 'idle-latency.svg')})\n")
        # The latency and CPU ratios with their intervals, as `ringpoll compare` wrote them.
        rep = open(os.path.join(idle_dir, "report.md")).read() if os.path.exists(os.path.join(idle_dir, "report.md")) else ""
        i = rep.find("## Idle connections:")
        if i >= 0:
            j = rep.find("\n## ", i + 1)
            section = rep[i:j if j >= 0 else len(rep)].rstrip()
            p(section.replace("## Idle connections: latency", "### Latency", 1)
                     .replace("\n### ", "\n#### "))
            p("")
        top_active = max(actives) if actives else 64
        def cells_at(lab):
            return [c for c in cells(r) if c["label"] == lab and c["workload"]["conns"] == top_active]
        labels = []
        for c in cells(r):
            if c["label"] not in labels:
                labels.append(c["label"])
        levels = sorted({c["workload"]["idle"] for c in cells(r) if c["workload"]["conns"] == top_active})
        p(f"\n### CPU per round trip with {top_active} active connections\n")
        p("Each cell: server CPU µs per active round trip, median of the repeats / minimum of the repeats "
          "(round trips/s, syscalls per round trip). The growth column compares the largest idle count "
          "with zero idle, on medians and on minima.\n")
        p("| backend | " + " | ".join(f"idle {n}" for n in levels) + " | CPU at max idle / at 0 | server RSS per idle connection |")
        p("|---|" + "---|" * (len(levels) + 2))
        for lab in labels:
            row = []
            by = {c["workload"]["idle"]: c["median"] for c in cells_at(lab)}
            mins = {c["workload"]["idle"]: cpu_min(c) for c in cells_at(lab)}
            if not by:
                continue
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
            return {c["workload"]["idle"]: cpu_min(c) for c in cells_at(lab)}
        p("\n**What the data says.**")
        pm = mins_of("poll")
        if pm and 0 in pm:
            steps = ", ".join(f"{n}: {pm[n]:.1f} µs ({pm[n] / pm[0]:.1f}x)" for n in sorted(pm) if n)
            p(f"poll's CPU per active round trip grows with the idle descriptors it scans on every call "
              f"(0 idle: {pm[0]:.1f} µs; {steps}). The growth is faster than linear at the top: as each "
              f"call gets slower, fewer active events share the cost of one scan.")
        sm = mins_of("select")
        if sm and 0 in sm:
            below = max(sm)
            p(f"select cannot watch descriptor 1024 or above, so it stops at its cap; below it "
              f"({below} idle) it costs {sm[below] / sm[0]:.2f}x its zero-idle figure.")
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
    abs_ = [x for x in a.ab if os.path.exists(x)]
    if abs_:
        p("\n## io_uring techniques, one at a time (A/B)\n")
        p("Each technique behind a `ringpoll serve --uring-*` flag, measured off against on as two rows "
          "of the uring backend in the same paired, interleaved rounds (`bench-scripts/uring-NAME-ab.py`, "
          "which runs the `ringpoll compare --variant` command shown above its table). The ratio is on / off "
          "(below 1.0: the technique saves CPU), the geometric mean of the per-round ratios with its 95% "
          "interval; \"no difference detectable\" when that interval spans 1.0. All of them are here, the "
          "ones that lost included. Closed loop, so a technique that lets the worker batch more also shows "
          "as less CPU per request. The flags' defaults follow these runs: a technique is on only where it "
          "measurably saves CPU or brings something else (docs/OPERATIONS.md).\n")
        for x in abs_:
            with open(x) as f:
                p(f.read().rstrip() + "\n")
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

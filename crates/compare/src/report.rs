//! The stdout table and report.md: how the figures were produced, the verdicts with their
//! intervals, the per-workload tables, sweeps and knees.

use std::fmt::Write as _;

use crate::results::{Metric, Results, SweepKind, Verdict};
use crate::stats::Direction;
use crate::verdicts::best_peer;

/// A percentile the load generator did not report (wrk has no p99.9) shows as `-`.
fn fmt_us(v: f64) -> String {
    if v > 0.0 {
        format!("{v:.0}")
    } else {
        "-".into()
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

/// `0.74× (0.70–0.79)`, `≈1 (0.93–1.08)` when the interval spans 1.0.
#[must_use]
pub fn short(v: Option<&Verdict>) -> String {
    match v.and_then(|v| v.interval) {
        None => "-".into(),
        Some(iv) if iv.direction() == Direction::NoDifference => format!("no difference ({:.2}–{:.2})", iv.lo, iv.hi),
        Some(iv) => format!("**{:.2}×** ({:.2}–{:.2})", iv.ratio, iv.lo, iv.hi),
    }
}

fn find<'a>(r: &'a Results, w: &str, a: &str, b: &str, metric: Metric) -> Option<&'a Verdict> {
    r.verdicts.iter().find(|v| v.workload == w && v.a == a && v.b == b && v.metric == metric)
}

/// One table per workload; `md` selects Markdown, else aligned text.
#[must_use]
pub fn table(r: &Results, md: bool) -> String {
    let mut out = String::new();
    let head = [
        "server",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "CPU µs/req",
        "core µs/req",
        "syscalls/req",
        "user %",
        "runs",
        "spread",
    ];
    for w in r.workload_names() {
        if !r.cells.iter().any(|c| c.workload.name == w) {
            continue;
        }
        if md {
            let _ = writeln!(out, "\n#### {w}\n");
            let _ = writeln!(out, "| {} |", head.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
        } else {
            let _ = writeln!(out, "\n{w}");
            let _ = writeln!(
                out,
                "  {:<16} {:>10} {:>8} {:>8} {:>9} {:>10} {:>10} {:>12} {:>6} {:>5} {:>7}",
                "server",
                "req/s",
                "p50us",
                "p99us",
                "p99.9us",
                "cpu us/req",
                "core us/req",
                "syscalls/req",
                "user%",
                "runs",
                "spread"
            );
        }
        for c in r.cells.iter().filter(|c| c.workload.name == w) {
            let label = if c.peer { format!("{} (peer)", c.label) } else { c.label.clone() };
            if let Some(e) = &c.error {
                if md {
                    let _ = writeln!(out, "| {label} | {} |{}", e.replace('|', "/"), " |".repeat(head.len() - 2));
                } else {
                    let _ = writeln!(out, "  {label:<16} skipped: {e}");
                }
                continue;
            }
            if c.runs.is_empty() {
                continue;
            }
            let m = &c.median;
            let spread = format!("±{:.0}%", 50.0 * c.rps_spread.max(c.cpu_spread));
            let cols = [
                format!("{:.0}", m.rps),
                fmt_us(m.p50_us),
                fmt_us(m.p99_us),
                fmt_us(m.p999_us),
                format!("{:.2}", m.cpu_us_per_req),
                fmt_opt(m.core_us_per_req),
                fmt_opt(m.syscalls_per_req),
                format!("{:.0}", m.user_share * 100.0),
                c.runs.len().to_string(),
                spread,
            ];
            if md {
                let _ = writeln!(out, "| {label} | {} |", cols.join(" | "));
            } else {
                let _ = writeln!(
                    out,
                    "  {label:<16} {:>10} {:>8} {:>8} {:>9} {:>10} {:>10} {:>12} {:>6} {:>5} {:>7}",
                    cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7], cols[8], cols[9]
                );
            }
        }
    }
    out
}

/// The headline: uring vs epoll and each vs the best peer, per workload, on both metrics.
#[must_use]
pub fn headline(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | rounds | uring / epoll (process CPU) | uring / epoll (core busy) | best peer | epoll / peer | uring / peer |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for w in r.workload_names() {
        if !r.cells.iter().any(|c| c.workload.name == w) {
            continue;
        }
        let peer = best_peer(&r.cells, &w).map(|p| p.label.clone());
        let rounds = r.progress.iter().find(|p| p.workload == w).map_or(0, |p| p.rounds);
        let vs_peer = |a: &str| peer.as_deref().map_or("-".into(), |p| short(find(r, &w, a, p, Metric::ProcessCpu)));
        let _ = writeln!(
            out,
            "| {w} | {rounds} | {} | {} | {} | {} | {} |",
            short(find(r, &w, "uring", "epoll", Metric::ProcessCpu)),
            short(find(r, &w, "uring", "epoll", Metric::CoreBusy)),
            peer.as_deref().unwrap_or("-"),
            vs_peer("epoll"),
            vs_peer("uring"),
        );
    }
    out
}

fn method(out: &mut String, r: &Results) {
    let _ = writeln!(out, "- command: `{}`", r.command);
    let _ = writeln!(
        out,
        "- machine: {} CPUs, {}, Linux {}, {}",
        r.machine.cpus, r.machine.cpu_model, r.machine.kernel, r.machine.date_utc
    );
    let pin = |c: Option<usize>| c.map_or_else(|| "not pinned".to_string(), |c| format!("CPU {c}"));
    let _ = writeln!(
        out,
        "- server: one worker, {}; load generator (`ringpoll load -t1`): {}",
        pin(r.server_cpu),
        pin(r.load_cpu)
    );
    let _ = writeln!(
        out,
        "- each run: {:.1} s measured after {:.1} s warm-up; per workload, every server runs once per round, in an order shuffled per round (seed {}){}; {} round(s){}{}",
        r.duration_s,
        r.warmup_s,
        r.seed,
        r.anchor.as_ref().map_or(String::new(), |a| format!(
            ", each between two runs of {a} (`{a} x1 {a} x2 … {a}`) and measured against their geometric mean, so that every ratio is taken between neighbouring runs; a round whose two {a} runs beside a server differ by more than {:.0}% (the host switched regime across that server's run) is left out of its comparisons, and the verdict counts it",
            (crate::verdicts::SWITCH_STEP - 1.0) * 100.0
        )),
        r.repeat,
        r.target_ci.map_or(String::new(), |t| format!(" at least, more until every interval (every comparison, both metrics) is within ±{:.1}%", t * 100.0)),
        r.max_time_s.map_or(String::new(), |t| format!(", at most {:.0} s in all", t)),
    );
    let interleaved: Vec<String> = r
        .workload_names()
        .into_iter()
        .filter(|w| r.cells.iter().any(|c| c.workload.name == *w && c.runs.iter().any(|x| x.interleaved)))
        .collect();
    if !interleaved.is_empty() {
        let _ = writeln!(
            out,
            "- {}: the first round measured run by run as above, every later one in an interleaved block: all servers of the workload running at once, each with its own load generator, the load generators taking turns (the others paused with SIGSTOP) in slots of {:.1} s measured after {:.1} s, requests counted by the server, the core's busy time as the slot less the core's idle time (cpuidle residency, µs; /proc/stat where there is none); {}. Slots give cost and throughput, not latency",
            interleaved.join(", "),
            crate::interleave::SLOT.as_secs_f64(),
            crate::interleave::SETTLE.as_secs_f64(),
            match crate::interleave::BLOCK_ROUNDS {
                1 => "every round with servers and load generators of its own".to_string(),
                n => format!("servers restarted every {n} rounds"),
            }
        );
    }
    let _ = writeln!(
        out,
        "- CPU µs/req: the server process's utime+stime over the load's measured window / successful requests; core µs/req: the busy time (user+nice+system+irq+softirq, /proc/stat) of the server's pinned core over the same window / requests, which includes the TCP/IP work done in softirq on that core (and anything else that ran there)"
    );
    let _ = writeln!(
        out,
        "- verdicts: ratio of paired per-round costs with its 95% CI ({}); \"no difference detectable\" when the interval spans 1.0. Each verdict names its metric",
        if r.interval_method.is_empty() { crate::stats::METHOD } else { &r.interval_method }
    );
    let _ = writeln!(out, "- latency percentiles: from the runs' HDR histograms merged (not the interleaved slots'); other figures: medians over the runs; `spread` is half the max-min range");
    if !r.skipped.is_empty() {
        let _ = writeln!(out, "- skipped: {}", r.skipped.join("; "));
    }
}

fn verdict_lines(out: &mut String, r: &Results) {
    for w in r.workload_names() {
        let vs: Vec<&Verdict> = r.verdicts.iter().filter(|v| v.workload == w).collect();
        if vs.is_empty() {
            continue;
        }
        let p = r.progress.iter().find(|p| p.workload == w);
        let _ = writeln!(
            out,
            "\n**{w}**{}\n",
            p.map_or(String::new(), |p| format!(" — {} ({:.0} s)", p.outcome, p.seconds))
        );
        for headline in [true, false] {
            for v in vs.iter().filter(|v| v.headline == headline) {
                let _ = writeln!(
                    out,
                    "- {}{} [{}]",
                    if headline { "**headline** " } else { "" },
                    v.text,
                    v.metric.describe()
                );
            }
        }
    }
}

fn workloads(out: &mut String, r: &Results) {
    let _ = writeln!(out, "\n## Workloads\n\n| workload | parameters |\n|---|---|");
    let mut seen = Vec::new();
    for c in &r.cells {
        if !seen.contains(&c.workload.name) {
            seen.push(c.workload.name.clone());
            let _ = writeln!(
                out,
                "| {} | `{}`{} |",
                c.workload.name,
                c.workload.params(),
                if c.workload.custom { " (custom)" } else { "" }
            );
        }
    }
}

fn veth_side_by_side(out: &mut String, r: &Results) {
    let pairs: Vec<(String, String)> = r
        .workload_names()
        .into_iter()
        .filter_map(|w| w.strip_suffix("@veth").map(|base| (base.to_string(), w.clone())))
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Loopback and veth side by side\n");
    let _ = writeln!(
        out,
        "| workload | uring / epoll, loopback | uring / epoll, veth | epoll req/s loopback | epoll req/s veth |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (lo, ve) in pairs {
        let rps = |w: &str| {
            r.cells
                .iter()
                .find(|c| c.workload.name == w && c.label == "epoll" && c.ok())
                .map_or("-".into(), |c| format!("{:.0}", c.median.rps))
        };
        let _ = writeln!(
            out,
            "| {lo} | {} | {} | {} | {} |",
            short(find(r, &lo, "uring", "epoll", Metric::ProcessCpu)),
            short(find(r, &ve, "uring", "epoll", Metric::ProcessCpu)),
            rps(&lo),
            rps(&ve)
        );
    }
}

fn sweep(out: &mut String, r: &Results) {
    if r.sweep.is_empty() {
        return;
    }
    if let Some(slo) = r.slo_us {
        let _ = writeln!(out, "\n## Knees (highest achieved rate with p99 ≤ {:.0} µs)\n", slo);
        let _ = writeln!(out, "| workload | server | knee req/s | p99 at knee µs | max req/s | knee / epoll's |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for k in &r.knees {
            let epoll = r.knees.iter().find(|e| e.workload == k.workload && e.label == "epoll").and_then(|e| e.rps);
            let ratio = match (k.rps, epoll) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {ratio} |",
                k.workload,
                k.label,
                k.rps.map_or("none".into(), |v| format!("{v:.0}")),
                k.p99_us.map_or("-".into(), |v| format!("{v:.0}")),
                k.max_rps
            );
        }
    }
    let _ = writeln!(out, "\n## Sweep points\n");
    let _ = writeln!(out, "| workload | server | kind | asked | req/s | p50 µs | p99 µs | p99.9 µs | CPU µs/req |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for p in &r.sweep {
        let kind = match p.kind {
            SweepKind::Probe => "closed loop (max)",
            SweepKind::Rate => "req/s",
            SweepKind::Conns => "connections",
        };
        match &p.run {
            Some(x) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {kind} | {:.0} | {:.0} | {} | {} | {} | {:.2} |",
                    p.workload,
                    p.label,
                    p.value,
                    x.rps,
                    fmt_us(x.p50_us),
                    fmt_us(x.p99_us),
                    fmt_us(x.p999_us),
                    x.cpu_us_per_req
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {kind} | {:.0} | failed: {} | | | | |",
                    p.workload,
                    p.label,
                    p.value,
                    p.error.as_deref().unwrap_or("?").replace('|', "/")
                );
            }
        }
    }
}

/// The Markdown report: how it was produced, the verdicts, then the tables and plots.
#[must_use]
pub fn markdown(r: &Results, plots: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ringpoll comparison ({})\n", r.suite);
    if !r.complete {
        let _ = writeln!(
            out,
            "**Partial results**: {}. Continue with `ringpoll compare --resume DIR`.\n",
            r.stopped.as_deref().unwrap_or("the run has not finished")
        );
    }
    method(&mut out, r);
    if !r.verdicts.is_empty() {
        let _ = writeln!(out, "\n## Headline\n");
        out.push_str(&headline(r));
        let _ = writeln!(out, "\n## Verdicts");
        verdict_lines(&mut out, r);
    }
    out.push_str(&crate::idle::markdown(&r.idle));
    veth_side_by_side(&mut out, r);
    sweep(&mut out, r);
    if !r.cells.is_empty() {
        workloads(&mut out, r);
        let _ = writeln!(out, "\n## Tables");
        out.push_str(&table(r, true));
    }
    for p in plots {
        let _ = writeln!(out, "\n![{p}]({p})");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{main_workloads, LoadGen, Server};
    use crate::results::{Cell, Run};

    fn cell(server: Server, costs: &[f64]) -> Cell {
        let runs = costs
            .iter()
            .enumerate()
            .map(|(round, &c)| Run { round, rps: 100.0, cpu_us_per_req: c, requests: 10, ..Run::default() })
            .collect();
        Cell::new(main_workloads()[0].clone(), server, LoadGen::Ringpoll, runs, None)
    }

    #[test]
    fn the_report_leads_with_verdicts_and_marks_partial_results() {
        let mut r = Results {
            suite: "main".into(),
            command: "ringpoll compare".into(),
            repeat: 3,
            cells: vec![
                cell(Server::Ringpoll { backend: "epoll".into() }, &[8.0, 9.0, 8.5]),
                cell(Server::Ringpoll { backend: "uring".into() }, &[6.0, 6.8, 6.4]),
                cell(Server::TokioEcho, &[9.0, 10.0, 9.6]),
            ],
            ..Results::default()
        };
        r.verdicts = crate::verdicts::compute(&r);
        let md = markdown(&r, &["cpu.svg".into()]);
        assert!(md.contains("**Partial results**"), "{md}");
        assert!(md.contains("| echo-64B-c64 | 0 | **0.75×**"), "{md}");
        assert!(md.contains("uring uses 0.75× epoll's CPU per request (95% CI"), "{md}");
        assert!(md.contains("| epoll | 100 |") && md.contains("![cpu.svg](cpu.svg)"), "{md}");
        assert!(md.contains("`echo size=64B conns=64 depth=1`"), "{md}");
        r.complete = true;
        assert!(!markdown(&r, &[]).contains("Partial"));
        assert!(table(&r, false).contains("tokio (peer)"));
    }
}

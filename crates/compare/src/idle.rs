//! The idle-connection experiment's reading: for every active count, idle count and server,
//! the round-trip latency (p50, p99) and CPU per round trip, each as a ratio to the same
//! server's figure with no idle connections and to epoll's at the same idle count, over
//! paired rounds (the idle levels of one active count share their rounds, see
//! [`crate::rounds::run`]), with 95% intervals from [`crate::stats::paired_ratio`].
//!
//! The issue's target reads off it: "with 1 active connection and 200, 1,000 and 10,000 idle
//! ones, uring's p50 stays within 1.2x of its zero-idle figure and of epoll's".

use std::fmt::Write as _;

use crate::results::{Cell, IdleRow, Results, Run};
use crate::stats::{paired_ratio, Interval};

/// The bound the targets use: a p50 at most 1.2x the reference.
pub const TARGET: f64 = 1.2;

fn ratio(a: &Cell, b: &Cell, f: fn(&Run) -> f64) -> Option<Interval> {
    let pairs: Vec<(f64, f64)> = a.runs.iter().filter_map(|r| Some((f(r), f(b.run_of(r.round)?)))).collect();
    paired_ratio(&pairs)
}

/// Every row of an idle-suite run, by active count, then idle count, then server.
#[must_use]
pub fn rows(r: &Results) -> Vec<IdleRow> {
    let ok: Vec<&Cell> = r.cells.iter().filter(|c| c.ok()).collect();
    let twin = |c: &Cell, label: &str, idle: usize| {
        ok.iter().copied().find(|d| {
            let (v, w) = (&d.workload, &c.workload);
            d.label == label
                && v.idle == idle
                && (v.proto, v.size, v.conns, v.depth, v.net) == (w.proto, w.size, w.conns, w.depth, w.net)
        })
    };
    let mut out: Vec<IdleRow> = ok
        .iter()
        .map(|c| {
            let zero = (c.workload.idle > 0).then(|| twin(c, &c.label, 0)).flatten();
            let epoll = (c.label != "epoll").then(|| twin(c, "epoll", c.workload.idle)).flatten();
            let vs = |other: Option<&Cell>, f: fn(&Run) -> f64| other.and_then(|o| ratio(c, o, f));
            IdleRow {
                active: c.workload.conns,
                idle: c.workload.idle,
                label: c.label.clone(),
                rps: c.median.rps,
                p50_us: c.median.p50_us,
                p99_us: c.median.p99_us,
                cpu_us_per_req: c.median.cpu_us_per_req,
                p50_vs_zero: vs(zero, |r| r.p50_us),
                p99_vs_zero: vs(zero, |r| r.p99_us),
                cpu_vs_zero: vs(zero, |r| r.cpu_us_per_req),
                p50_vs_epoll: vs(epoll, |r| r.p50_us),
                p99_vs_epoll: vs(epoll, |r| r.p99_us),
            }
        })
        .collect();
    let labels: Vec<String> = r.cells.iter().map(|c| c.label.clone()).fold(Vec::new(), |mut v, l| {
        if !v.contains(&l) {
            v.push(l);
        }
        v
    });
    let pos = |l: &str| labels.iter().position(|x| x == l).unwrap_or(usize::MAX);
    out.sort_by_key(|r| (r.active, pos(&r.label), r.idle));
    out
}

/// `1.05× (0.98–1.12)`, or `-`.
fn iv(v: Option<&Interval>) -> String {
    v.map_or_else(|| "-".into(), |i| format!("{:.2}× ({:.2}–{:.2})", i.ratio, i.lo, i.hi))
}

/// Whether an interval meets "at most [`TARGET`]": met (the whole interval), met on the
/// estimate only (the interval reaches past it), or not met.
#[must_use]
pub fn judge(i: &Interval) -> &'static str {
    if i.hi <= TARGET {
        "met"
    } else if i.ratio <= TARGET {
        "met on the estimate (the interval reaches past 1.2×)"
    } else {
        "not met"
    }
}

/// The worst (highest) ratio over the nonzero idle levels of one server and active count.
fn worst<'a>(rows: &[&'a IdleRow], pick: fn(&IdleRow) -> Option<&Interval>) -> Option<(&'a IdleRow, Interval)> {
    rows.iter().filter_map(|r| Some((*r, *pick(r)?))).max_by(|a, b| a.1.ratio.total_cmp(&b.1.ratio))
}

/// The targets in words: for each active count and server, whether its p50 stays within 1.2x
/// of its zero-idle figure and of epoll's at every idle level measured. uring first.
#[must_use]
pub fn targets(rows: &[IdleRow]) -> Vec<String> {
    let mut out = Vec::new();
    let mut actives: Vec<usize> = rows.iter().map(|r| r.active).collect();
    actives.dedup();
    let mut labels: Vec<&str> = Vec::new();
    for r in rows {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    labels.sort_by_key(|l| *l != "uring");
    for a in actives {
        for l in &labels {
            let mine: Vec<&IdleRow> = rows.iter().filter(|r| r.active == a && r.label == *l && r.idle > 0).collect();
            if mine.is_empty() {
                continue;
            }
            let levels = mine.iter().map(|r| r.idle.to_string()).collect::<Vec<_>>().join(", ");
            let mut line = format!("{l}, {a} active, idle {levels}: p50 vs its zero-idle figure ");
            match worst(&mine, |r| r.p50_vs_zero.as_ref()) {
                Some((r, i)) => {
                    let _ = write!(line, "{} (worst {} at {} idle)", judge(&i), iv(Some(&i)), r.idle);
                }
                None => line.push_str("not measured"),
            }
            if *l != "epoll" {
                match worst(&mine, |r| r.p50_vs_epoll.as_ref()) {
                    Some((r, i)) => {
                        let _ = write!(line, "; vs epoll's {} (worst {} at {} idle)", judge(&i), iv(Some(&i)), r.idle);
                    }
                    None => line.push_str("; vs epoll's not measured"),
                }
            }
            out.push(line);
        }
    }
    out
}

/// The report section: the targets, then one table per active count.
#[must_use]
pub fn markdown(rows: &[IdleRow]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n## Idle connections: latency and CPU against zero idle and against epoll\n");
    let _ = writeln!(
        out,
        "Ratios are geometric means of per-round ratios over paired rounds (the idle levels of one active count \
         run in the same shuffled rounds), with 95% intervals. Target: p50 within {TARGET}× of the zero-idle \
         figure and of epoll's (\"met\" when the whole interval is within it).\n"
    );
    for t in targets(rows) {
        let _ = writeln!(out, "- {t}");
    }
    let mut actives: Vec<usize> = rows.iter().map(|r| r.active).collect();
    actives.dedup();
    for a in actives {
        let _ = writeln!(out, "\n### {a} active connection{}\n", if a == 1 { "" } else { "s" });
        let _ = writeln!(
            out,
            "| server | idle | req/s | p50 µs | p99 µs | CPU µs/req | p50 / zero idle | p99 / zero idle | CPU / zero idle | p50 / epoll | p99 / epoll |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
        for r in rows.iter().filter(|r| r.active == a) {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} | {} | {} | {} |",
                r.label,
                r.idle,
                r.rps,
                r.p50_us,
                r.p99_us,
                r.cpu_us_per_req,
                iv(r.p50_vs_zero.as_ref()),
                iv(r.p99_vs_zero.as_ref()),
                iv(r.cpu_vs_zero.as_ref()),
                iv(r.p50_vs_epoll.as_ref()),
                iv(r.p99_vs_epoll.as_ref()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{idle_workloads, LoadGen, Server};

    fn cell(w: &crate::matrix::Workload, backend: &str, p50: &[f64]) -> Cell {
        let runs = p50
            .iter()
            .enumerate()
            .map(|(round, &p)| Run {
                round,
                p50_us: p,
                p99_us: 2.0 * p,
                cpu_us_per_req: 5.0,
                rps: 1.0,
                requests: 1,
                ..Run::default()
            })
            .collect();
        Cell::new(w.clone(), Server::Ringpoll { backend: backend.into() }, LoadGen::Ringpoll, runs, None)
    }

    #[test]
    fn ratios_pair_rounds_against_zero_idle_and_epoll_and_read_as_targets() {
        let w = idle_workloads(&[0, 200], &[1]);
        let r = Results {
            suite: "idle".into(),
            cells: vec![
                cell(&w[0], "epoll", &[14.0, 15.0, 14.0]),
                cell(&w[0], "uring", &[14.0, 16.0, 13.0]),
                cell(&w[1], "epoll", &[14.5, 15.0, 14.0]),
                cell(&w[1], "uring", &[55.0, 60.0, 52.0]),
            ],
            ..Results::default()
        };
        let rows = rows(&r);
        assert_eq!(
            rows.iter().map(|r| (r.label.as_str(), r.idle)).collect::<Vec<_>>(),
            [("epoll", 0), ("epoll", 200), ("uring", 0), ("uring", 200)]
        );
        let uring200 = &rows[3];
        let z = uring200.p50_vs_zero.unwrap();
        assert!((3.5..4.5).contains(&z.ratio) && z.n == 3, "{z:?}");
        assert!(uring200.p50_vs_epoll.unwrap().ratio > 3.0);
        assert!(rows[0].p50_vs_zero.is_none() && rows[0].p50_vs_epoll.is_none(), "epoll at zero idle is the reference");
        let t = targets(&rows);
        assert!(t[0].starts_with("uring, 1 active, idle 200: p50 vs its zero-idle figure not met"), "{t:?}");
        assert!(t[1].starts_with("epoll, 1 active, idle 200: p50 vs its zero-idle figure"), "{t:?}");
        let md = markdown(&rows);
        assert!(md.contains("### 1 active connection\n") && md.contains("| uring | 200 |"), "{md}");
        let tight = Interval { ratio: 1.05, lo: 1.0, hi: 1.1, n: 5 };
        assert_eq!(judge(&tight), "met");
        assert!(judge(&Interval { hi: 1.3, ..tight }).starts_with("met on the estimate"));
        assert_eq!(judge(&Interval { ratio: 1.25, hi: 1.3, ..tight }), "not met");
    }
}

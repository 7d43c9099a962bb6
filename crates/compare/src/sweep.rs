//! `--sweep rate` and `--sweep conns`: how latency and throughput move as load rises.
//!
//! Rate: each server first runs closed loop once (its maximum rate); the offered rates are
//! then fractions of the highest of those maxima, the same for every server (so that each
//! step compares servers at one offered rate), up to 1.25x past it. Every step runs all
//! servers in a shuffled order, open loop (`ringpoll load --rate`, latency corrected for
//! coordinated omission). A server's knee is its highest achieved rate whose p99 stays under
//! `--slo` (see [`crate::verdicts::knees`]).
//!
//! Conns: closed loop at 1 to 10,000 connections.

use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Result;

use crate::cli::{Options, Suite};
use crate::matrix::{LoadGen, Server, Workload};
use crate::measure::{self, Interrupted, Setup};
use crate::plan::{order, Member, SELECT_MAX_CONNS};
use crate::results::{Results, SweepKind, SweepPoint};
use crate::rounds::Ended;
use crate::verdicts;

/// Offered rates, as fractions of the highest closed-loop maximum.
pub const RATE_STEPS: [f64; 10] = [0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25];
/// Connection counts of `--sweep conns`.
pub const CONN_STEPS: [usize; 8] = [1, 4, 16, 64, 256, 1024, 4096, 10_000];

fn label(m: &Member) -> String {
    let mut l = m.server.name();
    if m.loadgen == LoadGen::Wrk {
        l.push_str(" (wrk)");
    }
    l
}

fn has(results: &Results, w: &str, label: &str, kind: SweepKind, value: f64) -> bool {
    results.sweep.iter().any(|p| p.workload == w && p.label == label && p.kind == kind && p.value == value)
}

/// Measure one point and record it (a failure is recorded too, with its reason).
fn point(
    setup: &Setup,
    results: &mut Results,
    w: &Workload,
    server: &Server,
    kind: SweepKind,
    value: f64,
    out: &Path,
) -> Result<Option<Ended>> {
    if setup.stop.load(Ordering::Relaxed) {
        return Ok(Some(Ended::Interrupted));
    }
    let (wl, rate) = match kind {
        SweepKind::Conns => (Workload { conns: value as usize, ..w.clone() }, None),
        SweepKind::Rate => (w.clone(), Some(value)),
        SweepKind::Probe => (w.clone(), None),
    };
    let m = measure::measure(setup, server, &wl, LoadGen::Ringpoll, rate);
    let (run, error) = match m {
        Ok(r) => {
            eprintln!(
                "  [{} {:?} {:.0}] {:<10} {:>10.0} req/s  p99 {:>8.0} µs  {:>6.2} µs CPU/req",
                w.name,
                kind,
                value,
                server.name(),
                r.rps,
                r.p99_us,
                r.cpu_us_per_req
            );
            (Some(r), None)
        }
        Err(e) if e.is::<Interrupted>() => return Ok(Some(Ended::Interrupted)),
        Err(e) => {
            eprintln!("  [{} {:?} {:.0}] {:<10} failed: {e:#}", w.name, kind, value, server.name());
            (None, Some(format!("{e:#}")))
        }
    };
    results.sweep.push(SweepPoint { workload: w.name.clone(), label: server.name(), kind, value, run, error });
    if let Some(slo) = results.slo_us {
        results.knees = verdicts::knees(results, slo);
    }
    results.save(out)?;
    Ok(None)
}

/// The offered rates of a workload, from its probes (`None` until every probe ran).
#[must_use]
pub fn rate_grid(results: &Results, w: &str) -> Vec<f64> {
    let max = results
        .sweep
        .iter()
        .filter(|p| p.workload == w && p.kind == SweepKind::Probe)
        .filter_map(|p| p.run.as_ref().map(|r| r.rps))
        .fold(0.0, f64::max);
    if max <= 0.0 {
        return Vec::new();
    }
    RATE_STEPS.iter().map(|f| (max * f).round().max(1.0)).collect()
}

/// Run the sweep of every workload.
pub fn run(
    opts: &Options,
    setup: &Setup,
    results: &mut Results,
    plan: &[(Workload, Vec<Member>)],
    out: &Path,
) -> Result<Ended> {
    results.slo_us = Some(opts.slo.as_secs_f64() * 1e6);
    for (wi, (w, members)) in plan.iter().enumerate() {
        let members: Vec<&Member> = members.iter().filter(|m| m.loadgen == LoadGen::Ringpoll).collect();
        let steps: Vec<(SweepKind, f64)> = if opts.suite == Suite::SweepRate {
            for k in order(members.len(), results.seed, wi, usize::MAX) {
                let m = members[k];
                if !has(results, &w.name, &label(m), SweepKind::Probe, 0.0) {
                    if let Some(e) = point(setup, results, w, &m.server, SweepKind::Probe, 0.0, out)? {
                        return Ok(e);
                    }
                }
            }
            rate_grid(results, &w.name).into_iter().map(|r| (SweepKind::Rate, r)).collect()
        } else {
            CONN_STEPS.iter().map(|&c| (SweepKind::Conns, c as f64)).collect()
        };
        for (si, &(kind, value)) in steps.iter().enumerate() {
            for k in order(members.len(), results.seed, wi, si) {
                let m = members[k];
                let select = matches!(&m.server, Server::Ringpoll { backend } if backend == "select");
                if kind == SweepKind::Conns && select && value as usize + w.idle > SELECT_MAX_CONNS {
                    continue;
                }
                if has(results, &w.name, &label(m), kind, value) {
                    continue;
                }
                if let Some(e) = point(setup, results, w, &m.server, kind, value, out)? {
                    return Ok(e);
                }
            }
        }
    }
    Ok(Ended::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Run;

    #[test]
    fn the_grid_follows_the_fastest_probe() {
        let probe = |label: &str, rps: f64| SweepPoint {
            workload: "w".into(),
            label: label.into(),
            kind: SweepKind::Probe,
            value: 0.0,
            run: Some(Run { rps, ..Run::default() }),
            error: None,
        };
        let mut r = Results::default();
        assert!(rate_grid(&r, "w").is_empty());
        r.sweep = vec![probe("epoll", 80_000.0), probe("uring", 100_000.0)];
        let g = rate_grid(&r, "w");
        assert_eq!(g.len(), RATE_STEPS.len());
        assert_eq!((g[0], g[7], g[9]), (10_000.0, 100_000.0, 125_000.0));
    }
}

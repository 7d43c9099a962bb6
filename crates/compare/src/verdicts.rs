//! From measured rounds to verdicts: which comparisons are made (each backend vs epoll, each
//! backend vs the best peer), their paired ratios with intervals on both cost metrics, and
//! the knees of a rate sweep.

use std::fmt::Write as _;

use crate::results::{ByState, Cell, Knee, Metric, Results, Run, SweepKind, Verdict};
use crate::stats::paired_ratio;

/// ringpoll's own rows driven by ringpoll's load generator.
fn own(c: &Cell) -> bool {
    c.ok() && !c.peer && c.loadgen == crate::matrix::LoadGen::Ringpoll
}

/// The server the main matrix anchors its rounds on (see [`crate::plan::sequence`]).
pub const ANCHOR: &str = "epoll";

/// Whether `c` is the anchor's row (ringpoll's epoll under ringpoll's load generator).
#[must_use]
pub fn is_anchor(c: &Cell) -> bool {
    !c.peer && c.loadgen == crate::matrix::LoadGen::Ringpoll && c.label == ANCHOR
}

/// The reference server with the least (median) process CPU per request in a workload.
#[must_use]
pub fn best_peer<'a>(cells: &'a [Cell], workload: &str) -> Option<&'a Cell> {
    cells
        .iter()
        .filter(|c| c.peer && c.ok() && c.workload.name == workload && c.loadgen == crate::matrix::LoadGen::Ringpoll)
        .min_by(|a, b| a.median.cpu_us_per_req.total_cmp(&b.median.cpu_us_per_req))
}

/// The comparisons of one workload: `(a, b, headline)` as indices into `cells`. The headline
/// ones are uring vs epoll, epoll and uring vs the best peer, and each `--variant` vs the
/// first variant of its backend (an A/B); when a run has none of those (e.g. `--backends
/// epoll,poll`), every comparison is a headline one.
#[must_use]
pub fn comparisons(cells: &[Cell], workload: &str) -> Vec<(usize, usize, bool)> {
    let idx = |pred: &dyn Fn(&Cell) -> bool| cells.iter().position(|c| c.workload.name == workload && pred(c));
    let epoll = idx(&|c| own(c) && is_anchor(c));
    let peer = best_peer(cells, workload).and_then(|p| cells.iter().position(|c| std::ptr::eq(c, p)));
    let mut out = Vec::new();
    let backend_of = |c: &Cell| match &c.server {
        crate::matrix::Server::RingpollVariant { backend, .. } => Some(backend.clone()),
        _ => None,
    };
    for (i, c) in cells.iter().enumerate().filter(|(_, c)| c.workload.name == workload && own(c)) {
        if let Some(b) = backend_of(c) {
            let base = idx(&|d| own(d) && backend_of(d).as_ref() == Some(&b));
            if let Some(base) = base.filter(|&j| j != i) {
                out.push((i, base, true));
            }
        }
        if let Some(e) = epoll.filter(|&e| e != i) {
            out.push((i, e, c.label == "uring"));
        }
        if let Some(p) = peer {
            out.push((i, p, c.label == "uring" || c.label == "epoll"));
        }
    }
    if !out.iter().any(|c| c.2) {
        for c in &mut out {
            c.2 = true;
        }
    }
    out
}

fn cost(r: &Run, metric: Metric) -> Option<f64> {
    match metric {
        Metric::ProcessCpu => Some(r.cpu_us_per_req),
        Metric::CoreBusy => r.core_us_per_req,
    }
}

/// Two anchor runs beside a run whose process CPU per request differs by more than this
/// factor show that the host switched regime between them, so across the run itself: which
/// regime that run saw is unknown, and the round is left out of the run's comparisons. Runs
/// of one server within a regime on this host differ by a few per cent; its regimes by
/// 25–50% (docs/BENCHMARKS.md, "How reproducible the verdicts are"). Only the anchor's runs
/// decide it, never the compared server's own, so it cannot lean a ratio either way. On a
/// machine whose runs all differ that much (short unpinned runs on a loaded machine), such a
/// difference is its ordinary noise and no switch: the step is then raised to
/// [`SWITCH_OVER_TYPICAL`] times the typical difference between consecutive anchor runs.
pub const SWITCH_STEP: f64 = 1.10;

/// A step between two anchor runs counts as a switch only when it is also this many times the
/// workload's median step between consecutive anchor runs (in log terms).
pub const SWITCH_OVER_TYPICAL: f64 = 3.0;

/// The factor by which the two anchor runs beside a run must differ for a regime switch, in
/// `anchor`'s runs of one workload: [`SWITCH_STEP`], or more on a machine as noisy as that
/// throughout.
fn switch_step(anchor: &Cell) -> f64 {
    let mut runs: Vec<&Run> = anchor.runs.iter().filter(|r| r.slot.is_some()).collect();
    runs.sort_by_key(|r| (r.round, r.slot));
    let mut steps: Vec<f64> = runs
        .windows(2)
        .filter(|w| w[0].round == w[1].round && w[0].cpu_us_per_req > 0.0 && w[1].cpu_us_per_req > 0.0)
        .map(|w| (w[0].cpu_us_per_req / w[1].cpu_us_per_req).ln().abs())
        .collect();
    if steps.is_empty() {
        return SWITCH_STEP;
    }
    steps.sort_by(f64::total_cmp);
    let typical = steps[steps.len() / 2];
    SWITCH_STEP.max((SWITCH_OVER_TYPICAL * typical).exp())
}

/// One side of a paired ratio: a cost, or a cost against the anchor runs beside it.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Plain(f64),
    /// The cost against the anchor runs beside it, and their process CPU per request (the
    /// host's level at that moment; `None` for the anchor itself).
    Relative(f64, Option<f64>),
    /// The anchor runs beside it straddle a regime switch.
    Switched,
}

/// What one cell cost in one round, as a ratio's side. In an anchored round (its runs have
/// slots) that is the cost relative to the geometric mean of the anchor's runs right before
/// and after it (the anchor itself is 1.0), so that a ratio between two cells is taken
/// between runs a slot apart, each against its own neighbours; otherwise it is the cost
/// itself. `None` when the round lacks the run or its neighbours.
fn side(cells: &[Cell], anchor: Option<usize>, step: f64, c: usize, round: usize, metric: Metric) -> Option<Side> {
    let cell = &cells[c];
    let run = cell.run_of(round)?;
    if run.slot.is_none() {
        return Some(Side::Plain(cost(run, metric)?));
    }
    let a = &cells[anchor?];
    if c == anchor? {
        return Some(Side::Relative(1.0, None));
    }
    let slot = run.slot?;
    let beside: Vec<&Run> =
        a.runs.iter().filter(|r| r.round == round && r.slot.is_some_and(|s| s + 1 == slot || s == slot + 1)).collect();
    let cpu: Vec<f64> = beside.iter().map(|r| r.cpu_us_per_req).collect();
    if let [x, y] = cpu[..] {
        if x > 0.0 && y > 0.0 && x.max(y) / x.min(y) > step {
            return Some(Side::Switched);
        }
    }
    let costs: Vec<f64> = beside.iter().filter_map(|r| cost(r, metric)).filter(|x| *x > 0.0 && x.is_finite()).collect();
    if costs.is_empty() {
        return None;
    }
    let base = geometric_mean(&costs);
    let level = geometric_mean(&cpu);
    Some(Side::Relative(cost(run, metric)? / base, (level > 0.0 && level.is_finite()).then_some(level)))
}

fn geometric_mean(v: &[f64]) -> f64 {
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// A pair whose anchor runs ran more than this factor above the workload's quiet level (the
/// 10th percentile of all its anchor runs) was measured while the host was busy. On this host
/// the busy regimes cost 25–50% more per request than the quiet one, and the ratios between
/// servers differ between them (docs/BENCHMARKS.md, "How reproducible the verdicts are"), so a
/// verdict over rounds of both also states each on its own.
pub const BUSY_STEP: f64 = 1.15;

/// The paired rounds of a comparison.
struct Pairs {
    /// `(a, b)` costs, or costs against the anchor, of the same kind.
    all: Vec<(f64, f64)>,
    /// Whether each pair was measured while the host was busy (anchored rounds only).
    busy: Vec<Option<bool>>,
    /// Rounds left out for a regime switch across a run.
    left_out: usize,
    /// The step between two anchor runs that counts as a switch ([`switch_step`]).
    step: f64,
}

/// The rounds both `a` and `b` were measured in.
fn pairs(cells: &[Cell], a: usize, b: usize, metric: Metric) -> Pairs {
    let w = &cells[a].workload.name;
    let anchor = cells.iter().position(|c| c.workload.name == *w && own(c) && is_anchor(c));
    let quiet = anchor.and_then(|i| {
        let mut v: Vec<f64> = cells[i].runs.iter().filter(|r| r.slot.is_some()).map(|r| r.cpu_us_per_req).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 10).copied()
    });
    let mut rounds: Vec<usize> = cells[a].runs.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    // A short run (fewer rounds than the signed-rank interval needs) cannot spare a round:
    // there every round counts.
    let step = match anchor {
        Some(i) if rounds.len() >= crate::stats::SIGNED_RANK_FROM => switch_step(&cells[i]),
        _ => f64::INFINITY,
    };
    let mut out = Pairs { all: Vec::new(), busy: Vec::new(), left_out: 0, step };
    for round in rounds {
        let (Some(x), Some(y)) =
            (side(cells, anchor, out.step, a, round, metric), side(cells, anchor, out.step, b, round, metric))
        else {
            continue;
        };
        match (x, y) {
            (Side::Plain(x), Side::Plain(y)) => {
                out.all.push((x, y));
                out.busy.push(None);
            }
            (Side::Relative(x, lx), Side::Relative(y, ly)) => {
                out.all.push((x, y));
                let level = lx.into_iter().chain(ly).fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
                out.busy.push(level.zip(quiet).map(|(l, q)| l > q * BUSY_STEP));
            }
            (Side::Switched, _) | (_, Side::Switched) => out.left_out += 1,
            _ => {}
        }
    }
    out
}

/// The ratio over the quiet and over the busy rounds of `p`, when it has enough of each for
/// the signed-rank interval (fewer give intervals too wide to tell the states apart, and
/// only clutter the verdict).
fn by_state(p: &Pairs) -> Option<ByState> {
    let pick = |want: bool| -> Vec<(f64, f64)> {
        p.all.iter().zip(&p.busy).filter(|(_, b)| **b == Some(want)).map(|(x, _)| *x).collect()
    };
    let (quiet, busy) = (pick(false), pick(true));
    if quiet.len() < crate::stats::SIGNED_RANK_FROM || busy.len() < crate::stats::SIGNED_RANK_FROM {
        return None;
    }
    Some(ByState { quiet: paired_ratio(&quiet)?, busy: paired_ratio(&busy)? })
}

/// One verdict: `a` against `b` over the rounds both were measured in.
#[must_use]
pub fn verdict(cells: &[Cell], a: usize, b: usize, metric: Metric, headline: bool) -> Verdict {
    let ca = &cells[a];
    let cb = &cells[b];
    let p = pairs(cells, a, b, metric);
    let interval = paired_ratio(&p.all);
    let states = by_state(&p);
    let busy = p.busy.iter().any(Option::is_some).then(|| p.busy.iter().filter(|b| **b == Some(true)).count());
    let (pairs, left_out, step) = (p.all, p.left_out, p.step);
    let what = match metric {
        Metric::ProcessCpu => "CPU per request",
        Metric::CoreBusy => "core busy time per request",
    };
    let mut text = match &interval {
        Some(iv) => iv.sentence(&ca.label, &cb.label, what),
        None => format!("{} vs {}: not enough paired rounds for an interval ({})", ca.label, cb.label, pairs.len()),
    };
    if let Some(st) = &states {
        let f = |iv: &crate::stats::Interval| format!("{:.2}× ({:.2}–{:.2})", iv.ratio, iv.lo, iv.hi);
        let _ = write!(
            text,
            "; host quiet in {} round(s): {}, busy in {}: {}",
            st.quiet.n,
            f(&st.quiet),
            st.busy.n,
            f(&st.busy)
        );
    }
    if left_out > 0 {
        let _ = write!(
            text,
            "; {left_out} round(s) left out, the {ANCHOR} runs beside them differing by more than {:.0}% (a host regime switch)",
            (step - 1.0) * 100.0
        );
    }
    Verdict {
        workload: ca.workload.name.clone(),
        a: ca.label.clone(),
        b: cb.label.clone(),
        metric,
        interval,
        headline,
        text,
        left_out,
        states,
        busy,
    }
}

/// Every verdict of the results, both metrics (core busy time only when it was measured).
#[must_use]
pub fn compute(r: &Results) -> Vec<Verdict> {
    let mut out = Vec::new();
    for w in r.workload_names() {
        for (a, b, headline) in comparisons(&r.cells, &w) {
            out.push(verdict(&r.cells, a, b, Metric::ProcessCpu, headline));
            let core = verdict(&r.cells, a, b, Metric::CoreBusy, headline);
            if core.interval.is_some() {
                out.push(core);
            }
        }
    }
    out
}

/// The widest interval of a workload, over every comparison it reports and both cost
/// metrics, as a half width; `Some(0.0)` when it has no comparison, `None` while one has no
/// interval yet. `--target-ci` adds rounds until this is within the target: every verdict a
/// report states, not only the headline ones, must be as well founded (a side comparison left
/// at a few rounds' width is what made two runs' verdicts differ).
#[must_use]
pub fn widest_interval(cells: &[Cell], workload: &str) -> Option<f64> {
    let mut widest = 0.0f64;
    for (a, b, headline) in comparisons(cells, workload) {
        widest = widest.max(verdict(cells, a, b, Metric::ProcessCpu, headline).interval?.half_width());
        // Core busy time is missing where /proc/stat could not be read: then only process CPU.
        if let Some(iv) = verdict(cells, a, b, Metric::CoreBusy, headline).interval {
            widest = widest.max(iv.half_width());
        }
    }
    Some(widest)
}

/// Each server's knee in a rate sweep: the highest achieved rate at a step whose corrected
/// p99 stayed within `slo_us` and which achieved at least 90% of the offered rate.
#[must_use]
pub fn knees(r: &Results, slo_us: f64) -> Vec<Knee> {
    let mut out: Vec<Knee> = Vec::new();
    for p in r.sweep.iter().filter(|p| p.kind == SweepKind::Rate) {
        let Some(run) = &p.run else { continue };
        let k = match out.iter_mut().find(|k| k.workload == p.workload && k.label == p.label) {
            Some(k) => k,
            None => {
                out.push(Knee {
                    workload: p.workload.clone(),
                    label: p.label.clone(),
                    rps: None,
                    p99_us: None,
                    max_rps: 0.0,
                });
                out.last_mut().expect("just pushed")
            }
        };
        k.max_rps = k.max_rps.max(run.rps);
        let kept_up = run.rps >= 0.9 * p.value;
        if run.p99_us > 0.0 && run.p99_us <= slo_us && kept_up && !matches!(k.rps, Some(best) if run.rps <= best) {
            k.rps = Some(run.rps);
            k.p99_us = Some(run.p99_us);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{main_workloads, LoadGen, Server};
    use crate::results::Run;

    fn cell(server: Server, costs: &[f64]) -> Cell {
        let runs = costs
            .iter()
            .enumerate()
            .map(|(round, &c)| Run {
                round,
                cpu_us_per_req: c,
                core_us_per_req: Some(c * 1.2),
                rps: 1.0,
                requests: 1,
                ..Run::default()
            })
            .collect();
        Cell::new(main_workloads()[0].clone(), server, LoadGen::Ringpoll, runs, None)
    }

    #[test]
    fn variants_are_compared_with_the_first_variant_of_their_backend() {
        let v = |name: &str| Server::RingpollVariant {
            name: name.into(),
            backend: "uring".into(),
            args: vec![],
            bin: None,
        };
        let cells = vec![cell(v("off"), &[8.0, 9.0, 8.5]), cell(v("on"), &[6.0, 6.9, 6.4])];
        let w = &cells[0].workload.name;
        assert_eq!(comparisons(&cells, w), vec![(1, 0, true)]);
        let v = verdict(&cells, 1, 0, Metric::ProcessCpu, true);
        assert!(v.text.starts_with("on uses 0.7"), "{}", v.text);
    }

    #[test]
    fn the_target_covers_every_comparison_and_both_metrics() {
        // uring vs epoll (the headline) is tight; poll vs epoll (a side comparison) is not:
        // --target-ci must wait for the wide one.
        let mut cells = vec![
            cell(Server::Ringpoll { backend: "epoll".into() }, &[8.0, 10.0, 9.0, 8.5]),
            cell(Server::Ringpoll { backend: "uring".into() }, &[6.4, 8.0, 7.2, 6.8]),
            cell(Server::Ringpoll { backend: "poll".into() }, &[6.0, 12.0, 7.0, 11.0]),
        ];
        let w = cells[0].workload.name.clone();
        let headline = verdict(&cells, 1, 0, Metric::ProcessCpu, true).interval.unwrap().half_width();
        let side = verdict(&cells, 2, 0, Metric::ProcessCpu, false).interval.unwrap().half_width();
        assert!(headline < 0.01 && side > 0.3, "headline ±{headline}, side ±{side}");
        assert_eq!(widest_interval(&cells, &w), Some(side));
        // A core-busy interval wider than every process-CPU one sets the width too.
        cells[2].runs =
            cells[0].runs.iter().map(|r| Run { cpu_us_per_req: r.cpu_us_per_req * 0.9, ..r.clone() }).collect();
        for (r, wild) in cells[2].runs.iter_mut().zip([0.5, 1.6, 0.6, 1.5]) {
            r.core_us_per_req = r.core_us_per_req.map(|c| c * wild);
        }
        cells[2].refresh();
        let core = verdict(&cells, 2, 0, Metric::CoreBusy, false).interval.unwrap().half_width();
        assert!(core > 0.3, "core ±{core}");
        assert_eq!(widest_interval(&cells, &w), Some(core));
    }

    #[test]
    fn comparisons_pair_rounds_and_name_the_headline() {
        let cells = vec![
            cell(Server::Ringpoll { backend: "epoll".into() }, &[8.0, 10.0, 9.0, 8.5]),
            cell(Server::Ringpoll { backend: "uring".into() }, &[6.0, 7.6, 6.7, 6.3]),
            cell(Server::Ringpoll { backend: "poll".into() }, &[8.1, 9.8, 9.2, 8.4]),
            cell(Server::TokioEcho, &[9.0, 11.0, 10.0, 9.5]),
            cell(Server::MonoioEcho, &[12.0, 14.0, 13.0, 12.5]),
        ];
        let w = &cells[0].workload.name;
        assert_eq!(best_peer(&cells, w).unwrap().label, "tokio");
        let cmp = comparisons(&cells, w);
        // uring and poll vs epoll; epoll, uring and poll vs tokio.
        assert_eq!(cmp.len(), 5);
        assert_eq!(cmp.iter().filter(|c| c.2).count(), 3, "uring/epoll, epoll/tokio, uring/tokio");
        let v = verdict(&cells, 1, 0, Metric::ProcessCpu, true);
        let iv = v.interval.unwrap();
        assert!(iv.hi < 1.0 && iv.n == 4, "{v:?}");
        assert!(v.text.starts_with("uring uses 0.7"), "{}", v.text);
        let v = verdict(&cells, 2, 0, Metric::ProcessCpu, false);
        assert!(v.text.contains("no difference detectable"), "{}", v.text);
        let all = compute(&Results { cells: cells.clone(), ..Results::default() });
        assert_eq!(all.len(), 10, "both metrics for each comparison");
        assert!(all.iter().any(|v| v.metric == Metric::CoreBusy && v.text.contains("core busy time per request")));
        assert!(widest_interval(&cells, w).unwrap() > 0.0);
        // Without uring or a peer, the comparisons made are the headline.
        let two = vec![cells[0].clone(), cells[2].clone()];
        assert_eq!(comparisons(&two, w), vec![(1, 0, true)]);
    }

    /// Anchored rounds `epoll uring epoll poll epoll tokio epoll` on a machine that switches
    /// regime within every round: cost ×1.5 for the first three runs, ×1.0 for the rest.
    fn anchored(rounds: usize) -> Vec<Cell> {
        let regime = |slot: usize| if slot < 3 { 1.5 } else { 1.0 };
        let mk = |server: Server, true_cost: f64, slots: &[usize]| {
            let runs = (0..rounds)
                .flat_map(|round| {
                    slots.iter().map(move |&slot| Run {
                        round,
                        slot: Some(slot),
                        cpu_us_per_req: true_cost * regime(slot),
                        core_us_per_req: Some(true_cost * regime(slot)),
                        rps: 1.0,
                        requests: 1,
                        ..Run::default()
                    })
                })
                .collect();
            Cell::new(main_workloads()[0].clone(), server, LoadGen::Ringpoll, runs, None)
        };
        vec![
            mk(Server::Ringpoll { backend: "epoll".into() }, 10.0, &[0, 2, 4, 6]),
            mk(Server::Ringpoll { backend: "uring".into() }, 9.0, &[1]),
            mk(Server::Ringpoll { backend: "poll".into() }, 10.0, &[3]),
            mk(Server::TokioEcho, 11.0, &[5]),
        ]
    }

    #[test]
    fn anchored_rounds_compare_each_run_with_the_anchor_runs_beside_it() {
        let cells = anchored(8);
        let w = cells[0].workload.name.clone();
        let ratio = |a: usize, b: usize| verdict(&cells, a, b, Metric::ProcessCpu, false).interval.unwrap();
        // uring ran beside two ×1.5 epoll runs, tokio beside two ×1.0 ones: both exact.
        let u = ratio(1, 0);
        assert!((u.ratio - 0.9).abs() < 1e-9 && u.hi - u.lo < 1e-9, "{u:?}");
        let t = ratio(3, 0);
        assert!((t.ratio - 1.1).abs() < 1e-9, "{t:?}");
        // Between two non-anchors: each against its own neighbours (0.9 / 1.1).
        let ut = ratio(1, 3);
        assert!((ut.ratio - 0.9 / 1.1).abs() < 1e-9, "{ut:?}");
        // The anchor as the first side: epoll vs tokio.
        let et = ratio(0, 3);
        assert!((et.ratio - 1.0 / 1.1).abs() < 1e-9, "{et:?}");
        // poll sat across the switch (×1.5 before it, ×1.0 after): which regime its own run
        // saw is unknown, so every round is left out of its comparisons, and the verdict says so.
        let p = verdict(&cells, 2, 0, Metric::ProcessCpu, false);
        assert!(p.interval.is_none() && p.left_out == 8, "{p:?}");
        assert!(p.text.contains("8 round(s) left out") && p.text.contains("regime switch"), "{}", p.text);
        assert_eq!(verdict(&cells, 1, 2, Metric::CoreBusy, false).left_out, 8, "either side, either metric");
        // Neighbours within a few per cent of each other: the run is taken against their
        // geometric mean.
        let mut near = cells.clone();
        for r in near[0].runs.iter_mut().filter(|r| r.slot == Some(4)) {
            r.cpu_us_per_req *= 1.05;
        }
        let t = verdict(&near, 3, 0, Metric::ProcessCpu, false).interval.unwrap();
        assert!((t.ratio - 1.1 / 1.05f64.sqrt()).abs() < 1e-9, "{t:?}");
        // The same costs paired as whole rounds (no slots: the anchor's first run) put the
        // switch between tokio and epoll: 1.1 / 1.5.
        let mut plain = cells.clone();
        for c in &mut plain {
            c.runs.retain(|r| r.slot != Some(2) && r.slot != Some(4) && r.slot != Some(6));
            for r in &mut c.runs {
                r.slot = None;
            }
        }
        let t = verdict(&plain, 3, 0, Metric::ProcessCpu, false).interval.unwrap();
        assert!((t.ratio - 1.1 / 1.5).abs() < 1e-9, "{t:?}");
        // Both metrics of every comparison, but the core-busy ones of poll's two comparisons,
        // which have no interval (every round left out).
        assert_eq!(compute(&Results { cells, ..Results::default() }).len(), 2 * comparisons(&plain, &w).len() - 2);
    }

    #[test]
    fn an_anchored_run_without_its_neighbours_is_left_out() {
        let mut cells = anchored(7);
        // Round 3 lost the epoll runs beside uring (an interruption, say).
        cells[0].runs.retain(|r| !(r.round == 3 && r.slot.is_some_and(|s| s <= 2)));
        let iv = verdict(&cells, 1, 0, Metric::ProcessCpu, true).interval.unwrap();
        assert_eq!(iv.n, 6);
        // A round measured without slots is never paired with an anchored one.
        cells[1].runs[0].slot = None;
        let iv = verdict(&cells, 1, 0, Metric::ProcessCpu, true).interval.unwrap();
        assert_eq!(iv.n, 5);
    }

    #[test]
    fn a_ratio_that_moves_with_the_host_state_is_also_stated_per_state() {
        // Anchored rounds `epoll uring epoll`; every other round the whole host is busy (all
        // costs ×1.3) and uring's ratio is 0.85 there, 0.95 when quiet.
        let mk = |server: Server, slots: &[usize], ratio: &dyn Fn(bool) -> f64| {
            let runs = (0..12)
                .flat_map(|round| {
                    let busy = round % 2 == 0;
                    let level = if busy { 13.0 } else { 10.0 };
                    slots
                        .iter()
                        .map(|&slot| Run {
                            round,
                            slot: Some(slot),
                            cpu_us_per_req: level * ratio(busy) * (1.0 + 0.001 * round as f64),
                            core_us_per_req: None,
                            rps: 1.0,
                            requests: 1,
                            ..Run::default()
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            Cell::new(main_workloads()[0].clone(), server, LoadGen::Ringpoll, runs, None)
        };
        let cells = vec![
            mk(Server::Ringpoll { backend: "epoll".into() }, &[0, 2], &|_| 1.0),
            mk(Server::Ringpoll { backend: "uring".into() }, &[1], &|busy| if busy { 0.85 } else { 0.95 }),
        ];
        let v = verdict(&cells, 1, 0, Metric::ProcessCpu, true);
        let st = v.states.expect("both states seen");
        assert_eq!((st.quiet.n, st.busy.n), (6, 6));
        assert_eq!(v.busy, Some(6), "busy rounds counted");
        assert!((st.quiet.ratio - 0.95).abs() < 1e-6 && (st.busy.ratio - 0.85).abs() < 1e-6, "{st:?}");
        assert!(st.busy.hi < st.quiet.lo, "the two states' intervals are apart: {st:?}");
        assert!(
            v.text.contains("host quiet in 6 round(s): 0.95×") && v.text.contains("busy in 6: 0.85×"),
            "{}",
            v.text
        );
        // Five busy rounds are too few for a split.
        let mut few = cells.clone();
        for c in &mut few {
            c.runs.retain(|r| r.round != 0);
        }
        assert!(verdict(&few, 1, 0, Metric::ProcessCpu, true).states.is_none());
        // One state only: no split.
        let mut quiet = cells.clone();
        for c in &mut quiet {
            c.runs.retain(|r| r.round % 2 == 1);
        }
        let v = verdict(&quiet, 1, 0, Metric::ProcessCpu, true);
        assert!(v.states.is_none() && !v.text.contains("host quiet"), "{}", v.text);
        assert_eq!(v.busy, Some(0));
        assert!((v.interval.unwrap().ratio - 0.95).abs() < 1e-6);
    }

    #[test]
    fn on_a_machine_that_noisy_throughout_a_step_between_anchor_runs_is_no_switch() {
        // `epoll uring epoll poll epoll`, every epoll run 15% off the one before: that is the
        // machine's ordinary noise here, not a regime switch, so no round is left out.
        let mk = |server: Server, slots: &[usize], cost: &dyn Fn(usize) -> f64| {
            let runs = (0..8)
                .flat_map(|round| {
                    slots.iter().map(move |&slot| Run {
                        round,
                        slot: Some(slot),
                        cpu_us_per_req: cost(slot),
                        rps: 1.0,
                        requests: 1,
                        ..Run::default()
                    })
                })
                .collect();
            Cell::new(main_workloads()[0].clone(), server, LoadGen::Ringpoll, runs, None)
        };
        let cells = vec![
            mk(Server::Ringpoll { backend: "epoll".into() }, &[0, 2, 4], &|slot| if slot == 2 { 11.5 } else { 10.0 }),
            mk(Server::Ringpoll { backend: "uring".into() }, &[1], &|_| 9.0),
            mk(Server::Ringpoll { backend: "poll".into() }, &[3], &|_| 10.0),
        ];
        assert!(switch_step(&cells[0]) > 1.4, "{}", switch_step(&cells[0]));
        let v = verdict(&cells, 1, 0, Metric::ProcessCpu, true);
        assert_eq!((v.left_out, v.interval.map(|i| i.n)), (0, Some(8)), "{}", v.text);
        // The same steps on a machine otherwise steady are switches.
        let steady = anchored(8);
        assert!((switch_step(&steady[0]) - SWITCH_STEP).abs() < 1e-12);
    }
}

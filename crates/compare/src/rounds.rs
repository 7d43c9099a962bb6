//! Paired, interleaved rounds: for each workload, every server runs once per round, in an
//! order shuffled per round, so that slow drift of the machine falls on all of them alike and
//! each round gives one paired ratio per comparison. With `--target-ci`, rounds are added
//! until every headline interval is narrow enough or the time is up. results.json is
//! rewritten after every run; a resumed run skips the runs it already has.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::Options;
use crate::matrix::Workload;
use crate::measure::{self, Interrupted, Setup};
use crate::plan::{order, Member};
use crate::results::{Cell, Results, WorkloadProgress};
use crate::verdicts;

/// Rounds never go beyond this, whatever `--target-ci` asks.
const MAX_ROUNDS: usize = 200;

/// How a plan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Done,
    Interrupted,
}

/// The index of the cell for `(w, m)`, created empty when the run has none yet.
pub fn cell_index(results: &mut Results, w: &Workload, m: &Member) -> usize {
    let probe = Cell::new(w.clone(), m.server.clone(), m.loadgen, Vec::new(), None);
    match results.cells.iter().position(|c| c.workload.name == w.name && c.label == probe.label) {
        Some(i) => i,
        None => {
            results.cells.push(probe);
            results.cells.len() - 1
        }
    }
}

/// Seconds already spent by earlier (interrupted) parts of this run.
fn spent_before(results: &Results) -> f64 {
    results.progress.iter().map(|p| p.seconds).sum()
}

fn progress_mut<'a>(results: &'a mut Results, w: &str) -> &'a mut WorkloadProgress {
    match results.progress.iter().position(|p| p.workload == w) {
        Some(i) => &mut results.progress[i],
        None => {
            results.progress.push(WorkloadProgress { workload: w.to_string(), ..WorkloadProgress::default() });
            results.progress.last_mut().expect("just pushed")
        }
    }
}

/// Run the paired rounds of every workload; results.json in `out` after every run.
pub fn run(
    opts: &Options,
    setup: &Setup,
    results: &mut Results,
    plan: &[(Workload, Vec<Member>)],
    out: &Path,
) -> Result<Ended> {
    let started = Instant::now();
    let before = spent_before(results);
    for (wi, (w, members)) in plan.iter().enumerate() {
        let cells: Vec<usize> = members.iter().map(|m| cell_index(results, w, m)).collect();
        let already = progress_mut(results, &w.name).seconds;
        if !progress_mut(results, &w.name).outcome.is_empty() {
            continue; // finished before the interruption
        }
        let w_started = Instant::now();
        // This workload's share of what is left of --max-time.
        let deadline = opts.max_time.map(|total| {
            let used = before + started.elapsed().as_secs_f64();
            let left = (total.as_secs_f64() - used).max(0.0);
            w_started + Duration::from_secs_f64(left / (plan.len() - wi) as f64)
        });
        let mut round = 0;
        let outcome = loop {
            if round >= opts.rounds {
                match opts.target_ci {
                    None => break format!("{round} rounds as asked"),
                    Some(t) => match verdicts::widest_headline(&results.cells, &w.name) {
                        Some(x) if x <= t => break format!("target ±{:.1}% reached after {round} rounds", t * 100.0),
                        _ => {}
                    },
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) && round > 0 {
                break format!("stopped by --max-time after {round} rounds");
            }
            if round >= MAX_ROUNDS {
                break format!("stopped at the {MAX_ROUNDS}-round limit");
            }
            let live: Vec<usize> = cells.iter().copied().filter(|&i| results.cells[i].error.is_none()).collect();
            if live.is_empty() {
                break "every server failed".into();
            }
            for k in order(live.len(), results.seed, wi, round) {
                let i = live[k];
                if results.cells[i].run_of(round).is_some() {
                    continue;
                }
                if setup.stop.load(Ordering::Relaxed) {
                    return Ok(Ended::Interrupted);
                }
                let (server, loadgen) = (results.cells[i].server.clone(), results.cells[i].loadgen);
                match measure::measure(setup, &server, w, loadgen, None) {
                    Ok(mut r) => {
                        r.round = round;
                        let c = &mut results.cells[i];
                        eprintln!(
                            "  [{} round {}] {:<14} {:>10.0} req/s  {:>6.2} µs CPU/req{}",
                            w.name,
                            round + 1,
                            c.label,
                            r.rps,
                            r.cpu_us_per_req,
                            r.core_us_per_req.map_or(String::new(), |x| format!("  ({x:.2} µs core busy)"))
                        );
                        c.runs.push(r);
                        c.refresh();
                    }
                    Err(e) if e.is::<Interrupted>() => return Ok(Ended::Interrupted),
                    Err(e) => {
                        let c = &mut results.cells[i];
                        eprintln!("  [{} round {}] {:<14} failed: {e:#}", w.name, round + 1, c.label);
                        c.error = Some(format!("{e:#}"));
                    }
                }
                let p = progress_mut(results, &w.name);
                p.rounds = round + 1;
                p.seconds = already + w_started.elapsed().as_secs_f64();
                results.verdicts = verdicts::compute(results);
                results.save(out)?;
            }
            round += 1;
        };
        let widest = verdicts::widest_headline(&results.cells, &w.name);
        let p = progress_mut(results, &w.name);
        p.rounds = round;
        p.seconds = already + w_started.elapsed().as_secs_f64();
        p.widest = widest;
        eprintln!("{}: {outcome} ({:.0} s)", w.name, p.seconds);
        p.outcome = outcome;
        results.verdicts = verdicts::compute(results);
        for v in
            results.verdicts.iter().filter(|v| v.workload == w.name && v.metric == crate::results::Metric::ProcessCpu)
        {
            eprintln!("    {}", v.text);
        }
        results.save(out)?;
    }
    Ok(Ended::Done)
}

//! Paired, interleaved rounds: for each workload, every server runs once per round, in an
//! order shuffled per round, so that slow drift of the machine falls on all of them alike and
//! each round gives one paired ratio per comparison. In the main matrix a round is anchored
//! on epoll: epoll runs first, last and between every two others ([`crate::plan::sequence`]),
//! and each server is compared against the two epoll runs beside it. With `--target-ci`,
//! rounds are added until every interval (every comparison, both metrics) is narrow enough or
//! the time is up. results.json is rewritten after every run; a resumed run skips the runs it
//! already has.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::Options;
use crate::interleave::{self, Block, BLOCK_ROUNDS};
use crate::matrix::Workload;
use crate::measure::{self, Interrupted, Setup};
use crate::plan::{order, sequence, Member};
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

/// Run the paired rounds of every workload; results.json in `out` after every run. The
/// workloads of one group (see [`crate::plan::groups`]) share their rounds: each round runs
/// every server of every workload of the group in one shuffled order, so that ratios
/// between the group's workloads (the idle experiment's "against zero idle") are paired too.
pub fn run(
    opts: &Options,
    setup: &Setup,
    results: &mut Results,
    plan: &[(Workload, Vec<Member>)],
    out: &Path,
) -> Result<Ended> {
    let started = Instant::now();
    let before = spent_before(results);
    // The verdicts are (re)computed here, so with this build's method (a resumed run too).
    results.interval_method = crate::stats::METHOD.into();
    let groups = crate::plan::groups(plan, opts.suite == crate::cli::Suite::Idle);
    for (gi, group) in groups.iter().enumerate() {
        // (workload index, cell index) of every row of the group.
        let rows: Vec<(usize, usize)> = group
            .iter()
            .flat_map(|&wi| plan[wi].1.iter().map(move |m| (wi, m)))
            .map(|(wi, m)| (wi, cell_index(results, &plan[wi].0, m)))
            .collect();
        let names: Vec<&str> = group.iter().map(|&wi| plan[wi].0.name.as_str()).collect();
        if names.iter().all(|n| !progress_mut(results, n).outcome.is_empty()) {
            continue; // finished before the interruption
        }
        let already: Vec<f64> = names.iter().map(|n| progress_mut(results, n).seconds).collect();
        let g_started = Instant::now();
        // This group's share of what is left of --max-time.
        let deadline = opts.max_time.map(|total| {
            let used = before + started.elapsed().as_secs_f64();
            let left = (total.as_secs_f64() - used).max(0.0);
            g_started + Duration::from_secs_f64(left / (groups.len() - gi) as f64)
        });
        // A lone anchored workload whose servers all allow it is measured in interleaved
        // blocks after its first round (which, measured run by run, gives the latency).
        let mut interleave = opts.interleave && group.len() == 1 && {
            let servers: Vec<_> =
                rows.iter().map(|&(_, i)| (&results.cells[i].server, results.cells[i].loadgen)).collect();
            interleave::eligible(&plan[group[0]].0, &servers)
        };
        // The running block, and the cells of its members in order.
        let mut block: Option<(Vec<usize>, Block)> = None;
        let mut round = 0;
        let outcome = loop {
            if round >= opts.rounds {
                match opts.target_ci {
                    None => break format!("{round} rounds as asked"),
                    Some(t) => {
                        let narrow =
                            |n: &&str| matches!(verdicts::widest_interval(&results.cells, n), Some(x) if x <= t);
                        if names.iter().all(narrow) {
                            break format!("target ±{:.1}% reached after {round} rounds", t * 100.0);
                        }
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) && round > 0 {
                break format!("stopped by --max-time after {round} rounds");
            }
            if round >= MAX_ROUNDS {
                break format!("stopped at the {MAX_ROUNDS}-round limit");
            }
            let live: Vec<(usize, usize)> =
                rows.iter().copied().filter(|&(_, i)| results.cells[i].error.is_none()).collect();
            if live.is_empty() {
                break "every server failed".into();
            }
            // A lone workload keeps the order it always had (keyed by its own index). Rounds
            // shared by several workloads (the idle experiment) are not anchored: their
            // comparisons cross workloads.
            let shuffled = order(live.len(), results.seed, group[0], round);
            let anchor = (opts.anchor && group.len() == 1)
                .then(|| live.iter().position(|&(_, i)| verdicts::is_anchor(&results.cells[i])))
                .flatten();
            let seq = sequence(&shuffled, anchor);
            let anchored = seq.len() > shuffled.len();
            if anchored {
                results.anchor = Some(verdicts::ANCHOR.into());
            }
            let todo = seq.iter().enumerate().any(|(slot, &k)| {
                let c = &results.cells[live[k].1];
                c.error.is_none() && !c.has_run(round, anchored.then_some(slot))
            });
            let mut in_block = interleave && anchored && round > 0 && todo;
            if in_block {
                let cells: Vec<usize> = live.iter().map(|&(_, i)| i).collect();
                let stale = block.as_ref().is_none_or(|(c, b)| *c != cells || b.rounds >= BLOCK_ROUNDS);
                if stale {
                    block = None; // stops the old servers before the new ones start
                    let servers: Vec<&crate::matrix::Server> =
                        cells.iter().map(|&i| &results.cells[i].server).collect();
                    match Block::start(setup, &plan[group[0]].0, &servers, &shuffled) {
                        Ok(b) => block = Some((cells, b)),
                        Err(e) => {
                            eprintln!("  [{}] interleaved blocks unavailable, measuring run by run: {e:#}", names[0]);
                            interleave = false;
                        }
                    }
                }
                // Without a block this round is measured run by run, all of it.
                in_block = block.is_some();
            }
            for (slot, k) in seq.into_iter().enumerate() {
                let (wi, i) = live[k];
                let w = &plan[wi].0;
                let slot = anchored.then_some(slot);
                if results.cells[i].has_run(round, slot) || results.cells[i].error.is_some() {
                    continue;
                }
                if setup.stop.load(Ordering::Relaxed) {
                    return Ok(Ended::Interrupted);
                }
                let (server, loadgen) = (results.cells[i].server.clone(), results.cells[i].loadgen);
                let measured = match block.as_mut().filter(|_| in_block) {
                    Some((cells, b)) => match cells.iter().position(|&c| c == i) {
                        Some(member) => b.slot(member),
                        None => Err(anyhow::anyhow!("not a member of the interleaved block")),
                    },
                    None => measure::measure(setup, &server, w, loadgen, w.rate.map(|r| r as f64)),
                };
                if measured.is_err() && in_block {
                    // The block lost a member: the next round starts a new one without it.
                    block = None;
                }
                match measured {
                    Ok(mut r) => {
                        r.round = round;
                        r.slot = slot;
                        let c = &mut results.cells[i];
                        eprintln!(
                            "  [{} round {}] {:<14} {:>10.0} req/s  {:>6.2} µs CPU/req  {}{}",
                            w.name,
                            round + 1,
                            c.label,
                            r.rps,
                            r.cpu_us_per_req,
                            if r.interleaved { "(slot)".to_string() } else { format!("p50 {:>6.0} µs", r.p50_us) },
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
                let share = g_started.elapsed().as_secs_f64() / names.len() as f64;
                for (n, a) in names.iter().zip(&already) {
                    let p = progress_mut(results, n);
                    p.rounds = round + 1;
                    p.seconds = a + share;
                }
                results.verdicts = verdicts::compute(results);
                results.save(out)?;
                if in_block && block.is_none() {
                    break; // the rest of this round waits for the next block
                }
            }
            if let Some((_, b)) = block.as_mut().filter(|_| in_block) {
                b.rounds += 1;
            }
            round += 1;
        };
        drop(block);
        let share = g_started.elapsed().as_secs_f64() / names.len() as f64;
        for (n, a) in names.iter().zip(&already) {
            let widest = verdicts::widest_interval(&results.cells, n);
            let p = progress_mut(results, n);
            p.rounds = round;
            p.seconds = a + share;
            p.widest = widest;
            eprintln!("{n}: {outcome} ({:.0} s)", p.seconds);
            p.outcome.clone_from(&outcome);
        }
        results.verdicts = verdicts::compute(results);
        for v in results
            .verdicts
            .iter()
            .filter(|v| names.contains(&v.workload.as_str()) && v.metric == crate::results::Metric::ProcessCpu)
        {
            eprintln!("    {}", v.text);
        }
        results.save(out)?;
    }
    Ok(Ended::Done)
}

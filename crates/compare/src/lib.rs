//! `ringpoll compare`: every backend on the same workloads, side by side with reference
//! servers. The server runs with one worker pinned to one CPU, the load generator on another.
//! For each workload the servers run in paired, interleaved rounds (order shuffled per round),
//! and every comparison is a ratio of CPU per request with a 95% confidence interval and a
//! verdict ([`stats`]). Output: a table on stdout and, in `--out`, results.json (rewritten
//! after every run, so Ctrl-C or a crash loses at most the run in progress; `--resume`
//! continues), report.md and SVG plots. `--sweep rate|conns` measures latency against load;
//! `--net veth` adds a veth path between two network namespaces beside loopback.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cpustat;
pub mod idle;
pub mod interleave;
pub mod matrix;
pub mod measure;
pub mod netns;
pub mod plan;
pub mod plot;
pub mod procs;
pub mod report;
pub mod results;
pub mod rounds;
pub mod stats;
pub mod sweep;
pub mod verdicts;
pub mod workload;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ringpoll_sys::signals::{self, Repeat};

/// The backends `ringpoll serve --backend` takes, in table order (compare runs the binary and
/// imports nothing from the server; the root crate's tests check this list against it).
pub const BACKENDS: [&str; 6] = ["epoll", "uring", "poll", "select", "epoll-lt", "epoll-et"];

/// The `--uring-relay` mode the server does not use by default (also checked by the root
/// crate's tests): the matrix runs it as an extra row.
pub const URING_OTHER_RELAY: &str = "copy";

pub use cli::CompareArgs;
use cli::{Options, Suite};
use measure::Setup;
use results::{Machine, Results};
use rounds::Ended;

/// The command line as typed, quoted where needed.
fn command_line(argv: &[String]) -> String {
    std::iter::once("ringpoll compare".to_string())
        .chain(argv.iter().map(|a| if a.contains(' ') { format!("'{a}'") } else { a.clone() }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The arguments after `compare` of this process.
fn own_argv() -> Vec<String> {
    let all: Vec<String> = std::env::args().collect();
    match all.iter().position(|a| a == "compare") {
        Some(i) => all[i + 1..].to_vec(),
        None => Vec::new(),
    }
}

#[derive(clap::Parser)]
struct Reparse {
    #[command(flatten)]
    args: CompareArgs,
}

/// `--resume DIR`: the flags the run in DIR was started with, and its results so far.
fn resume(dir: &std::path::Path) -> Result<(CompareArgs, Results)> {
    let extra: Vec<String> = own_argv();
    let mut rest = extra.iter().filter(|a| !a.starts_with("--resume"));
    let dir_s = dir.to_string_lossy();
    if rest.any(|a| *a != dir_s) {
        bail!("--resume takes no other flags: the run continues with the flags it was started with");
    }
    let results = Results::load(dir)?;
    let mut argv = vec!["compare".to_string()];
    argv.extend(results.argv.iter().cloned());
    let mut args = <Reparse as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("the flags recorded in {}/results.json no longer parse: {e}", dir.display()))?
        .args;
    args.out = dir.to_path_buf();
    args.seed = Some(results.seed);
    Ok((args, results))
}

/// Print a command-line error: one line, exit code 2.
fn usage_error(e: &anyhow::Error) -> ExitCode {
    eprintln!("ringpoll: error: {e:#}");
    ExitCode::from(2)
}

pub fn run(args: CompareArgs) -> Result<ExitCode> {
    let (args, previous) = match &args.resume {
        Some(dir) => match resume(dir) {
            Ok((a, r)) => (a, Some(r)),
            Err(e) => return Ok(usage_error(&e)),
        },
        None => (args, None),
    };
    let opts = match args.validate() {
        Ok(o) => o,
        Err(e) => return Ok(usage_error(&e)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    spawn_interrupt_thread(Arc::clone(&stop)).context("setting up Ctrl-C handling")?;
    let ringpoll = std::env::current_exe().context("locating the ringpoll binary")?;
    let veth = if opts.veth {
        netns::remove_stale();
        Some(netns::VethPair::create()?)
    } else {
        None
    };
    let setup = Setup {
        ringpoll: ringpoll.clone(),
        peers_dir: opts.peers_dir.clone(),
        server_cpu: opts.server_cpu,
        load_cpu: opts.load_cpu,
        duration: opts.duration,
        warmup: opts.warmup,
        netns: veth.as_ref().map(|v| (v.server_ns.clone(), v.load_ns.clone())),
        stop: Arc::clone(&stop),
    };
    let mut skipped = Vec::new();
    let (servers, wrk) = plan::servers(&opts, &ringpoll, &mut skipped);
    let sweep = matches!(opts.suite, Suite::SweepRate | Suite::SweepConns);
    let plan: Vec<_> = opts
        .workloads
        .iter()
        .map(|w| (w.clone(), plan::members(&servers, w, wrk && !sweep, w.conns, &mut skipped)))
        .collect();
    let mut results = previous.unwrap_or_else(|| new_results(&opts));
    results.complete = false;
    results.stopped = None;
    results.skipped = skipped;
    let runs: usize = plan.iter().map(|(_, m)| m.len()).sum();
    eprintln!(
        "ringpoll compare: {} workload(s), {runs} server row(s), {} x {:.1} s per run ({:.1} s warm-up){}; server {}, load {}",
        plan.len(),
        if sweep { "a sweep".to_string() } else { format!("{}{} round(s)", if opts.target_ci.is_some() { "at least " } else { "" }, opts.rounds) },
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.max_time.map_or(String::new(), |t| format!(", at most {:.0} s", t.as_secs_f64())),
        opts.server_cpu.map_or("unpinned".into(), |c| format!("on CPU {c}")),
        opts.load_cpu.map_or("unpinned".into(), |c| format!("on CPU {c}")),
    );
    results.save(&opts.out)?;
    let ended = if sweep {
        sweep::run(&opts, &setup, &mut results, &plan, &opts.out)?
    } else {
        rounds::run(&opts, &setup, &mut results, &plan, &opts.out)?
    };
    drop(veth);
    results.verdicts = verdicts::compute(&results);
    if opts.suite == Suite::Idle {
        results.idle = idle::rows(&results);
    }
    if let Some(slo) = results.slo_us {
        results.knees = verdicts::knees(&results, slo);
    }
    results.complete = ended == Ended::Done;
    if ended == Ended::Interrupted {
        results.stopped = Some("interrupted (Ctrl-C); the run in progress was discarded".into());
    }
    print!("{}", report::table(&results, false));
    for k in &results.knees {
        println!("knee {} {}: {}", k.workload, k.label, k.rps.map_or("none".into(), |v| format!("{v:.0} req/s")));
    }
    if !results.verdicts.is_empty() {
        println!("\nverdicts (95% CI over paired rounds; headline ones marked *):");
    }
    for v in results.verdicts.iter().filter(|v| v.headline || v.metric == results::Metric::ProcessCpu) {
        println!("{} {}: {} [{}]", if v.headline { "*" } else { " " }, v.workload, v.text, v.metric.describe());
    }
    if !results.idle.is_empty() {
        println!("\nidle experiment (p50 within {}x of the zero-idle figure and of epoll's):", idle::TARGET);
        for t in idle::targets(&results.idle) {
            println!("  {t}");
        }
    }
    write_outputs(&results, &opts.out)?;
    eprintln!("wrote {}/{{results.json,report.md,*.svg}}", opts.out.display());
    if ended == Ended::Interrupted {
        eprintln!(
            "interrupted: partial results kept; continue with `ringpoll compare --resume {}`",
            opts.out.display()
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

fn new_results(opts: &Options) -> Results {
    let argv = own_argv();
    Results {
        version: 2,
        suite: opts.suite.name().into(),
        command: command_line(&argv),
        argv,
        machine: Machine::probe(),
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        repeat: opts.rounds,
        target_ci: opts.target_ci,
        max_time_s: opts.max_time.map(|d| d.as_secs_f64()),
        seed: opts.seed,
        server_cpu: opts.server_cpu,
        load_cpu: opts.load_cpu,
        interval_method: stats::METHOD.into(),
        ..Results::default()
    }
}

/// results.json, report.md and the plots.
pub fn write_outputs(results: &Results, out: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    results.save(out)?;
    let plots = plot::write_all(results, out)?;
    std::fs::write(out.join("report.md"), report::markdown(results, &plots))
        .with_context(|| format!("writing {}/report.md", out.display()))?;
    Ok(())
}

/// Block SIGINT/SIGTERM here (threads inherit the mask; children get the default one back)
/// and turn the first into `stop`: the run in progress is abandoned, the results so far are
/// written. A second one exits at once.
fn spawn_interrupt_thread(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    signals::block_termination_signals()?;
    let repeat = Repeat { ignore_within: std::time::Duration::from_millis(300), exit_code: 130 };
    signals::spawn_signal_thread(
        move |_| {
            eprintln!("interrupted: stopping after cleaning up (Ctrl-C again to exit at once)");
            stop.store(true, Ordering::Relaxed);
        },
        repeat,
    )
}

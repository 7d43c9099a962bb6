//! `ringpoll compare`: every backend on the same workloads, side by side with reference
//! servers, on loopback. The server runs with one worker pinned to one CPU, the load
//! generator on another; each cell reports throughput, latency percentiles, server CPU per
//! request (from /proc over the load's measured window), syscalls per request and the user
//! share of server CPU. Output: a table on stdout and, in `--out`, results.json, report.md and
//! SVG plots.
#![forbid(unsafe_code)]

pub mod matrix;
pub mod measure;
pub mod plot;
pub mod procs;
pub mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringpoll_load::units::parse_duration;

use matrix::{LoadGen, Proto, Server, Workload};
use measure::Setup;
use report::{Cell, Machine, Results};

/// The backends `ringpoll serve --backend` takes, in table order (compare runs the binary and
/// imports nothing from the server; the root crate's tests check this list against it).
pub const BACKENDS: [&str; 6] = ["epoll", "uring", "poll", "select", "epoll-lt", "epoll-et"];

/// The `--uring-relay` mode the server does not use by default (also checked by the root
/// crate's tests): the matrix runs it as an extra row.
pub const URING_OTHER_RELAY: &str = "copy";

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Short runs (2 s after 0.5 s warm-up, one repeat): the whole matrix in under 3 minutes.
    #[arg(long)]
    pub quick: bool,
    /// Where results.json, report.md and the SVG plots go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// `main` (the backend x workload matrix) or `idle` (the idle-connection experiment).
    #[arg(long, default_value = "main", value_parser = ["main", "idle"])]
    pub suite: String,
    /// Comma-separated backends to run (default: every backend this machine can run).
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    /// Comma-separated workload names to run (default: all of the suite).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Measured time per cell (default 10s, or 2s with --quick).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before each measured window (default 2s, or 0.5s with --quick).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Runs per cell; figures are medians (default 3, or 1 with --quick).
    #[arg(long)]
    pub repeat: Option<usize>,
    /// Add reference servers: tokio and monoio (bench-scripts/peers), nginx, and wrk as a
    /// second load generator, when installed.
    #[arg(long)]
    pub with_peers: bool,
    /// Where the reference server binaries are (built by bench-scripts/build-peers.sh).
    #[arg(long, default_value = "target/peers/release")]
    pub peers_dir: PathBuf,
    /// CPU for the server under test.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU for the load generator.
    #[arg(long, default_value_t = 1)]
    pub load_cpu: usize,
    /// Do not pin (machines with one CPU are never pinned).
    #[arg(long)]
    pub no_pin: bool,
    /// Idle connection counts for `--suite idle` (500 gives select a point below its cap).
    #[arg(long, value_delimiter = ',', default_value = "0,500,1000,5000,15000")]
    pub idle_levels: Vec<usize>,
}

/// select(2) watches descriptors below 1024 only; leave room for the server's own.
const SELECT_MAX_CONNS: usize = 1000;

pub fn run(args: CompareArgs) -> Result<ExitCode> {
    let ringpoll = std::env::current_exe().context("locating the ringpoll binary")?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pin = !args.no_pin && cpus >= 2 && args.server_cpu < cpus && args.load_cpu < cpus;
    let setup = Setup {
        ringpoll: ringpoll.clone(),
        peers_dir: args.peers_dir.clone(),
        server_cpu: pin.then_some(args.server_cpu),
        load_cpu: pin.then_some(args.load_cpu),
        duration: args.duration.unwrap_or(if args.quick { Duration::from_secs(2) } else { Duration::from_secs(10) }),
        warmup: args.warmup.unwrap_or(if args.quick { Duration::from_millis(500) } else { Duration::from_secs(2) }),
    };
    let repeat = args.repeat.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let mut skipped = Vec::new();
    for b in &args.backends {
        if !BACKENDS.contains(&b.as_str()) {
            bail!("unknown backend '{b}' (available: {})", BACKENDS.join(", "));
        }
    }

    // Every backend the binary offers, if it can run here.
    let mut servers = Vec::new();
    for name in BACKENDS {
        if !args.backends.is_empty() && !args.backends.iter().any(|x| x == name) {
            continue;
        }
        match measure::backend_available(&ringpoll, name) {
            Ok(()) => {
                servers.push(Server::Ringpoll { backend: name.into() });
                if name == "epoll" {
                    servers.push(Server::RingpollSplice);
                }
                if name == "uring" {
                    servers.push(Server::RingpollUringRelay { relay: URING_OTHER_RELAY.into() });
                }
            }
            Err(e) => skipped.push(format!("{name}: {e}")),
        }
    }
    let mut wrk = false;
    if args.with_peers && args.suite == "main" {
        add_peers(&args, &mut servers, &mut skipped);
        wrk = procs::have("wrk");
        if !wrk {
            skipped.push("wrk: not installed".into());
        }
    }

    let all = if args.suite == "idle" { matrix::idle_workloads(&args.idle_levels) } else { matrix::main_workloads() };
    let workloads: Vec<Workload> =
        all.into_iter().filter(|w| args.workloads.is_empty() || args.workloads.contains(&w.name)).collect();
    if workloads.is_empty() {
        bail!("no workload matches --workloads {:?}", args.workloads);
    }

    let mut plan: Vec<(Workload, Server, LoadGen)> = Vec::new();
    for w in &workloads {
        for s in servers.iter().filter(|s| s.serves(w.proto)) {
            if matches!(s, Server::Ringpoll { backend } if backend == "select") && w.conns + w.idle > SELECT_MAX_CONNS {
                skipped.push(format!("select on {}: {} connections exceed FD_SETSIZE", w.name, w.conns + w.idle));
                continue;
            }
            plan.push((w.clone(), s.clone(), LoadGen::Ringpoll));
            let wrk_row = matches!(s, Server::Nginx) || matches!(s, Server::Ringpoll { backend } if backend == "epoll");
            if wrk && w.proto == Proto::Http && w.depth == 1 && wrk_row {
                plan.push((w.clone(), s.clone(), LoadGen::Wrk));
            }
        }
    }
    let per_cell = setup.duration + setup.warmup + Duration::from_millis(700);
    eprintln!(
        "ringpoll compare: {} cells x {repeat} run(s), about {:.0} s; server {}, load {}",
        plan.len(),
        (per_cell * (plan.len() * repeat) as u32).as_secs_f64(),
        setup.server_cpu.map_or("unpinned".into(), |c| format!("on CPU {c}")),
        setup.load_cpu.map_or("unpinned".into(), |c| format!("on CPU {c}")),
    );

    // Repeats run in rounds over the whole plan rather than back to back, so that slow drift
    // of the machine (host load, frequency) spreads over every cell instead of biasing some.
    let mut runs: Vec<Vec<measure::Run>> = vec![Vec::new(); plan.len()];
    let mut errors: Vec<Option<String>> = vec![None; plan.len()];
    for round in 0..repeat {
        for (i, (w, s, lg)) in plan.iter().enumerate() {
            if errors[i].is_some() {
                continue;
            }
            let label = Cell::new(w.clone(), s.clone(), *lg, Vec::new(), None).label;
            match measure::measure(&setup, s, w, *lg) {
                Ok(r) => {
                    eprintln!(
                        "  [{}/{repeat} {:>2}] {:<22} {:<14} {:>10.0} req/s  {:>6.2} µs CPU/req",
                        round + 1,
                        i + 1,
                        w.name,
                        label,
                        r.rps,
                        r.cpu_us_per_req
                    );
                    runs[i].push(r);
                }
                Err(e) => {
                    eprintln!("  [{}/{repeat} {:>2}] {:<22} {:<14} failed: {e:#}", round + 1, i + 1, w.name, label);
                    errors[i] = Some(format!("{e:#}"));
                }
            }
        }
    }
    let cells: Vec<Cell> = plan
        .into_iter()
        .zip(runs.into_iter().zip(errors))
        .map(|((w, s, lg), (r, e))| Cell::new(w, s, lg, r, e))
        .collect();

    let results = Results {
        suite: args.suite.clone(),
        command: std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" "),
        machine: Machine::probe(),
        duration_s: setup.duration.as_secs_f64(),
        warmup_s: setup.warmup.as_secs_f64(),
        repeat,
        server_cpu: setup.server_cpu,
        load_cpu: setup.load_cpu,
        cells,
        skipped,
    };
    print!("{}", report::table(&results, false));
    write_outputs(&results, &args.out)?;
    eprintln!("wrote {}/{{results.json,report.md,*.svg}}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn add_peers(args: &CompareArgs, servers: &mut Vec<Server>, skipped: &mut Vec<String>) {
    for (server, bin) in
        [(Server::TokioEcho, "tokio-echo"), (Server::MonoioEcho, "monoio-echo"), (Server::TokioHttp, "tokio-http")]
    {
        if args.peers_dir.join(bin).is_file() {
            servers.push(server);
        } else {
            skipped.push(format!("{bin}: not built (run bench-scripts/build-peers.sh)"));
        }
    }
    if procs::have("nginx") {
        servers.push(Server::Nginx);
        servers.push(Server::NginxStream);
    } else {
        skipped.push("nginx: not installed".into());
    }
}

/// results.json, report.md and the plots.
pub fn write_outputs(results: &Results, out: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(results)?)?;
    let mut plots = Vec::new();
    if results.suite == "idle" {
        plot::idle(results, &out.join("idle.svg"))?;
        plots.push("idle.svg".to_string());
    } else {
        plot::bars(results, &out.join("throughput.svg"), "requests per second (higher is better)", "req/s", |c| {
            c.median.rps
        })?;
        plot::bars(results, &out.join("cpu.svg"), "server CPU µs per request (lower is better)", "µs", |c| {
            c.median.cpu_us_per_req
        })?;
        plot::latency(results, &out.join("latency.svg"))?;
        plots.extend(["throughput.svg".to_string(), "cpu.svg".to_string(), "latency.svg".to_string()]);
    }
    std::fs::write(out.join("report.md"), report::markdown(results, &plots))?;
    Ok(())
}

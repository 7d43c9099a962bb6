//! `ringpoll compare`'s flags, and their validation: everything is checked before the first
//! cell runs (output directory writable, CPUs present, names known, numbers in range), so
//! that a half-hour run never fails at its end on a typo.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringpoll_load::units::parse_duration;

use crate::matrix::{self, Net, Server, Workload, PEERS};
use crate::workload::parse_workload;

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Short runs (1 s after 0.5 s warm-up, 2 rounds): the whole matrix in a few minutes.
    #[arg(long)]
    pub quick: bool,
    /// Where results.json, report.md and the SVG plots go (results.json is rewritten after
    /// every measured run).
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Continue the interrupted run in DIR with the flags it was started with (give no others).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// `main` (the backend x workload matrix) or `idle` (the idle-connection experiment).
    #[arg(long, default_value = "main", value_parser = ["main", "idle"])]
    pub suite: String,
    /// Latency against load instead of the matrix: `rate` (open loop at rising rates, knee at
    /// --slo) or `conns` (1 to 10,000 connections, closed loop).
    #[arg(long, value_enum)]
    pub sweep: Option<SweepArg>,
    /// `--sweep rate`: a server's knee is the highest rate whose p99 stays under this.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub slo: Duration,
    /// Comma-separated backends to run (default: every backend this machine can run).
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    /// A backend with extra `ringpoll serve` flags as a row of its own, for an A/B of one
    /// technique: 'NAME=BACKEND FLAGS...', e.g. 'fixed-on=uring --uring-fixed-files on'
    /// (repeatable). Each variant is compared with the first variant of its backend; with
    /// variants, the plain backends run only if --backends names them.
    #[arg(long = "variant", value_name = "SPEC", value_parser = crate::matrix::parse_variant)]
    pub variants: Vec<Server>,
    /// Comma-separated reference servers to add: tokio, monoio, nginx (see --with-peers).
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Add every reference server that is available: tokio and monoio (bench-scripts/peers),
    /// nginx, and wrk as a second load generator, when installed.
    #[arg(long)]
    pub with_peers: bool,
    /// Comma-separated built-in workload names to run (default: all of the suite, unless
    /// --workload is given).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Your own workload, e.g. 'echo size=1KiB conns=5000 depth=4', 'http conns=256 path=/x',
    /// 'proxy size=16KiB conns=64' (repeatable; keys: size, conns, depth, idle, path, name).
    #[arg(long = "workload", value_name = "SPEC", value_parser = parse_workload)]
    pub custom: Vec<Workload>,
    /// `veth`: also run every workload across a veth pair between two network namespaces
    /// (needs root), reported beside loopback.
    #[arg(long, value_enum, default_value = "loopback")]
    pub net: Net,
    /// Measured time per run (default 1s for the main matrix, 3s for --suite idle and --sweep).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before each measured window (default 0.5s for the main matrix, 1s otherwise).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// Paired rounds per workload (the minimum with --target-ci) [default: 10 for the main
    /// matrix, 2 with --quick, 5 otherwise].
    #[arg(long, alias = "repeat")]
    pub rounds: Option<usize>,
    /// Keep adding rounds until every interval (every comparison, both metrics) is within this
    /// of its ratio (`5%`).
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub target_ci: Option<f64>,
    /// Stop adding rounds after this long in all (default with --target-ci: 30m).
    #[arg(long, value_parser = parse_duration)]
    pub max_time: Option<Duration>,
    /// Run every server once per round in shuffled order only, without epoll between every
    /// two of them (the main matrix anchors its rounds on epoll by default).
    #[arg(long)]
    pub no_anchor: bool,
    /// Measure every run of an anchored round by starting its server and load afresh, instead
    /// of in interleaved blocks (the servers of a workload running together, their load
    /// generators taking turns in short slots; used where every server is ringpoll's and the
    /// workload is closed-loop echo or HTTP over loopback).
    #[arg(long)]
    pub no_interleave: bool,
    /// Seed of the per-round shuffles (default: from the clock; recorded in results.json).
    #[arg(long)]
    pub seed: Option<u64>,
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
    /// Idle connection counts for `--suite idle` (200 gives select a point below its cap;
    /// include 0: every level is compared with it).
    #[arg(long, value_delimiter = ',', default_value = "0,200,1000,10000")]
    pub idle_levels: Vec<usize>,
    /// Active ping-pong connection counts for `--suite idle` (each with every idle level).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub active_levels: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SweepArg {
    Rate,
    Conns,
}

/// What kind of comparison runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Main,
    Idle,
    SweepRate,
    SweepConns,
}

impl Suite {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Suite::Main => "main",
            Suite::Idle => "idle",
            Suite::SweepRate => "sweep-rate",
            Suite::SweepConns => "sweep-conns",
        }
    }
}

/// `5%` or `0.05`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("'{s}' is not a percentage (examples: 5%, 0.05)"))?;
    if !(v > 0.0 && v < 1.0) {
        return Err(format!("'{s}' must be between 0% and 100%"));
    }
    Ok(v)
}

/// The flags, checked and resolved.
#[derive(Clone, Debug)]
pub struct Options {
    pub suite: Suite,
    pub out: PathBuf,
    pub workloads: Vec<Workload>,
    pub backends: Vec<String>,
    /// `--variant` rows.
    pub variants: Vec<Server>,
    /// Peers asked for by name (`--peers`), or every peer (`--with-peers`).
    pub peers: Vec<String>,
    pub all_peers: bool,
    pub veth: bool,
    pub duration: Duration,
    pub warmup: Duration,
    pub server_cpu: Option<usize>,
    pub load_cpu: Option<usize>,
    pub rounds: usize,
    pub target_ci: Option<f64>,
    pub max_time: Option<Duration>,
    /// Anchored rounds (see [`crate::plan::sequence`]).
    pub anchor: bool,
    /// Anchored rounds after the first measured in interleaved blocks where the workload and
    /// its servers allow ([`crate::interleave`]).
    pub interleave: bool,
    pub seed: u64,
    pub slo: Duration,
    pub peers_dir: PathBuf,
}

/// The CPUs this process may run on.
fn usable_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, usize::from)).collect(),
    }
}

fn list(v: &[String]) -> String {
    v.join(", ")
}

/// Check that `dir` can be created and written (a probe file is written and removed).
pub fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create it", dir.display()))?;
    let probe = dir.join(".ringpoll-write-test");
    std::fs::write(&probe, b"ok").with_context(|| format!("--out {}: cannot write there", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

impl CompareArgs {
    /// Check every flag and resolve the plan's parameters; errors are one line for the
    /// command line (exit code 2).
    pub fn validate(&self) -> Result<Options> {
        let sweep = self.sweep.map(|s| match s {
            SweepArg::Rate => Suite::SweepRate,
            SweepArg::Conns => Suite::SweepConns,
        });
        if sweep.is_some() && self.suite == "idle" {
            bail!("--sweep and --suite idle cannot be combined");
        }
        let suite = sweep.unwrap_or(if self.suite == "idle" { Suite::Idle } else { Suite::Main });

        let valid_backends: Vec<String> = crate::BACKENDS.iter().map(|b| (*b).to_string()).collect();
        for b in &self.backends {
            if !valid_backends.contains(b) {
                bail!("--backends: unknown backend '{b}' (valid: {})", list(&valid_backends));
            }
        }
        for p in &self.peers {
            if !PEERS.contains(&p.as_str()) {
                bail!("--peers: unknown peer '{p}' (valid: {})", PEERS.join(", "));
            }
        }
        let mut names: Vec<String> = Vec::new();
        for v in &self.variants {
            let n = v.name();
            if names.contains(&n) || crate::BACKENDS.contains(&n.as_str()) || PEERS.contains(&n.as_str()) {
                bail!("--variant: the name '{n}' is taken (give each variant its own name)");
            }
            names.push(n);
        }
        if suite == Suite::Idle && (self.with_peers || !self.peers.is_empty()) {
            bail!("--suite idle compares ringpoll's backends only (leave out --with-peers/--peers)");
        }

        if self.active_levels.is_empty() || self.active_levels.contains(&0) {
            bail!("--active-levels: give one or more counts of at least 1 (e.g. 1,8,64)");
        }
        if self.idle_levels.is_empty() {
            bail!("--idle-levels: give one or more counts (e.g. 0,200,1000,10000)");
        }
        let builtin = if suite == Suite::Idle {
            matrix::idle_workloads(&self.idle_levels, &self.active_levels)
        } else {
            matrix::main_workloads()
        };
        let names: Vec<String> = builtin.iter().map(|w| w.name.clone()).collect();
        for w in &self.workloads {
            if !names.contains(w) {
                bail!("--workloads: unknown workload '{w}' (valid: {})", list(&names));
            }
        }
        let mut workloads: Vec<Workload> = if self.workloads.is_empty() && !self.custom.is_empty() {
            Vec::new()
        } else {
            builtin.into_iter().filter(|w| self.workloads.is_empty() || self.workloads.contains(&w.name)).collect()
        };
        for c in &self.custom {
            if workloads.iter().any(|w| w.name == c.name) {
                bail!("--workload '{}': the name {} is taken (add name=...)", c.params(), c.name);
            }
            workloads.push(c.clone());
        }
        if suite == Suite::Idle && !self.custom.is_empty() {
            bail!("--workload applies to --suite main and --sweep");
        }
        if self.net == Net::Veth {
            crate::netns::check_privilege()?;
            let veth: Vec<Workload> = workloads.iter().map(Workload::over_veth).collect();
            workloads.extend(veth);
        }

        // The main matrix takes many short rounds rather than a few long ones: this host's
        // throughput regimes last from a few seconds to a minute (bench-scripts/host-regimes.py),
        // and the shorter a round, the fewer paired runs fall on either side of a switch.
        let short = self.quick || suite == Suite::Main;
        let rounds = self.rounds.unwrap_or(if self.quick {
            2
        } else if suite == Suite::Main {
            10
        } else {
            5
        });
        if rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        let duration = self.duration.unwrap_or(if short { Duration::from_secs(1) } else { Duration::from_secs(3) });
        if duration < Duration::from_millis(100) {
            bail!("--duration must be at least 100ms");
        }
        let warmup = self.warmup.unwrap_or(if short { Duration::from_millis(500) } else { Duration::from_secs(1) });
        if self.max_time.is_some_and(|d| d.is_zero()) {
            bail!("--max-time must be longer than 0");
        }
        if self.slo.is_zero() {
            bail!("--slo must be longer than 0");
        }
        if self.target_ci.is_some() && suite != Suite::Main {
            bail!("--target-ci applies to the main matrix (its headline verdicts)");
        }
        if self.no_anchor && suite != Suite::Main {
            bail!("--no-anchor applies to the main matrix (the other suites never anchor their rounds)");
        }
        if self.no_interleave && suite != Suite::Main {
            bail!("--no-interleave applies to the main matrix (the other suites measure run by run)");
        }

        let cpus = usable_cpus();
        let names = |v: &[usize]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        for (flag, cpu) in [("--server-cpu", self.server_cpu), ("--load-cpu", self.load_cpu)] {
            if !self.no_pin && !cpus.contains(&cpu) && cpus.len() >= 2 {
                bail!("{flag} {cpu}: no such CPU available to this process (available: {})", names(&cpus));
            }
        }
        let pin = !self.no_pin && cpus.len() >= 2;
        if pin && self.server_cpu == self.load_cpu {
            bail!("--server-cpu and --load-cpu are both {}: they must differ (or pass --no-pin)", self.server_cpu);
        }
        for p in &self.peers {
            match p.as_str() {
                "nginx" if !crate::procs::have("nginx") => bail!("--peers nginx: nginx is not installed"),
                "tokio" | "monoio" if !self.peers_dir.join(format!("{p}-echo")).is_file() => {
                    bail!("--peers {p}: not built in {} (run bench-scripts/build-peers.sh)", self.peers_dir.display())
                }
                _ => {}
            }
        }
        check_writable(&self.out)?;
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        Ok(Options {
            suite,
            out: self.out.clone(),
            workloads,
            backends: self.backends.clone(),
            variants: self.variants.clone(),
            peers: self.peers.clone(),
            all_peers: self.with_peers,
            veth: self.net == Net::Veth,
            duration,
            warmup,
            server_cpu: pin.then_some(self.server_cpu),
            load_cpu: pin.then_some(self.load_cpu),
            rounds,
            target_ci: self.target_ci,
            max_time: self.max_time.or(self.target_ci.map(|_| Duration::from_secs(30 * 60))),
            anchor: suite == Suite::Main && !self.no_anchor,
            interleave: suite == Suite::Main && !self.no_anchor && !self.no_interleave,
            seed,
            slo: self.slo,
            peers_dir: self.peers_dir.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CompareArgs,
    }

    fn check(extra: &[&str]) -> Result<Options> {
        let out = std::env::temp_dir().join(format!("ringpoll-cli-test-{}", std::process::id()));
        let mut v = vec!["compare", "--no-pin", "--out", out.to_str().unwrap()];
        v.extend_from_slice(extra);
        let r = Cli::try_parse_from(v).map_err(|e| anyhow::anyhow!("{e}"))?.args.validate();
        let _ = std::fs::remove_dir_all(&out);
        r
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("5%"), Ok(0.05));
        assert_eq!(parse_percent("0.1"), Ok(0.1));
        assert!(parse_percent("0%").is_err() && parse_percent("abc").is_err() && parse_percent("150%").is_err());
    }

    #[test]
    fn every_flag_is_checked_before_anything_runs() {
        for (args, needle) in [
            (vec!["--backends", "kqueue"], "unknown backend 'kqueue' (valid: epoll"),
            (vec!["--workloads", "nope"], "unknown workload 'nope' (valid: echo-64B-c64"),
            (vec!["--peers", "apache"], "unknown peer 'apache' (valid: tokio, monoio, nginx)"),
            (vec!["--rounds", "0"], "--rounds must be at least 1"),
            (vec!["--repeat", "0"], "--rounds must be at least 1"),
            (vec!["--sweep", "rate", "--suite", "idle"], "cannot be combined"),
            (vec!["--target-ci", "5%", "--sweep", "conns"], "--target-ci applies"),
            (vec!["--no-anchor", "--suite", "idle"], "--no-anchor applies"),
            (vec!["--no-interleave", "--suite", "idle"], "--no-interleave applies"),
            (vec!["--suite", "idle", "--active-levels", "0,8"], "--active-levels"),
            (vec!["--variant", "on=uring --x", "--variant", "on=uring"], "the name 'on' is taken"),
            (vec!["--variant", "epoll=epoll"], "the name 'epoll' is taken"),
            (vec!["--variant", "on=kqueue"], "unknown backend 'kqueue'"),
            (vec!["--workload", "echo size=1KiB name=echo-64B-c64", "--workloads", "echo-64B-c64"], "is taken"),
        ] {
            let e = check(&args).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        let o = check(&["--workload", "echo size=1KiB conns=5000 depth=4"]).unwrap();
        assert_eq!(o.workloads.len(), 1, "--workload alone replaces the built-in matrix");
        let o = check(&["--workload", "http conns=8", "--workloads", "echo-64B-c64"]).unwrap();
        assert_eq!(o.workloads.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["echo-64B-c64", "http-c8"]);
        let o = check(&["--suite", "idle"]).unwrap();
        assert_eq!(o.workloads.len(), 12, "1, 8 and 64 active, each at 0, 200, 1000 and 10000 idle");
        let o = check(&["--suite", "idle", "--active-levels", "1", "--idle-levels", "0,200"]).unwrap();
        assert_eq!(
            o.workloads.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
            ["echo-64B-c1-idle0", "echo-64B-c1-idle200"]
        );
        let o = check(&["--target-ci", "5%"]).unwrap();
        assert_eq!(o.max_time, Some(Duration::from_secs(1800)));
        // Many short rounds for the main matrix; the idle suite keeps its long runs.
        assert_eq!((o.rounds, o.duration, o.warmup), (10, Duration::from_secs(1), Duration::from_millis(500)));
        let o = check(&["--suite", "idle"]).unwrap();
        assert_eq!((o.rounds, o.duration, o.warmup), (5, Duration::from_secs(3), Duration::from_secs(1)));
        assert!(o.server_cpu.is_none(), "--no-pin");
    }

    #[test]
    fn unwritable_out_is_refused() {
        let e = check_writable(Path::new("/proc/ringpoll-cannot-be-here")).unwrap_err();
        assert!(format!("{e:#}").contains("--out /proc/ringpoll-cannot-be-here"), "{e:#}");
    }
}

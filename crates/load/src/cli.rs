//! `ringpoll load`: the command line on top of [`run_load_until`].

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ringpoll_proto::units::parse_duration;
use ringpoll_sys::signals::{self, Repeat};

use crate::config::{parse_cpus, LoadConfig, LoadMode, LoadPoller};
use crate::driver::run_load_until;
use crate::report::Report;

/// A second SIGINT/SIGTERM this long after the first exits at once.
const SECOND_SIGNAL_AFTER: Duration = Duration::from_millis(300);

/// `ringpoll load [options] TARGET` (wrk's flags where they overlap).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// `HOST:PORT` (echo) or `http://HOST:PORT/path` (http).
    pub target: String,
    /// Connections kept busy (spread over the threads).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Load threads, each with its own event loop.
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// Length of the measured window (`10s`, `1m`, `500ms`).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Protocol (default: http when TARGET starts with http://, echo otherwise).
    #[arg(long, value_enum)]
    pub mode: Option<LoadMode>,
    /// Echo message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Requests in flight per connection (1 = ping-pong, more = pipelining).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Total requests per second, open loop (latency corrected for coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Extra connections that connect and stay idle for the whole run.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// Run this long before the measured window starts.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Per-second throughput and p99.
    #[arg(long)]
    pub timeline: bool,
    /// Pin load thread i to the i-th CPU of this list (`1`, `0,1`, `2-3`).
    #[arg(long, value_name = "CPUS", value_parser = parse_cpu_list)]
    pub pin: Option<CpuList>,
    /// A request unanswered for this long counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Give up on a connect after this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Event loop: epoll (one-shot, re-armed per event) or epoll-et (edge-triggered, no re-arm).
    #[arg(long, value_enum, default_value = "epoll")]
    pub poller: LoadPoller,
}

/// A parsed `--pin` list (one value for clap, not many).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    parse_cpus(s).map(CpuList)
}

impl LoadArgs {
    /// The library configuration these flags describe.
    #[must_use]
    pub fn to_config(&self) -> LoadConfig {
        LoadConfig {
            target: self.target.clone(),
            mode: self.mode,
            connections: self.connections,
            threads: self.threads,
            duration: self.duration,
            size: self.size,
            depth: self.depth,
            rate: self.rate,
            idle: self.idle,
            warmup: self.warmup,
            timeline: self.timeline,
            pin: self.pin.clone().map(|p| p.0).unwrap_or_default(),
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            grace: Duration::from_secs(2),
            progress: std::io::stderr().is_terminal(),
            poller: self.poller,
        }
    }
}

/// The `ringpoll load` subcommand. Exit code 0 after a run (errors are in the report),
/// an `Err` (exit 1) when the run could not happen or nothing could connect.
pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.to_config();
    cfg.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    spawn_interrupt_thread(Arc::clone(&stop)).context("setting up Ctrl-C handling")?;
    if !args.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", Report::header(&cfg.target, cfg.duration.as_secs_f64(), cfg.threads, cfg.connections))?;
        out.flush()?;
    }
    let report = run_load_until(cfg, &stop)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.summary())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Block SIGINT/SIGTERM in this thread (the load threads inherit the mask) and turn the
/// first one into `stop` (partial results are printed); a second one exits at once.
fn spawn_interrupt_thread(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    signals::block_termination_signals()?;
    // `timeout -s INT` signals the process and then its group: one interruption.
    let repeat = Repeat { ignore_within: SECOND_SIGNAL_AFTER, exit_code: 130 };
    signals::spawn_signal_thread(move |_| stop.store(true, Ordering::Relaxed), repeat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> LoadConfig {
        let mut v = vec!["load"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).unwrap().load.to_config()
    }

    #[test]
    fn flags_follow_wrk() {
        let c = parse(&["-c", "8", "-t", "2", "-d", "1m", "--pin", "0,1", "http://127.0.0.1:1/x"]);
        assert_eq!((c.connections, c.threads, c.duration), (8, 2, Duration::from_secs(60)));
        assert_eq!(c.pin, vec![0, 1]);
        assert_eq!(c.effective_mode(), LoadMode::Http);
        let c = parse(&[
            "--mode",
            "echo",
            "--size",
            "16384",
            "--depth",
            "16",
            "--rate",
            "2000",
            "--idle",
            "5",
            "--warmup",
            "2s",
            "--timeout",
            "250ms",
            "--connect-timeout",
            "1s",
            "--timeline",
            "127.0.0.1:7",
        ]);
        assert_eq!((c.size, c.depth, c.rate, c.idle), (16384, 16, Some(2000.0), 5));
        assert_eq!(
            (c.warmup, c.timeout, c.connect_timeout),
            (Duration::from_secs(2), Duration::from_millis(250), Duration::from_secs(1))
        );
        assert!(c.timeline && c.pin.is_empty());
        assert_eq!(c.poller, LoadPoller::Epoll);
        assert_eq!(parse(&["--poller", "epoll-et", "a:1"]).poller, LoadPoller::EpollEt);
        let d = parse(&["127.0.0.1:7"]);
        assert_eq!((d.connections, d.threads, d.duration, d.size, d.depth), (64, 1, Duration::from_secs(10), 64, 1));
        assert!(Cli::try_parse_from(["load", "--pin", "x", "a:1"]).is_err());
    }
}

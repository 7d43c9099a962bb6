//! `ringpoll load`: the command line on top of [`run_load_until`].

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use anyhow::{bail, Context};
use ringpoll_proto::units::{parse_duration, parse_size_usize};
use ringpoll_sys::signals::{self, Repeat};

use crate::config::{parse_cpus, parse_target, LoadConfig, LoadMode, LoadPoller};
use crate::driver::run_load_until;
use crate::merge::{merge_reports, window_overlap};
use crate::report::Report;
use crate::request::{parse_header, RequestSpec};

/// A second SIGINT/SIGTERM this long after the first exits at once.
const SECOND_SIGNAL_AFTER: Duration = Duration::from_millis(300);

/// `ringpoll load [options] TARGET` (wrk's and oha's flags where they overlap), or
/// `ringpoll load merge A.json B.json ...`.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LoadArgs {
    #[command(subcommand)]
    pub command: Option<LoadCommand>,
    /// `HOST:PORT` (echo) or `http://HOST:PORT/path` (http).
    #[arg(required = true)]
    pub target: Option<String>,
    /// Connections kept busy (spread over the threads).
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Load threads, each with its own event loop.
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// Length of the measured window (`10s`, `1m`, `500ms`) [default: 10s, or no limit with -n].
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Send this many requests in the measured window, then stop (with -d: whichever comes first).
    #[arg(short = 'n', long = "requests", value_name = "N")]
    pub requests: Option<u64>,
    /// Protocol (default: http when TARGET starts with http://, echo otherwise).
    #[arg(long, value_enum)]
    pub mode: Option<LoadMode>,
    /// Echo message size (`64`, `1KiB`, `16KiB`, `1MB`) [default: 64].
    #[arg(long, value_name = "BYTES", value_parser = parse_size_usize)]
    pub size: Option<usize>,
    /// HTTP method [default: GET].
    #[arg(short = 'm', long)]
    pub method: Option<String>,
    /// Extra HTTP header field, `-H "Name: value"` (repeatable; a `Host` one replaces the default).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// HTTP request body (sent with a Content-Length).
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// HTTP request body read from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Requests in flight per connection (1 = ping-pong, more = pipelining).
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// Total requests per second, open loop (latency corrected for coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Extra connections that connect and stay idle for the whole run.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,
    /// Run this long before the measured window starts (shown as warm-up, not measured).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Print the latency distribution (wrk's flag: the distribution is always printed).
    #[arg(long)]
    pub latency: bool,
    /// Per-second throughput and p99.
    #[arg(long)]
    pub timeline: bool,
    /// Pin load thread i to the i-th CPU of this list (`1`, `0,1`, `2-3`; one CPU per thread).
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

/// `ringpoll load SUBCOMMAND`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum LoadCommand {
    /// Combine the `--json` reports of loads run at the same time against one server (from
    /// several load machines): counts summed, percentiles from the merged histogram.
    Merge(MergeArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// `ringpoll load --json` outputs.
    #[arg(required = true, value_name = "REPORT.json")]
    pub files: Vec<PathBuf>,
    /// Print the merged report as one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// With `-n` and no `-d`, the window has no practical time limit.
const NO_TIME_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// A parsed `--pin` list (one value for clap, not many).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    parse_cpus(s).map(CpuList)
}

impl LoadArgs {
    /// The library configuration these flags describe. Fails on flags that would be ignored
    /// (`--size` in http mode), or a `--body-file` that cannot be read.
    pub fn to_config(&self) -> anyhow::Result<LoadConfig> {
        let target = self.target.clone().unwrap_or_default();
        let mut cfg = LoadConfig::new(target);
        cfg.mode = self.mode;
        let mode = cfg.effective_mode();
        if let (Some(size), LoadMode::Http) = (self.size, mode) {
            bail!(
                "--size {size} applies to echo mode: an HTTP request's size follows from -m, the path, -H and --body"
            );
        }
        let mut request = RequestSpec::get();
        if let Some(m) = &self.method {
            request.method = m.to_ascii_uppercase();
        }
        request.headers.clone_from(&self.headers);
        if let Some(b) = &self.body {
            request.body = b.clone().into_bytes();
        }
        if let Some(path) = &self.body_file {
            request.body = std::fs::read(path).with_context(|| format!("--body-file {}", path.display()))?;
        }
        cfg.request = request;
        cfg.connections = self.connections;
        cfg.threads = self.threads;
        cfg.max_requests = self.requests;
        cfg.duration = self.duration.unwrap_or(if self.requests.is_some() { NO_TIME_LIMIT } else { cfg.duration });
        cfg.size = self.size.unwrap_or(cfg.size);
        cfg.depth = self.depth;
        cfg.rate = self.rate;
        cfg.idle = self.idle;
        cfg.warmup = self.warmup;
        cfg.timeline = self.timeline;
        cfg.pin = self.pin.clone().map(|p| p.0).unwrap_or_default();
        cfg.timeout = self.timeout;
        cfg.connect_timeout = self.connect_timeout;
        cfg.progress = std::io::stderr().is_terminal();
        cfg.poller = self.poller;
        Ok(cfg)
    }
}

/// Print a command-line error the way clap does for bad flags: one line, exit code 2.
fn usage_error(e: &anyhow::Error) -> ExitCode {
    eprintln!("ringpoll: error: {e:#}");
    ExitCode::from(2)
}

/// The `ringpoll load` subcommand. Exit code 0 after a run with at least one successful
/// request; 1 when nothing succeeded (the summary says why) or the run could not happen
/// (nothing could connect); 2 for bad flags.
pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    if let Some(LoadCommand::Merge(m)) = &args.command {
        return merge(m);
    }
    let cfg = match args.to_config().and_then(|c| c.validate().and(parse_target(&c.target)).map(|_| c)) {
        Ok(c) => c,
        Err(e) => return Ok(usage_error(&e)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    spawn_interrupt_thread(Arc::clone(&stop)).context("setting up Ctrl-C handling")?;
    if !args.json {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", Report::header_for(&cfg))?;
        out.flush()?;
    }
    let report = run_load_until(cfg, &stop)?;
    print_report(&report, args.json)?;
    Ok(outcome(&report))
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.summary())?;
    }
    out.flush()?;
    Ok(())
}

/// Exit 1 (with one line on stderr) when no request succeeded.
fn outcome(report: &Report) -> ExitCode {
    if report.requests > 0 {
        return ExitCode::SUCCESS;
    }
    let why = report.first_error.as_deref().map_or(String::new(), |e| format!("; first error: {e}"));
    eprintln!("ringpoll: error: no successful request ({} errors{why})", report.errors.total());
    ExitCode::from(1)
}

/// `ringpoll load merge A.json B.json ...`.
fn merge(m: &MergeArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::with_capacity(m.files.len());
    for path in &m.files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return Ok(usage_error(&anyhow::anyhow!("reading {}: {e}", path.display()))),
        };
        match serde_json::from_str::<Report>(text.trim()) {
            Ok(r) => reports.push(r),
            Err(e) => {
                return Ok(usage_error(&anyhow::anyhow!(
                    "{} is not a `ringpoll load --json` report: {e}",
                    path.display()
                )))
            }
        }
    }
    let overlap = window_overlap(&reports);
    if reports.len() > 1 && overlap < 0.5 {
        eprintln!(
            "warning: the measured windows overlap only {:.0}%: the merged rate assumes the loads ran at the same time",
            overlap * 100.0
        );
    }
    let merged = match merge_reports(&reports) {
        Ok(r) => r,
        Err(e) => return Ok(usage_error(&e)),
    };
    if !m.json {
        println!("Merged {} reports against {}", reports.len(), merged.target);
    }
    print_report(&merged, m.json)?;
    Ok(outcome(&merged))
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
        try_parse(args).unwrap()
    }

    fn try_parse(args: &[&str]) -> anyhow::Result<LoadConfig> {
        let mut v = vec!["load"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map_err(|e| anyhow::anyhow!("{e}"))?.load.to_config()
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

    #[test]
    fn wrk_and_oha_flags_and_sizes_with_units() {
        let c = parse(&["--size", "16KiB", "-n", "500", "--latency", "127.0.0.1:7"]);
        assert_eq!((c.size, c.max_requests), (16 * 1024, Some(500)));
        assert!(c.duration >= Duration::from_secs(3600), "-n alone has no practical time limit");
        let c = parse(&["-n", "5", "-d", "2s", "127.0.0.1:7"]);
        assert_eq!(c.duration, Duration::from_secs(2));
        let c = parse(&["-m", "post", "-H", "X-A: 1", "-H", "X-B:2", "--body", "hi", "http://127.0.0.1:7/"]);
        assert_eq!(c.request.method, "POST");
        assert_eq!(c.request.headers, vec![("X-A".into(), "1".into()), ("X-B".into(), "2".into())]);
        assert_eq!(c.request.body, b"hi");
        assert!(try_parse(&["--size", "1000", "http://127.0.0.1:7/"]).unwrap_err().to_string().contains("echo mode"));
        assert!(try_parse(&["--size", "lots", "a:1"]).is_err());
        assert!(try_parse(&["--body", "a", "--body-file", "/x", "http://a:1/"]).is_err());
        assert!(try_parse(&["--body-file", "/nonexistent/x", "http://a:1/"])
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/x"));
        assert!(try_parse(&["-H", "nocolon", "http://a:1/"]).is_err());
        assert!(try_parse(&[]).is_err(), "TARGET is required");
    }

    #[test]
    fn merge_is_a_subcommand() {
        let cli = Cli::try_parse_from(["load", "merge", "a.json", "b.json", "--json"]).unwrap();
        match cli.load.command {
            Some(LoadCommand::Merge(m)) => {
                assert_eq!(m.files, vec![PathBuf::from("a.json"), PathBuf::from("b.json")]);
                assert!(m.json);
            }
            None => panic!("merge not parsed"),
        }
        assert!(Cli::try_parse_from(["load", "merge"]).is_err());
    }
}

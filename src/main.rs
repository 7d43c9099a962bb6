//! `ringpoll serve | load | compare`: the command line, nothing more.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use ringpoll_proto::units::parse_duration;
use ringpoll_server::{Backend, Config, Counters, Mode, Server};
use ringpoll_sys::rlimit::raise_nofile_limit;
use ringpoll_sys::signals::{self, Repeat};

#[derive(Parser)]
#[command(name = "ringpoll", version, about = "Thread-per-core TCP server, load generator and I/O-model benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sharded server (echo, HTTP/1.1 plaintext or L4 proxy).
    Serve(ServeArgs),
    /// Generate load against an echo or HTTP server (wrk-style).
    Load(ringpoll_load::LoadArgs),
    /// Run every backend on the same workloads side by side and write tables and plots.
    Compare(ringpoll_compare::CompareArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Echo,
    Http,
    Proxy,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the first stdout line reports it).
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    #[arg(long, value_enum, default_value = "echo")]
    mode: ModeArg,
    /// I/O backend: epoll, uring, poll, select, epoll-lt, epoll-et.
    #[arg(long, default_value = "epoll", value_parser = Backend::parse)]
    backend: Backend,
    /// Worker threads (default: one per usable core).
    #[arg(long)]
    workers: Option<usize>,
    /// Do not pin workers to cores.
    #[arg(long)]
    no_pin: bool,
    /// Upstream HOST:PORT for --mode proxy (repeat for round-robin).
    #[arg(long = "upstream", value_name = "HOST:PORT")]
    upstreams: Vec<String>,
    /// Maximum connections per worker (accepting pauses beyond it).
    #[arg(long, default_value_t = 100_000)]
    max_conns: usize,
    /// Close connections idle for this long (e.g. 30s); off by default.
    #[arg(long, value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// On SIGINT/SIGTERM, wait at most this long for in-flight work.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Proxy: give up on an upstream connect after this long.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Serve counters in Prometheus text format on this address.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Proxy on epoll: relay through splice(2) and a pipe per direction.
    #[arg(long)]
    splice: bool,
    /// Per-connection output high watermark in bytes (reading pauses above it).
    #[arg(long, default_value_t = 256 * 1024)]
    high_watermark: usize,
    /// Reading resumes when pending output drains to this many bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    low_watermark: usize,
    /// io_uring: size of each provided receive buffer.
    #[arg(long, default_value_t = 16 * 1024)]
    uring_buf_size: u32,
    /// io_uring: provided receive buffers per worker (power of two).
    #[arg(long, default_value_t = 1024)]
    uring_bufs: u16,
    /// io_uring: submission queue entries.
    #[arg(long, default_value_t = 1024)]
    uring_sq_entries: u32,
    /// Proxy on io_uring: copy received bytes into an output buffer, or send them straight
    /// out of the receive buffer they arrived in [default: zero-copy].
    #[arg(long, value_enum)]
    uring_relay: Option<RelayArg>,
    /// io_uring: send zero-copy (IORING_OP_SEND_ZC) when at least this many bytes are pending;
    /// 0 = never. Off by default: measured on loopback it costs more CPU per round trip, and
    /// for large messages throughput (bench-scripts/uring-send-zc-ab.py).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    uring_send_zc_min: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RelayArg {
    Copy,
    ZeroCopy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.cmd {
        Cmd::Serve(args) => serve(args),
        Cmd::Load(args) => ringpoll_load::run(args),
        Cmd::Compare(args) => ringpoll_compare::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringpoll: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGPOLL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn resolve(s: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("bad upstream '{s}' (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("upstream '{s}' resolves to no address"))
}

fn config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mode = match args.mode {
        ModeArg::Echo => Mode::Echo,
        ModeArg::Http => Mode::Http,
        ModeArg::Proxy => Mode::Proxy,
    };
    let mut cfg = Config::new(args.listen, mode, args.backend);
    if let Some(w) = args.workers {
        if w == 0 {
            bail!("--workers must be at least 1");
        }
        cfg.workers = w;
    }
    cfg.pin = !args.no_pin;
    if args.max_conns == 0 {
        bail!("--max-conns must be at least 1");
    }
    cfg.max_conns = args.max_conns;
    cfg.idle_timeout = args.idle_timeout.filter(|d| !d.is_zero());
    cfg.shutdown_timeout = args.shutdown_timeout;
    cfg.connect_timeout = args.connect_timeout;
    cfg.metrics = args.metrics;
    if args.splice && (mode != Mode::Proxy || args.backend != Backend::Epoll) {
        bail!("--splice applies to --mode proxy with --backend epoll");
    }
    cfg.splice = args.splice;
    if args.low_watermark > args.high_watermark || args.high_watermark == 0 {
        bail!("--low-watermark must not exceed --high-watermark (and the high one must be > 0)");
    }
    cfg.watermarks.high = args.high_watermark;
    cfg.watermarks.low = args.low_watermark;
    if !args.uring_bufs.is_power_of_two() {
        bail!("--uring-bufs must be a power of two (got {})", args.uring_bufs);
    }
    if args.uring_buf_size < 64 {
        bail!("--uring-buf-size must be at least 64 bytes");
    }
    cfg.uring.buf_count = args.uring_bufs;
    cfg.uring.buf_size = args.uring_buf_size;
    cfg.uring.sq_entries = args.uring_sq_entries.clamp(8, 32768);
    if let Some(relay) = args.uring_relay {
        cfg.uring.zero_copy_relay = relay == RelayArg::ZeroCopy;
    }
    cfg.uring.send_zc_min = args.uring_send_zc_min;
    if mode == Mode::Proxy && args.upstreams.is_empty() {
        bail!("--mode proxy needs at least one --upstream HOST:PORT");
    }
    if mode != Mode::Proxy && !args.upstreams.is_empty() {
        bail!("--upstream only applies to --mode proxy");
    }
    let ups = args.upstreams.iter().map(|s| resolve(s)).collect::<anyhow::Result<Vec<_>>>()?;
    cfg.upstreams = Box::leak(ups.into_boxed_slice());
    Ok(cfg)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = config(&args)?;
    if let Err(e) = raise_nofile_limit() {
        tracing::warn!("could not raise the open-file limit: {e}");
    }
    signals::block_termination_signals().context("blocking SIGINT/SIGTERM")?;
    let server = Server::start(cfg)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.local_addr())?;
        out.flush()?;
    }
    tracing::info!(
        "{} workers, backend {}, mode {}{}",
        cfg.workers,
        cfg.backend,
        cfg.mode.name(),
        if cfg.pin { ", pinned" } else { "" }
    );
    if let Some(addr) = cfg.metrics {
        let bound = ringpoll_server::metrics::spawn(addr, server.counters()).context("starting --metrics")?;
        // Second stdout line, so scripts that asked for port 0 learn the real one.
        let mut out = std::io::stdout().lock();
        writeln!(out, "metrics on http://{bound}/metrics")?;
        out.flush()?;
    }
    let shutdown = server.shutdown_handle();
    let stop = move |sig: &str| {
        tracing::info!("{sig}: stopping (finishing in-flight work; send again to exit at once)");
        shutdown.trigger();
    };
    signals::spawn_signal_thread(stop, Repeat { ignore_within: Duration::ZERO, exit_code: 1 })
        .context("starting the signal thread")?;
    let backend = cfg.backend.name();
    let per_worker = server.join()?;
    for (i, c) in per_worker.iter().enumerate() {
        eprintln!("{}", c.summary(i, backend));
    }
    if per_worker.len() > 1 {
        eprintln!("{}", Counters::sum(&per_worker).summary(per_worker.len(), "total").replacen("worker", "all", 1));
    }
    Ok(ExitCode::SUCCESS)
}

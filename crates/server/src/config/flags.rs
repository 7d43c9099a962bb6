//! `ringpoll serve` flags. One listener can be said entirely with flags; several need
//! `--config FILE` ([`super::file`]). Flags given beside `--config` override the file's
//! process-wide settings; a listener's settings cannot be split between the two.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use ringpoll_proto::proxy_protocol::Version;
use ringpoll_proto::units::{parse_duration, parse_size, parse_size_u32, parse_size_usize};
use ringpoll_proto::upstream::{Passive, Strategy, Upstream};

use super::{off_if_zero, parse_upstream, resolve, AccessLogConfig, Backend, Config, Group, Mode};
use crate::accesslog::Format;
use crate::health::ActiveCheck;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Echo,
    Http,
    Proxy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RelayArg {
    Copy,
    ZeroCopy,
}

/// A technique switched on or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl From<OnOff> for bool {
    fn from(v: OnOff) -> Self {
        v == OnOff::On
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BalanceArg {
    RoundRobin,
    LeastConn,
    Hash,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyVersionArg {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Text,
    Json,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Echo => Mode::Echo,
            ModeArg::Http => Mode::Http,
            ModeArg::Proxy => Mode::Proxy,
        }
    }
}

impl From<BalanceArg> for Strategy {
    fn from(b: BalanceArg) -> Self {
        match b {
            BalanceArg::RoundRobin => Strategy::RoundRobin,
            BalanceArg::LeastConn => Strategy::LeastConn,
            BalanceArg::Hash => Strategy::Hash,
        }
    }
}

impl From<ProxyVersionArg> for Version {
    fn from(v: ProxyVersionArg) -> Self {
        match v {
            ProxyVersionArg::V1 => Version::V1,
            ProxyVersionArg::V2 => Version::V2,
        }
    }
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => Format::Text,
            FormatArg::Json => Format::Json,
        }
    }
}

/// Health checks default to a one-second connect timeout (or the interval, if shorter).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with listeners, upstream groups and settings (docs/OPERATIONS.md,
    /// examples/). Process-wide flags given too override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0 picks a free port; the first stdout line
    /// reports it) [default: 127.0.0.1:7000].
    #[arg(long, value_name = "HOST:PORT", value_parser = resolve)]
    pub listen: Option<std::net::SocketAddr>,
    /// What to serve [default: echo].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// I/O backend: epoll, uring, poll, select, epoll-lt, epoll-et [default: epoll].
    #[arg(long, value_parser = Backend::parse)]
    pub backend: Option<Backend>,
    /// Worker threads [default: one per usable core].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub workers: Option<u32>,
    /// Do not pin workers to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Maximum connections per worker (accepting pauses beyond it) [default: 100000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns: Option<u64>,
    /// On SIGINT/SIGTERM (or after a hand-over), wait at most this long for in-flight work
    /// [default: 5s].
    #[arg(long, value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Serve counters in Prometheus text format on this address (GET /metrics).
    #[arg(long, value_name = "HOST:PORT", value_parser = resolve)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Take the listening sockets over from the ringpoll running on the same address, which
    /// then drains and exits: a restart or upgrade without refusing a connection.
    #[arg(long)]
    pub takeover: bool,

    // Deadlines (0 turns one off).
    /// Close a connection (or proxy pair) after this long with nothing moving either way
    /// [default: echo 300s, proxy 600s, http off].
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// HTTP: the whole request head must arrive within this, from its first byte (or the
    /// accept); then 408 and close [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,
    /// HTTP: longest pause between two reads of a request body; then 408 and close
    /// [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub body_timeout: Option<Duration>,
    /// HTTP: how long a connection may wait for its next request [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub keepalive_timeout: Option<Duration>,
    /// Echo and HTTP: close when output is pending and the peer accepted none of it for
    /// this long [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub send_timeout: Option<Duration>,
    /// HTTP: requests per connection; the last response carries `Connection: close`
    /// (0: no limit) [default: 10000].
    #[arg(long)]
    pub keepalive_requests: Option<u32>,
    /// HTTP: largest request body (413 beyond it), e.g. 1MiB [default: 1MiB].
    #[arg(long, value_parser = parse_size)]
    pub max_body: Option<u64>,
    /// Proxy: give up on an upstream connect after this long, then try another once
    /// [default: 3s].
    #[arg(long, value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// Proxy: close a pair whose one direction finished and that moved nothing for this
    /// long [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub half_close_timeout: Option<Duration>,

    // Buffers.
    /// Per-connection output above which reading that peer pauses [default: 256KiB].
    #[arg(long, value_parser = parse_size_usize)]
    pub high_watermark: Option<usize>,
    /// Reading resumes when pending output drains to this [default: 64KiB].
    #[arg(long, value_parser = parse_size_usize)]
    pub low_watermark: Option<usize>,

    // Proxy upstreams.
    /// Upstream for --mode proxy, HOST:PORT[@WEIGHT]; repeat for several.
    #[arg(long = "upstream", value_name = "HOST:PORT[@WEIGHT]", value_parser = parse_upstream)]
    pub upstreams: Vec<Upstream>,
    /// How a new connection picks its upstream [default: round-robin].
    #[arg(long, value_enum)]
    pub balance: Option<BalanceArg>,
    /// Passive health: failed connects within --fail-timeout that mark an upstream down for
    /// --fail-timeout (0: never) [default: 1].
    #[arg(long)]
    pub max_fails: Option<u32>,
    /// Passive health window and down time [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub fail_timeout: Option<Duration>,
    /// Active health: connect to every upstream this often (off by default).
    #[arg(long, value_parser = parse_duration)]
    pub health_interval: Option<Duration>,
    /// Active health: consecutive successes that bring an upstream back [default: 2].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub health_rise: Option<u32>,
    /// Active health: consecutive failures that mark an upstream down [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub health_fall: Option<u32>,
    /// Active health: connect timeout of one check [default: 1s, or the interval if shorter].
    #[arg(long, value_parser = parse_duration)]
    pub health_timeout: Option<Duration>,
    /// Send a PROXY protocol header (v1 text or v2 binary) to the upstream first.
    #[arg(long, value_enum)]
    pub send_proxy: Option<ProxyVersionArg>,
    /// Require a PROXY protocol header (v1 or v2) from every client; a malformed, missing
    /// or late one closes the connection.
    #[arg(long)]
    pub accept_proxy: bool,
    /// Proxy on epoll: relay through splice(2) and a pipe per direction.
    #[arg(long)]
    pub splice: bool,
    /// One line per finished proxy pair, to this file or `-` for stderr (off by default).
    #[arg(long, value_name = "PATH|-")]
    pub access_log: Option<String>,
    /// Access log format [default: text].
    #[arg(long, value_enum)]
    pub access_log_format: Option<FormatArg>,

    // io_uring.
    /// io_uring: size of each provided receive buffer [default: 16KiB].
    #[arg(long, value_parser = parse_size_u32)]
    pub uring_buf_size: Option<u32>,
    /// io_uring: provided receive buffers per worker (power of two) [default: 1024].
    #[arg(long)]
    pub uring_bufs: Option<u16>,
    /// io_uring: submission queue entries [default: 1024].
    #[arg(long)]
    pub uring_sq_entries: Option<u32>,
    /// Proxy on io_uring: copy received bytes into an output buffer, or send them straight
    /// out of the receive buffer they arrived in [default: zero-copy].
    #[arg(long, value_enum)]
    pub uring_relay: Option<RelayArg>,
    /// io_uring: send zero-copy (IORING_OP_SEND_ZC) when at least this many bytes are
    /// pending in an output buffer (bytes sent straight out of a receive buffer are plain
    /// sends); 0 = never [default: 0].
    #[arg(long, value_name = "BYTES", value_parser = parse_size_usize)]
    pub uring_send_zc_min: Option<usize>,
    /// io_uring: accept connections into the ring's fixed file table and name them by slot
    /// (no descriptor lookup per request; proxy listeners that need the client's address keep
    /// regular descriptors) [default: on].
    #[arg(long, value_enum, value_name = "on|off")]
    pub uring_fixed_files: Option<OnOff>,
    /// io_uring: recv bundles, one completion for several receive buffers [default: off].
    #[arg(long, value_enum, value_name = "on|off")]
    pub uring_bundle: Option<OnOff>,
    /// Echo on io_uring: send received bytes back straight out of their receive buffer when
    /// nothing is queued ahead of them [default: off].
    #[arg(long, value_enum, value_name = "on|off")]
    pub uring_echo_zero_copy: Option<OnOff>,
    /// io_uring: incremental receive buffer consumption (a small message takes only its bytes
    /// of a buffer) [default: off].
    #[arg(long, value_enum, value_name = "on|off")]
    pub uring_buf_inc: Option<OnOff>,
    /// io_uring: a kernel thread polls the submission queue (IORING_SETUP_SQPOLL; it sleeps
    /// after 100 ms without work) [default: off].
    #[arg(long, value_enum, value_name = "on|off")]
    pub uring_sqpoll: Option<OnOff>,
    /// io_uring: pass wait arguments through a registered region [default: off].
    #[arg(long, value_enum, value_name = "on|off")]
    pub uring_reg_wait: Option<OnOff>,
    /// io_uring: back the provided receive buffers with transparent huge pages where the
    /// system allows them [default: off].
    #[arg(long, value_enum, value_name = "on|off")]
    pub uring_huge_pages: Option<OnOff>,
}

impl ServeArgs {
    /// The configuration these flags (and the file they name) describe, validated.
    pub fn to_config(&self) -> Result<Config, String> {
        let mut cfg = match &self.config {
            Some(path) => {
                if let Some(flag) = self.listener_flag() {
                    return Err(format!("{flag} cannot be combined with --config: set it in {}", path.display()));
                }
                super::file::load(path)?
            }
            None => self.single_listener()?,
        };
        self.apply_process_flags(&mut cfg);
        cfg.validate().map_err(|e| match &self.config {
            // Settings judged together have no one line; say at least which file.
            Some(path) => format!("{}: {e}", path.display()),
            None => e,
        })?;
        Ok(cfg)
    }

    /// The first flag given that describes a listener (not allowed beside --config).
    fn listener_flag(&self) -> Option<&'static str> {
        let given: [(&'static str, bool); 24] = [
            ("--listen", self.listen.is_some()),
            ("--mode", self.mode.is_some()),
            ("--idle-timeout", self.idle_timeout.is_some()),
            ("--header-timeout", self.header_timeout.is_some()),
            ("--body-timeout", self.body_timeout.is_some()),
            ("--keepalive-timeout", self.keepalive_timeout.is_some()),
            ("--send-timeout", self.send_timeout.is_some()),
            ("--keepalive-requests", self.keepalive_requests.is_some()),
            ("--max-body", self.max_body.is_some()),
            ("--connect-timeout", self.connect_timeout.is_some()),
            ("--half-close-timeout", self.half_close_timeout.is_some()),
            ("--high-watermark", self.high_watermark.is_some()),
            ("--low-watermark", self.low_watermark.is_some()),
            ("--upstream", !self.upstreams.is_empty()),
            ("--balance", self.balance.is_some()),
            ("--max-fails", self.max_fails.is_some()),
            ("--fail-timeout", self.fail_timeout.is_some()),
            ("--health-interval", self.health_interval.is_some()),
            ("--health-rise", self.health_rise.is_some()),
            ("--health-fall", self.health_fall.is_some()),
            ("--health-timeout", self.health_timeout.is_some()),
            ("--send-proxy", self.send_proxy.is_some()),
            ("--accept-proxy", self.accept_proxy),
            ("--splice", self.splice),
        ];
        given.iter().find(|(_, g)| *g).map(|(f, _)| *f)
    }

    fn single_listener(&self) -> Result<Config, String> {
        let mode: Mode = self.mode.map_or(Mode::Echo, Mode::from);
        let listen = self.listen.unwrap_or_else(|| ([127, 0, 0, 1], 7000).into());
        let mut cfg = Config::new(listen, mode, Backend::Epoll);
        let only = |flag: &str, given: bool, modes: &[Mode]| -> Result<(), String> {
            if given && !modes.contains(&mode) {
                let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
                return Err(format!("{flag} applies to --mode {} (this is {})", names.join(" or "), mode.name()));
            }
            Ok(())
        };
        use Mode::{Echo, Http, Proxy};
        only("--header-timeout", self.header_timeout.is_some(), &[Http])?;
        only("--body-timeout", self.body_timeout.is_some(), &[Http])?;
        only("--keepalive-timeout", self.keepalive_timeout.is_some(), &[Http])?;
        only("--keepalive-requests", self.keepalive_requests.is_some(), &[Http])?;
        only("--max-body", self.max_body.is_some(), &[Http])?;
        only("--send-timeout", self.send_timeout.is_some(), &[Echo, Http])?;
        only("--uring-echo-zero-copy", self.uring_echo_zero_copy.is_some(), &[Echo])?;
        for (flag, given) in [
            ("--upstream", !self.upstreams.is_empty()),
            ("--connect-timeout", self.connect_timeout.is_some()),
            ("--half-close-timeout", self.half_close_timeout.is_some()),
            ("--balance", self.balance.is_some()),
            ("--max-fails", self.max_fails.is_some()),
            ("--fail-timeout", self.fail_timeout.is_some()),
            ("--health-interval", self.health_interval.is_some()),
            ("--health-rise", self.health_rise.is_some()),
            ("--health-fall", self.health_fall.is_some()),
            ("--health-timeout", self.health_timeout.is_some()),
            ("--send-proxy", self.send_proxy.is_some()),
            ("--accept-proxy", self.accept_proxy),
            ("--splice", self.splice),
            ("--access-log", self.access_log.is_some()),
            ("--uring-relay", self.uring_relay.is_some()),
        ] {
            only(flag, given, &[Proxy])?;
        }
        if mode == Proxy && self.upstreams.is_empty() {
            return Err("--mode proxy needs at least one --upstream HOST:PORT".into());
        }
        if (self.health_rise.is_some() || self.health_fall.is_some() || self.health_timeout.is_some())
            && self.health_interval.is_none_or(|d| d.is_zero())
        {
            return Err("--health-rise, --health-fall and --health-timeout need --health-interval".into());
        }

        let l = &mut cfg.listeners[0];
        let t = &mut l.stream.timeouts;
        set_deadline(&mut t.header, self.header_timeout);
        set_deadline(&mut t.body, self.body_timeout);
        set_deadline(&mut t.keepalive, self.keepalive_timeout);
        set_deadline(&mut t.send, self.send_timeout);
        set_deadline(&mut t.idle, self.idle_timeout);
        set_deadline(&mut l.pair.timeouts.idle, self.idle_timeout);
        set_deadline(&mut l.pair.timeouts.half_close, self.half_close_timeout);
        if let Some(d) = self.connect_timeout {
            l.pair.timeouts.connect = d;
        }
        if let Some(n) = self.keepalive_requests {
            l.stream.limits.keepalive_requests = n;
        }
        if let Some(n) = self.max_body {
            l.stream.limits.max_body = n;
        }
        for w in [&mut l.stream.watermarks, &mut l.pair.watermarks] {
            if let Some(h) = self.high_watermark {
                w.high = h;
            }
            if let Some(lo) = self.low_watermark {
                w.low = lo;
            }
        }
        l.pair.accept_proxy = self.accept_proxy;
        l.pair.send_proxy = self.send_proxy.map(Version::from);
        l.splice = self.splice;
        if mode == Proxy {
            let mut g = Group::new("default", self.upstreams.clone());
            g.strategy = self.balance.map_or(Strategy::RoundRobin, Strategy::from);
            let d = Passive::default();
            g.passive = Passive {
                max_fails: self.max_fails.unwrap_or(d.max_fails),
                fail_timeout: self.fail_timeout.unwrap_or(d.fail_timeout),
            };
            g.active = self.health_interval.and_then(off_if_zero).map(|interval| ActiveCheck {
                interval,
                rise: self.health_rise.unwrap_or(2),
                fall: self.health_fall.unwrap_or(3),
                timeout: self.health_timeout.unwrap_or(HEALTH_TIMEOUT.min(interval)),
            });
            cfg.groups.push(g);
            cfg.listeners[0].group = Some(0);
        }
        Ok(cfg)
    }

    /// Settings of the whole process (these may also override a config file).
    fn apply_process_flags(&self, cfg: &mut Config) {
        if let Some(b) = self.backend {
            cfg.backend = b;
        }
        if let Some(w) = self.workers {
            cfg.workers = w as usize;
        }
        if self.no_pin {
            cfg.pin = false;
        }
        if let Some(n) = self.max_conns {
            cfg.max_conns = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(d) = self.shutdown_timeout {
            cfg.shutdown_timeout = d;
        }
        if self.metrics.is_some() {
            cfg.metrics = self.metrics;
        }
        cfg.takeover |= self.takeover;
        if let Some(path) = &self.access_log {
            let format = self.access_log_format.map_or(Format::Text, Format::from);
            cfg.access_log = Some(AccessLogConfig { path: path.clone(), format });
        } else if let (Some(f), Some(log)) = (self.access_log_format, cfg.access_log.as_mut()) {
            log.format = f.into();
        }
        let u = &mut cfg.uring;
        if let Some(v) = self.uring_buf_size {
            u.buf_size = v;
        }
        if let Some(v) = self.uring_bufs {
            u.buf_count = v;
        }
        if let Some(v) = self.uring_sq_entries {
            u.sq_entries = v;
        }
        if let Some(r) = self.uring_relay {
            u.zero_copy_relay = r == RelayArg::ZeroCopy;
        }
        if let Some(v) = self.uring_send_zc_min {
            u.send_zc_min = v;
        }
        for (slot, flag) in [
            (&mut u.fixed_files, self.uring_fixed_files),
            (&mut u.bundle, self.uring_bundle),
            (&mut u.echo_zero_copy, self.uring_echo_zero_copy),
            (&mut u.buf_inc, self.uring_buf_inc),
            (&mut u.sqpoll, self.uring_sqpoll),
            (&mut u.reg_wait, self.uring_reg_wait),
            (&mut u.huge_pages, self.uring_huge_pages),
        ] {
            if let Some(v) = flag {
                *slot = v.into();
            }
        }
    }
}

/// A deadline flag: `0` turns it off, anything else sets it; absent keeps the default.
fn set_deadline(slot: &mut Option<Duration>, flag: Option<Duration>) {
    if let Some(d) = flag {
        *slot = off_if_zero(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.serve.to_config()
    }

    #[test]
    fn defaults_per_mode() {
        let c = config(&["--mode", "http"]).unwrap();
        let t = c.listeners[0].stream.timeouts;
        assert_eq!(
            (t.header, t.keepalive, t.send, t.idle),
            (Some(Duration::from_secs(10)), Some(Duration::from_secs(60)), Some(Duration::from_secs(60)), None)
        );
        assert_eq!(c.listeners[0].stream.limits.keepalive_requests, 10_000);
        let c = config(&[]).unwrap();
        assert_eq!(c.listeners[0].mode, Mode::Echo);
        assert_eq!(c.listeners[0].stream.timeouts.idle, Some(Duration::from_secs(300)));
        let c = config(&["--mode", "proxy", "--upstream", "127.0.0.1:1@3", "--upstream", "localhost:2"]).unwrap();
        assert_eq!(c.listeners[0].pair.timeouts.idle, Some(Duration::from_secs(600)));
        assert_eq!(c.groups[0].upstreams[0].weight, 3);
        assert_eq!(c.groups[0].upstreams[1].addr, "127.0.0.1:2".parse().unwrap());
    }

    #[test]
    fn zero_turns_a_deadline_off_and_units_work() {
        let c = config(&["--mode", "http", "--header-timeout", "0", "--max-body", "16KiB", "--idle-timeout", "2m"])
            .unwrap();
        assert_eq!(c.listeners[0].stream.timeouts.header, None);
        assert_eq!(c.listeners[0].stream.timeouts.idle, Some(Duration::from_secs(120)));
        assert_eq!(c.listeners[0].stream.limits.max_body, 16 * 1024);
    }

    #[test]
    fn flags_for_another_mode_are_refused() {
        assert!(config(&["--header-timeout", "5s"]).unwrap_err().contains("applies to --mode http"));
        assert!(config(&["--mode", "http", "--upstream", "127.0.0.1:1"]).unwrap_err().contains("--mode proxy"));
        assert!(config(&["--mode", "proxy"]).unwrap_err().contains("at least one --upstream"));
        assert!(config(&["--workers", "0"]).is_err());
        assert!(config(&["--listen", "localhost:0"]).is_ok(), "host names resolve like --upstream");
        assert!(config(&["--mode", "proxy", "--upstream", "127.0.0.1:1", "--health-rise", "3"])
            .unwrap_err()
            .contains("need --health-interval"));
        assert!(config(&["--mode", "proxy", "--upstream", "127.0.0.1:1", "--splice", "--backend", "epoll-et"])
            .unwrap_err()
            .contains("splice needs --backend epoll"));
        assert!(config(&["--config", "x.toml", "--mode", "http"]).unwrap_err().contains("cannot be combined"));
        assert!(config(&["--mode", "http", "--uring-echo-zero-copy", "on"]).unwrap_err().contains("--mode echo"));
        assert!(config(&["--uring-bundle", "maybe"]).is_err());
    }

    #[test]
    fn uring_techniques_switch_on_and_off() {
        let d = crate::config::UringConfig::default();
        let c = config(&["--backend", "uring"]).unwrap();
        assert_eq!(c.uring, d);
        let c = config(&[
            "--backend",
            "uring",
            "--uring-fixed-files",
            "off",
            "--uring-bundle",
            "off",
            "--uring-echo-zero-copy",
            "off",
            "--uring-buf-inc",
            "on",
            "--uring-sqpoll",
            "on",
            "--uring-reg-wait",
            "on",
            "--uring-huge-pages",
            "off",
        ])
        .unwrap();
        let u = c.uring;
        assert_eq!(
            (u.fixed_files, u.bundle, u.echo_zero_copy, u.buf_inc, u.sqpoll, u.reg_wait, u.huge_pages),
            (false, false, false, true, true, true, false)
        );
        // The fixed file table must be able to hold --max-conns connections per worker.
        let e = config(&["--backend", "uring", "--max-conns", "2000000"]).unwrap_err();
        assert!(e.contains("fixed file table") && e.contains("--uring-fixed-files off"), "{e}");
        assert!(config(&["--backend", "uring", "--max-conns", "2000000", "--uring-fixed-files", "off"]).is_ok());
        assert!(config(&["--backend", "epoll", "--max-conns", "2000000"]).is_ok(), "only io_uring has the table");
    }
}

//! What a load run is asked to do ([`LoadConfig`]), checked and resolved into the read-only
//! [`Plan`] every load thread shares.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::request::RequestSpec;

/// What the target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Send `--size`-byte messages and verify every echoed byte.
    Echo,
    /// Send `GET` requests and frame the responses.
    Http,
}

impl LoadMode {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            LoadMode::Echo => "echo",
            LoadMode::Http => "http",
        }
    }
}

/// The event-loop flavour of the load threads (both are epoll).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LoadPoller {
    /// Edge-triggered one-shot, re-armed after every event (the server's default backend).
    #[default]
    Epoll,
    /// Edge-triggered without one-shot: no re-arm call per request (one system call fewer).
    EpollEt,
}

/// Everything a load run needs; [`LoadConfig::new`] gives the CLI's defaults.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// `HOST:PORT` (echo) or `http://HOST[:PORT][/path]` (http).
    pub target: String,
    /// `None`: http when the target starts with `http://`, echo otherwise.
    pub mode: Option<LoadMode>,
    /// Active connections (spread over the threads).
    pub connections: usize,
    pub threads: usize,
    /// Measured window (after the warmup).
    pub duration: Duration,
    /// Echo message size in bytes.
    pub size: usize,
    /// HTTP: method, extra header fields and body of every request (a plain `GET` by default).
    pub request: RequestSpec,
    /// `-n`: stop after this many requests have been sent in the measured window (the window
    /// then ends when their replies are in, or at `duration`, whichever comes first).
    pub max_requests: Option<u64>,
    /// Requests in flight per connection (1 = ping-pong).
    pub depth: usize,
    /// Total requests per second over all connections (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// Extra connections that connect and stay idle.
    pub idle: usize,
    /// Load runs this long before the measured window starts.
    pub warmup: Duration,
    /// Collect per-second rows.
    pub timeline: bool,
    /// Pin thread `i` to CPU `pin[i]` (at least one entry per thread); empty = no pinning.
    pub pin: Vec<usize>,
    /// A request unanswered for this long is a timeout (the connection is replaced).
    pub timeout: Duration,
    /// A connect not completed within this long is a connect error.
    pub connect_timeout: Duration,
    /// After the window, wait at most this long for requests still in flight.
    pub grace: Duration,
    /// Draw a live progress line on stderr.
    pub progress: bool,
    pub poller: LoadPoller,
}

impl LoadConfig {
    #[must_use]
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            mode: None,
            connections: 64,
            threads: 1,
            duration: Duration::from_secs(10),
            size: 64,
            request: RequestSpec::get(),
            max_requests: None,
            depth: 1,
            rate: None,
            idle: 0,
            warmup: Duration::ZERO,
            timeline: false,
            pin: Vec::new(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            grace: Duration::from_secs(2),
            progress: false,
            poller: LoadPoller::Epoll,
        }
    }

    /// Check the settings; errors are phrased for the command line.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if self.threads > self.connections {
            bail!("--connections ({}) must be at least --threads ({})", self.connections, self.threads);
        }
        if self.connections + self.idle > u32::MAX as usize / 2 {
            bail!("too many connections");
        }
        if self.depth == 0 || self.depth > 65_536 {
            bail!("--depth must be between 1 and 65536");
        }
        if self.size == 0 || self.size > 1 << 30 {
            bail!("--size must be between 1 byte and 1 GiB");
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                bail!("--rate must be a positive number of requests per second");
            }
        }
        if self.duration.is_zero() {
            bail!("--duration must be longer than 0");
        }
        if self.max_requests == Some(0) {
            bail!("-n/--requests must be at least 1");
        }
        if self.effective_mode() == LoadMode::Echo && !self.request.is_plain_get() {
            bail!("-m, -H, --body and --body-file apply to http mode (the target is echo)");
        }
        self.request.validate()?;
        if !self.pin.is_empty() && self.pin.len() < self.threads {
            bail!(
                "--pin lists {} CPU(s) for {} threads: give one CPU per thread (e.g. --pin {}), or repeat a CPU \
                 to share it on purpose (--pin {})",
                self.pin.len(),
                self.threads,
                (0..self.threads).map(|i| i.to_string()).collect::<Vec<_>>().join(","),
                vec![self.pin[0].to_string(); self.threads].join(",")
            );
        }
        if let Some(ids) = core_affinity::get_core_ids() {
            if let Some(bad) = self.pin.iter().find(|&&c| !ids.iter().any(|id| id.id == c)) {
                let avail: Vec<String> = ids.iter().map(|id| id.id.to_string()).collect();
                bail!("--pin: CPU {bad} is not available to this process (available: {})", avail.join(", "));
            }
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            bail!("--timeout and --connect-timeout must be longer than 0");
        }
        Ok(())
    }

    /// The mode this run uses (explicit, or guessed from the target).
    #[must_use]
    pub fn effective_mode(&self) -> LoadMode {
        self.mode.unwrap_or(if self.target.starts_with("http://") { LoadMode::Http } else { LoadMode::Echo })
    }
}

/// A parsed and resolved target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` header value (the URL's authority, or `HOST:PORT`).
    pub host: String,
    /// Request target (path and query), `/` by default.
    pub path: String,
}

/// Parse `HOST:PORT` or `http://HOST[:PORT][/path]` and resolve the host.
pub fn parse_target(s: &str) -> anyhow::Result<Target> {
    let s = s.trim();
    if s.starts_with("https://") {
        bail!("https targets are not supported (plain http:// or HOST:PORT only)");
    }
    let (authority, path, default_port) = match s.strip_prefix("http://") {
        Some(rest) => {
            let (auth, path) = match rest.find(['/', '?']) {
                Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
                Some(i) => (&rest[..i], rest[i..].to_string()),
                None => (rest, "/".to_string()),
            };
            (auth, path, Some(80))
        }
        None => {
            if s.contains("://") {
                bail!("unsupported target '{s}' (expected HOST:PORT or http://HOST:PORT/path)");
            }
            (s, "/".to_string(), None)
        }
    };
    if authority.is_empty() {
        bail!("target '{s}' has no host");
    }
    let has_port = !authority.ends_with(']') && authority.contains(':');
    let addr = if has_port {
        authority.to_socket_addrs()
    } else if let Some(port) = default_port {
        (authority.trim_start_matches('[').trim_end_matches(']'), port).to_socket_addrs()
    } else {
        bail!("target '{s}' needs a port (HOST:PORT)");
    }
    .with_context(|| format!("cannot resolve '{authority}'"))?
    .next()
    .with_context(|| format!("'{authority}' resolves to no address"))?;
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        bail!("the path of '{s}' contains spaces or control characters");
    }
    Ok(Target { addr, host: authority.to_string(), path })
}

/// Parse a CPU list: `1`, `0,1`, `0-3`, `0-1,4`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid CPU list '{s}' (examples: 1, 0,1, 0-3)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("empty CPU list '{s}'"));
    }
    Ok(out)
}

/// The read-only plan every load thread shares. Times are nanoseconds since `epoch`.
#[derive(Debug)]
pub(crate) struct Plan {
    pub addr: SocketAddr,
    pub mode: LoadMode,
    /// Bytes per request on the wire (echo: the message size).
    pub msg_len: usize,
    pub depth: usize,
    /// Http: the request repeated enough times for any batch to be one contiguous slice.
    pub requests: Vec<u8>,
    /// Open loop: per-connection interval between intended send times.
    pub interval_ns: Option<f64>,
    pub connections: usize,
    pub epoch: Instant,
    /// Wall-clock time of `epoch`, in seconds since the Unix epoch (to report the window).
    pub epoch_unix_s: f64,
    pub warm_end: u64,
    pub end: u64,
    pub grace: u64,
    pub timeout: u64,
    pub connect_timeout: u64,
    pub timeline: bool,
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Plan {
    pub fn new(cfg: &LoadConfig, mode: LoadMode, target: &Target, epoch: Instant) -> Self {
        let (msg_len, requests) = match mode {
            LoadMode::Echo => (cfg.size, Vec::new()),
            LoadMode::Http => {
                let one = cfg.request.render(&target.path, &target.host);
                // Enough copies for any batch to be one contiguous slice, within ~4 MiB (large
                // bodies are then sent in more than one call).
                let copies = (cfg.depth.max(16) + 1).min((4 << 20) / one.len().max(1)).max(2);
                (one.len(), one.repeat(copies))
            }
        };
        let warm_end = nanos(cfg.warmup);
        Self {
            addr: target.addr,
            mode,
            msg_len,
            depth: cfg.depth,
            requests,
            interval_ns: cfg.rate.map(|r| cfg.connections as f64 * 1e9 / r),
            connections: cfg.connections,
            epoch,
            epoch_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            warm_end,
            end: warm_end.saturating_add(nanos(cfg.duration)),
            grace: nanos(cfg.grace.min(cfg.timeout)),
            timeout: nanos(cfg.timeout),
            connect_timeout: nanos(cfg.connect_timeout),
            timeline: cfg.timeline,
        }
    }

    /// Nanoseconds since the epoch (vDSO clock read, no system call).
    #[inline]
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = parse_target("http://127.0.0.1:8080/plaintext?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/plaintext?x=1");
        let t = parse_target("http://127.0.0.1").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/"));
        let t = parse_target("http://127.0.0.1:9?a").unwrap();
        assert_eq!(t.path, "/?a");
        let t = parse_target("127.0.0.1:7000").unwrap();
        assert_eq!(t.addr.port(), 7000);
        let t = parse_target("http://[::1]:81/").unwrap();
        assert_eq!(t.addr, "[::1]:81".parse().unwrap());
        assert!(parse_target("https://x:1/").is_err());
        assert!(parse_target("127.0.0.1").is_err());
        assert!(parse_target("ftp://x:1").is_err());
        assert!(parse_target("http:///x").is_err());
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpus("1"), Ok(vec![1]));
        assert_eq!(parse_cpus("0,1"), Ok(vec![0, 1]));
        assert_eq!(parse_cpus("0-2,5"), Ok(vec![0, 1, 2, 5]));
        assert!(parse_cpus("x").is_err());
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn validation_rejects_nonsense() {
        let mut c = LoadConfig::new("127.0.0.1:1");
        assert!(c.validate().is_ok());
        c.threads = 65;
        assert!(c.validate().is_err());
        c.threads = 1;
        c.rate = Some(0.0);
        assert!(c.validate().is_err());
        c.rate = None;
        c.depth = 0;
        assert!(c.validate().is_err());
        c.depth = 1;
        c.pin = vec![100_000];
        assert!(c.validate().unwrap_err().to_string().contains("CPU 100000"));
        c.pin = vec![0];
        c.threads = 2;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--pin lists 1 CPU(s) for 2 threads") && e.contains("--pin 0,0"), "{e}");
        c.threads = 1;
        c.pin.clear();
        c.request.method = "POST".into();
        assert!(c.validate().unwrap_err().to_string().contains("apply to http mode"));
        c.request.method = "GET".into();
        c.max_requests = Some(0);
        assert!(c.validate().is_err());
        assert_eq!(LoadConfig::new("http://a:1/").effective_mode(), LoadMode::Http);
        assert_eq!(LoadConfig::new("a:1").effective_mode(), LoadMode::Echo);
    }
}

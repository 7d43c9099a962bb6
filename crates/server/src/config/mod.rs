//! The server's configuration: built once from the command line ([`flags`]) or a TOML file
//! ([`file`]), checked once by [`Config::validate`] (the only place where combinations of
//! settings are judged), then shared read-only by every worker.

pub mod file;
pub mod flags;
mod values;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use ringpoll_proto::buf::Watermarks;
use ringpoll_proto::lifecycle::pair::PairConfig;
use ringpoll_proto::lifecycle::stream::StreamConfig;
use ringpoll_proto::upstream::{Passive, Strategy, Upstream};

use crate::accesslog::Format;
use crate::health::ActiveCheck;

/// I/O backend of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Edge-triggered epoll with EPOLLONESHOT re-arm (the default).
    Epoll,
    /// io_uring: completions instead of readiness.
    Uring,
    Poll,
    Select,
    /// Level-triggered epoll, no one-shot.
    EpollLt,
    /// Edge-triggered epoll, no one-shot.
    EpollEt,
}

impl Backend {
    pub const ALL: [Backend; 6] =
        [Backend::Epoll, Backend::Uring, Backend::Poll, Backend::Select, Backend::EpollLt, Backend::EpollEt];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
            Backend::Uring => "uring",
            Backend::Poll => "poll",
            Backend::Select => "select",
            Backend::EpollLt => "epoll-lt",
            Backend::EpollEt => "epoll-et",
        }
    }

    /// Parse a backend name; the error lists what is available.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|b| b.name()).collect();
            format!("unknown backend '{s}' (available: {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Http,
    Proxy,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Echo, Mode::Http, Mode::Proxy];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Http => "http",
            Mode::Proxy => "proxy",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| format!("unknown mode '{s}' (echo, http, proxy)"))
    }
}

/// io_uring-specific knobs. The techniques (`--uring-fixed-files` ... `--uring-reg-wait`) are
/// asked for here; each is probed when a worker sets up its ring, and one the kernel lacks is
/// off with one INFO line (the worker runs as without it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries (the completion queue is sized from it).
    pub sq_entries: u32,
    /// Size of each provided receive buffer.
    pub buf_size: u32,
    /// Number of provided receive buffers per worker (a power of two).
    pub buf_count: u16,
    /// Proxy: send received bytes straight out of the provided buffer they arrived in
    /// instead of copying them into a per-direction output buffer. The default: at a fixed
    /// rate it takes 7-11% less server CPU per round trip at 16 KiB and the same at 64 B
    /// (`bench-scripts/uring-relay-ab.py`).
    pub zero_copy_relay: bool,
    /// Sends of at least this many bytes use IORING_OP_SEND_ZC (0: never, the default; it
    /// does not pay on loopback, `bench-scripts/uring-send-zc-ab.py`).
    pub send_zc_min: usize,
    /// Accept connections straight into the ring's fixed file table (direct descriptors) and
    /// name them by slot in every request (Linux 5.19). Proxy listeners whose pairs need the
    /// client's address (PROXY protocol either way, hash balancing, access log) keep regular
    /// descriptors; upstream sockets always do.
    pub fixed_files: bool,
    /// Recv bundles: one receive completion for several provided buffers (Linux 6.10,
    /// self-tested at start).
    pub bundle: bool,
    /// Echo: send received bytes back straight out of the provided buffer they arrived in
    /// when nothing is queued ahead of them (no copy into the output buffer).
    pub echo_zero_copy: bool,
    /// Incremental buffer consumption (IOU_PBUF_RING_INC, Linux 6.12): a small message takes
    /// only its bytes of a provided buffer.
    pub buf_inc: bool,
    /// A kernel thread polls the submission queue (IORING_SETUP_SQPOLL), sleeping after
    /// [`SQPOLL_IDLE`] without work.
    pub sqpoll: bool,
    /// Waits pass their arguments through a registered region (Linux 6.13).
    pub reg_wait: bool,
    /// The provided receive buffers are mapped on a huge-page boundary and advised
    /// MADV_HUGEPAGE, so that where transparent huge pages are allowed the pool takes a few
    /// TLB entries instead of one per 4 KiB (the ring hands out a different buffer for every
    /// receive).
    pub huge_pages: bool,
}

/// How long the SQPOLL thread polls without work before it sleeps (a submission then costs
/// one wake-up system call).
pub const SQPOLL_IDLE: Duration = Duration::from_millis(100);

/// The kernel's cap on a ring's fixed file table (IORING_MAX_FIXED_FILES).
pub const MAX_FIXED_FILES: usize = 1 << 20;

/// Completion queue entries per submission queue entry: multishot requests (one receive per
/// connection) post many completions per submission.
const CQ_PER_SQ: u32 = 4;

/// The techniques' defaults, from their A/B runs (`bench-scripts/uring-*-ab.py`, one worker on
/// CPU 0, load on CPU 1, paired rounds; figures in docs/BENCHMARKS.md): a technique is on only
/// where it measurably saves CPU or brings something else. Fixed files: no CPU difference
/// detectable, on because connections then take no process descriptor. Recv bundles cost 3-5%
/// more at 16 KiB and nothing less elsewhere: off. Echo from the receive buffer, incremental
/// buffers, registered waits: no difference detectable on any workload, so off (the copy path
/// gives provided buffers back at once instead of holding them while a slow peer drains).
/// SQPOLL: 1.5-2x the CPU per request where the poller shares the worker's core: off. Huge
/// pages for the receive buffers: no difference detectable (1.02x at 64 B echo, CI 1.00-1.04):
/// off.
impl Default for UringConfig {
    fn default() -> Self {
        Self {
            sq_entries: 1024,
            buf_size: 16 * 1024,
            buf_count: 1024,
            zero_copy_relay: true,
            send_zc_min: 0,
            fixed_files: true,
            bundle: false,
            echo_zero_copy: false,
            buf_inc: false,
            sqpoll: false,
            reg_wait: false,
            huge_pages: false,
        }
    }
}

impl UringConfig {
    /// Completion queue entries of a worker's ring.
    #[must_use]
    pub fn cq_entries(&self) -> u32 {
        self.sq_entries.clamp(1, 32768).next_power_of_two().saturating_mul(CQ_PER_SQ).min(65536)
    }

    /// Slots of the fixed file table a worker asks for with `max_conns` connections (0 when
    /// fixed files are off): one per connection, plus one per completion queue entry. A
    /// multishot accept that finds the table full has already taken the connection off the
    /// accept queue and can only drop it, so the worker stops accepting while fewer slots
    /// than that are free; the accepts of one wake-up cannot post more completions than the
    /// queue holds.
    #[must_use]
    pub fn fixed_slots(&self, max_conns: usize) -> usize {
        if self.fixed_files {
            max_conns.saturating_add(self.cq_entries() as usize)
        } else {
            0
        }
    }
}

/// One listening address and what it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    pub listen: SocketAddr,
    pub mode: Mode,
    /// Echo and HTTP connections.
    pub stream: StreamConfig,
    /// Proxy pairs.
    pub pair: PairConfig,
    /// Proxy: the upstream group (index into [`Config::groups`]).
    pub group: Option<usize>,
    /// Proxy on epoll: relay through splice(2) and a pipe per direction.
    pub splice: bool,
}

impl Listener {
    /// A listener with the defaults of its mode.
    #[must_use]
    pub fn new(listen: SocketAddr, mode: Mode) -> Self {
        let stream = match mode {
            Mode::Http => StreamConfig::http(),
            Mode::Echo | Mode::Proxy => StreamConfig::echo(),
        };
        Self { listen, mode, stream, pair: PairConfig::default(), group: None, splice: false }
    }
}

/// An upstream group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub name: String,
    pub upstreams: Vec<Upstream>,
    pub strategy: Strategy,
    pub passive: Passive,
    pub active: Option<ActiveCheck>,
}

impl Group {
    #[must_use]
    pub fn new(name: &str, upstreams: Vec<Upstream>) -> Self {
        Self {
            name: name.to_string(),
            upstreams,
            strategy: Strategy::RoundRobin,
            passive: Passive::default(),
            active: None,
        }
    }
}

/// Where the proxy's access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// A file path, or `-` for stderr.
    pub path: String,
    pub format: Format,
}

/// Everything the server runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub groups: Vec<Group>,
    pub backend: Backend,
    pub workers: usize,
    pub pin: bool,
    /// Per worker; beyond it the worker stops accepting until a connection closes.
    pub max_conns: usize,
    pub shutdown_timeout: Duration,
    /// Accepts per listener wake-up (fairness to established connections).
    pub accept_budget: u32,
    /// recv calls per connection event (fairness between connections).
    pub read_budget: u32,
    /// Per-worker receive scratch buffer for the readiness loops.
    pub read_buf: usize,
    pub backlog: i32,
    pub uring: UringConfig,
    pub metrics: Option<SocketAddr>,
    pub access_log: Option<AccessLogConfig>,
    /// Take the listening sockets over from a running ringpoll on the same addresses.
    pub takeover: bool,
}

/// Largest upstream weight (each unit is 160 points on a hash ring).
pub const MAX_WEIGHT: u32 = 1000;

impl Config {
    /// One listener with the defaults of its mode; everything else default.
    #[must_use]
    pub fn new(listen: SocketAddr, mode: Mode, backend: Backend) -> Self {
        Self {
            listeners: vec![Listener::new(listen, mode)],
            groups: Vec::new(),
            backend,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            pin: true,
            max_conns: 100_000,
            shutdown_timeout: Duration::from_secs(5),
            accept_budget: 64,
            read_budget: 16,
            read_buf: 64 * 1024,
            backlog: 4096,
            uring: UringConfig::default(),
            metrics: None,
            access_log: None,
            takeover: false,
        }
    }

    /// The single place where settings are judged together. Errors are one line each.
    pub fn validate(&self) -> Result<(), String> {
        if self.listeners.is_empty() {
            return Err("nothing to listen on".into());
        }
        if self.workers == 0 || self.workers > 4096 {
            return Err(format!("workers must be between 1 and 4096 (got {})", self.workers));
        }
        if self.max_conns == 0 {
            return Err("max-conns must be at least 1".into());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let at = format!("listener {}", l.listen);
            if l.listen.port() != 0 && self.listeners[..i].iter().any(|o| o.listen == l.listen) {
                return Err(format!("{at}: listed twice"));
            }
            check_watermarks(&at, l.mode, &l.stream.watermarks, &l.pair.watermarks)?;
            match (l.mode, l.group) {
                (Mode::Proxy, None) => return Err(format!("{at}: proxy mode needs upstreams")),
                (Mode::Proxy, Some(g)) if g >= self.groups.len() => return Err(format!("{at}: no upstream group {g}")),
                (Mode::Echo | Mode::Http, Some(_)) => {
                    return Err(format!("{at}: upstreams only apply to proxy mode (this is {})", l.mode.name()));
                }
                _ => {}
            }
            if l.mode != Mode::Proxy && (l.pair.accept_proxy || l.splice) {
                return Err(format!("{at}: accept-proxy and splice only apply to proxy mode"));
            }
            if l.splice && self.backend != Backend::Epoll {
                // epoll-et would busy-loop on an idle spliced pair; the others have no splice path.
                return Err(format!("{at}: splice needs --backend epoll (got {})", self.backend));
            }
            if l.pair.timeouts.connect.is_zero() {
                return Err(format!("{at}: connect-timeout must be above 0"));
            }
        }
        for g in &self.groups {
            if g.upstreams.is_empty() {
                return Err(format!("upstream group {}: no upstreams", g.name));
            }
            if let Some(u) = g.upstreams.iter().find(|u| u.weight == 0 || u.weight > MAX_WEIGHT) {
                return Err(format!("upstream {}: weight must be between 1 and {MAX_WEIGHT}", u.addr));
            }
            if let Some(a) = &g.active {
                if a.interval.is_zero() || a.rise == 0 || a.fall == 0 || a.timeout.is_zero() {
                    return Err(format!(
                        "upstream group {}: health checks need an interval above 0 and rise, fall of at least 1",
                        g.name
                    ));
                }
            }
        }
        if let Some(log) = &self.access_log {
            if !self.listeners.iter().any(|l| l.mode == Mode::Proxy) {
                return Err(format!("access log {}: it records proxy pairs, and no listener is a proxy", log.path));
            }
        }
        let u = &self.uring;
        if !u.buf_count.is_power_of_two() || u.buf_count > 32768 {
            return Err(format!("uring-bufs must be a power of two between 1 and 32768 (got {})", u.buf_count));
        }
        if !(64..=1 << 30).contains(&u.buf_size) {
            return Err(format!("uring-buf-size must be between 64 B and 1 GiB (got {})", u.buf_size));
        }
        if !(8..=32768).contains(&u.sq_entries) {
            return Err(format!("uring-sq-entries must be between 8 and 32768 (got {})", u.sq_entries));
        }
        if self.backend == Backend::Uring && u.fixed_slots(self.max_conns) > MAX_FIXED_FILES {
            return Err(format!(
                "uring-fixed-files: a ring's fixed file table holds at most {MAX_FIXED_FILES} slots, fewer than \
                 --max-conns {} per worker plus {} for the completion queue (lower --max-conns, or \
                 --uring-fixed-files off)",
                self.max_conns,
                u.cq_entries()
            ));
        }
        Ok(())
    }

    /// How many usable cores pinning can spread workers over, and whether it will.
    #[must_use]
    pub fn will_pin(&self, cores: usize) -> bool {
        self.pin && cores >= self.workers
    }
}

fn check_watermarks(at: &str, mode: Mode, stream: &Watermarks, pair: &Watermarks) -> Result<(), String> {
    let w = if mode == Mode::Proxy { pair } else { stream };
    if w.high == 0 || w.low > w.high {
        return Err(format!("{at}: low-watermark must not exceed high-watermark (and high must be above 0)"));
    }
    Ok(())
}

/// Resolve `HOST:PORT` (a name or an address) to its first address.
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}': {e} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

/// `HOST:PORT[@WEIGHT]`.
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    let (addr, weight) = match s.rsplit_once('@') {
        Some((a, w)) => {
            let w: u32 = w.trim().parse().map_err(|_| format!("'{s}': the weight after @ must be a number"))?;
            (a, w)
        }
        None => (s, 1),
    };
    if weight == 0 || weight > MAX_WEIGHT {
        return Err(format!("'{s}': weight must be between 1 and {MAX_WEIGHT}"));
    }
    Ok(Upstream { addr: resolve(addr)?, weight })
}

/// The deadline defaults of a mode, with `0` meaning off.
#[must_use]
pub fn off_if_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy_config() -> Config {
        let mut c = Config::new("127.0.0.1:0".parse().unwrap(), Mode::Proxy, Backend::Epoll);
        c.groups.push(Group::new("default", vec![parse_upstream("127.0.0.1:9@2").unwrap()]));
        c.listeners[0].group = Some(0);
        c
    }

    #[test]
    fn unknown_backends_list_the_available_ones() {
        let e = Backend::parse("kqueue").unwrap_err();
        assert!(e.contains("epoll") && e.contains("uring") && e.contains("select"), "{e}");
        assert_eq!(Backend::parse("epoll-lt"), Ok(Backend::EpollLt));
    }

    #[test]
    fn validation_judges_combinations() {
        assert_eq!(proxy_config().validate(), Ok(()));
        let mut c = proxy_config();
        c.listeners[0].group = None;
        assert!(c.validate().unwrap_err().contains("needs upstreams"));
        let mut c = proxy_config();
        c.listeners[0].splice = true;
        c.backend = Backend::EpollEt;
        assert!(c.validate().unwrap_err().contains("splice needs --backend epoll"));
        c.backend = Backend::Epoll;
        assert_eq!(c.validate(), Ok(()));
        let mut c = Config::new("127.0.0.1:0".parse().unwrap(), Mode::Echo, Backend::Epoll);
        c.workers = 0;
        assert!(c.validate().unwrap_err().contains("workers"));
        c.workers = 1;
        c.listeners[0].stream.watermarks = Watermarks { high: 10, low: 20 };
        assert!(c.validate().unwrap_err().contains("low-watermark"));
        let mut c = Config::new("127.0.0.1:0".parse().unwrap(), Mode::Http, Backend::Epoll);
        c.uring.buf_count = 12;
        assert!(c.validate().unwrap_err().contains("power of two"));
    }

    #[test]
    fn upstreams_take_names_and_weights() {
        assert_eq!(parse_upstream("localhost:80").unwrap().addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(parse_upstream("127.0.0.1:80@7").unwrap().weight, 7);
        assert!(parse_upstream("127.0.0.1:80@0").is_err());
        assert!(parse_upstream("127.0.0.1:80@x").is_err());
        assert!(parse_upstream("nope").is_err());
        assert_eq!(resolve("localhost:0").unwrap(), "127.0.0.1:0".parse().unwrap());
    }
}

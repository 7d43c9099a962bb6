//! The server's configuration: parsed once from the command line, then `Copy` into every
//! worker. Nothing mutable is shared.

use std::net::SocketAddr;
use std::time::Duration;

use ringpoll_proto::buf::Watermarks;

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

/// What the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Http,
    Proxy,
}

impl Mode {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Http => "http",
            Mode::Proxy => "proxy",
        }
    }
}

/// io_uring-specific knobs.
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
    /// Sends of at least this many bytes use IORING_OP_SEND_ZC, which pins the pages instead
    /// of copying them into the socket (0: never, the default). Off because it does not pay on
    /// loopback (`bench-scripts/uring-send-zc-ab.py`, echo at a fixed rate, 1 worker on CPU 0):
    /// 16 KiB at 40k/s cost 19.98 µs of server CPU per round trip against 17.95 µs with plain
    /// sends; at 256 KiB it sustained 1042 of 2500 requested round trips/s (the notification
    /// that frees the buffer waits until the peer has read the data, and a connection has one
    /// send in flight), at 297.8 µs against 229.6 µs.
    pub send_zc_min: usize,
}

impl Default for UringConfig {
    fn default() -> Self {
        Self { sq_entries: 1024, buf_size: 16 * 1024, buf_count: 1024, zero_copy_relay: true, send_zc_min: 0 }
    }
}

/// Everything a worker needs to know.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub mode: Mode,
    pub backend: Backend,
    pub workers: usize,
    pub pin: bool,
    /// Per worker; beyond it the worker stops accepting until a connection closes.
    pub max_conns: usize,
    pub idle_timeout: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub connect_timeout: Duration,
    pub upstreams: &'static [SocketAddr],
    pub watermarks: Watermarks,
    /// Accepts per listener wake-up (fairness to established connections).
    pub accept_budget: u32,
    /// recv calls per connection event (fairness between connections).
    pub read_budget: u32,
    /// Per-worker receive scratch buffer for the readiness loops.
    pub read_buf: usize,
    pub backlog: i32,
    pub splice: bool,
    pub uring: UringConfig,
    pub metrics: Option<SocketAddr>,
}

impl Config {
    /// Defaults for everything but the address, mode and backend.
    #[must_use]
    pub fn new(listen: SocketAddr, mode: Mode, backend: Backend) -> Self {
        Self {
            listen,
            mode,
            backend,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            pin: true,
            max_conns: 100_000,
            idle_timeout: None,
            shutdown_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            upstreams: &[],
            watermarks: Watermarks::default(),
            accept_budget: 64,
            read_budget: 16,
            read_buf: 64 * 1024,
            backlog: 4096,
            splice: false,
            uring: UringConfig::default(),
            metrics: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backends_list_the_available_ones() {
        let e = Backend::parse("kqueue").unwrap_err();
        assert!(e.contains("epoll") && e.contains("uring") && e.contains("select"), "{e}");
        assert_eq!(Backend::parse("epoll-lt"), Ok(Backend::EpollLt));
    }
}

//! ringpoll's thread-per-core server.
//!
//! [`Server::start`] spawns one worker per core. Each worker pins itself, binds its own
//! SO_REUSEPORT listener for every configured listener (or takes over the running server's
//! sockets) and runs its own event loop: the generic readiness loop over select, poll or one
//! of the epoll variants, or the completion loop over io_uring. Both loops only translate the
//! answers of the connection lifecycles of `ringpoll-proto` (`lifecycle::stream::StreamConn`,
//! `lifecycle::pair::ProxyPair`) into system calls or ring operations. Workers share nothing
//! mutable but their cache-padded counters and the upstream groups' health boards.
//!
//! System calls, pollers and the io_uring ring come from `ringpoll-sys`, the one crate that
//! handles raw pointers (docs/ARCHITECTURE.md); this crate is safe code only.
#![forbid(unsafe_code)]

pub mod accesslog;
pub mod clock;
pub mod config;
mod ctx;
pub mod health;
pub mod metrics;
mod readiness;
pub mod serve;
pub mod stats;
pub mod takeover;
mod upstreams;
mod uring;
mod worker;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringpoll_sys::socket;

pub use config::{Backend, Config, Mode, UringConfig};
pub use ctx::Shutdown;
pub use ringpoll_proto::CloseReason;
pub use stats::Counters;
pub use worker::Server;

/// Why the server could not start or a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {}", bind_hint(.source))]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    UringUnavailable(String),
    #[error("worker {worker}: {source}")]
    Worker { worker: usize, source: std::io::Error },
    #[error("{0}")]
    Setup(String),
    /// A bad setting (flags, file, or a combination): exit status 2.
    #[error("{0}")]
    Config(String),
    /// Another process listens on the address (exit status 1).
    #[error("cannot listen on {addr}: another process already listens there (stop it, or start with --takeover if it is a ringpoll)")]
    PortTaken { addr: SocketAddr },
    /// Another ringpoll is starting on the address at this moment (exit status 1).
    #[error("cannot listen on {addr}: another ringpoll is starting on it (stop it, or start with --takeover once it listens)")]
    PortClaimed { addr: SocketAddr },
    #[error("worker {0} panicked")]
    Panic(usize),
}

fn bind_hint(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address already in use (another process listens there)".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges)".into(),
        _ => e.to_string(),
    }
}

/// How long accepting pauses after EMFILE/ENFILE (or another failure of accept itself)
/// before it is retried: long enough not to spin, short enough not to stall.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Account for a failed accept, the same way on every backend: errors that concern only the
/// connection being accepted are skipped (`None`); anything else (descriptor or memory
/// exhaustion above all) is counted, logged at most once per period, and pauses accepting
/// until the returned instant.
pub fn accept_failed(e: &std::io::Error, stats: &mut Counters, log: &mut RateLimit, now: Instant) -> Option<Instant> {
    if socket::is_per_connection_accept_error(e) {
        tracing::debug!("accept: skipped a connection: {e}");
        return None;
    }
    stats.accept_exhausted += 1;
    if log.allow(now) {
        if socket::is_resource_exhaustion(e) {
            tracing::warn!(
                "accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?} (raise `ulimit -n` or lower --max-conns)"
            );
        } else {
            tracing::error!("accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
        }
    }
    Some(now + ACCEPT_BACKOFF)
}

/// Allows one log line per period (for errors that can repeat thousands of times a second).
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
}

impl RateLimit {
    #[must_use]
    pub const fn new(period: Duration) -> Self {
        Self { period, last: None }
    }

    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.period => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_skip_or_back_off() {
        let (mut c, mut log, now) = (Counters::default(), RateLimit::new(Duration::from_secs(1)), Instant::now());
        // Which raw errors fall in which class is tested in ringpoll-sys (`socket`).
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(accept_failed(&aborted, &mut c, &mut log, now), None);
        let exhausted = std::io::Error::from(std::io::ErrorKind::OutOfMemory);
        assert_eq!(accept_failed(&exhausted, &mut c, &mut log, now), Some(now + ACCEPT_BACKOFF));
        assert_eq!(c.accept_exhausted, 1);
    }

    #[test]
    fn rate_limit_allows_one_per_period() {
        let mut r = RateLimit::new(Duration::from_secs(1));
        let t = Instant::now();
        assert!(r.allow(t));
        assert!(!r.allow(t + Duration::from_millis(500)));
        assert!(r.allow(t + Duration::from_millis(1000)));
    }
}

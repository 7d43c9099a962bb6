//! ringpoll's thread-per-core server.
//!
//! [`Server::start`] spawns one worker per core. Each worker pins itself, binds its own
//! SO_REUSEPORT listener and runs its own event loop: the generic readiness loop
//! ([`readiness`]) over select, poll or one of the epoll variants, or the completion loop
//! ([`uring`]). Workers share nothing mutable but their cache-padded counters.
//!
//! All `unsafe` code lives in [`sys`].

pub mod clock;
pub mod config;
pub mod metrics;
pub mod readiness;
pub mod signals;
pub mod slab;
pub mod stats;
pub mod sys;
pub mod uring;
mod worker;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use config::{Backend, Config, Mode, UringConfig};
pub use stats::Counters;
pub use worker::{Server, Shutdown};

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
    #[error("{0}")]
    Config(String),
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

/// Why a connection was closed (each reason has its own counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// EOF from the peer or a protocol-requested close, after everything was flushed.
    Normal,
    /// Reset, broken pipe, socket error.
    Error,
    /// `--idle-timeout` expired.
    Idle,
    /// The shutdown deadline passed with work pending.
    Shutdown,
}

impl CloseReason {
    pub fn count(self, c: &mut Counters) {
        c.closed += 1;
        match self {
            CloseReason::Normal => c.closed_normal += 1,
            CloseReason::Error => c.closed_error += 1,
            CloseReason::Idle => c.closed_idle += 1,
            CloseReason::Shutdown => c.closed_shutdown += 1,
        }
    }
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
    fn rate_limit_allows_one_per_period() {
        let mut r = RateLimit::new(Duration::from_secs(1));
        let t = Instant::now();
        assert!(r.allow(t));
        assert!(!r.allow(t + Duration::from_millis(500)));
        assert!(r.allow(t + Duration::from_millis(1000)));
    }
}

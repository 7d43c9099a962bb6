//! Per-worker counters.
//!
//! A worker counts in plain integers ([`Counters`]) and publishes a copy into its own
//! cache-padded block of atomics ([`SharedCounters`]) once per loop iteration, with relaxed
//! stores: no locked instruction and no shared cache line on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Plain counters owned by one worker.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[$doc])* pub $name: u64, )*
        }

        /// The published copy of one worker's counters.
        #[derive(Debug, Default)]
        pub struct AtomicCounters {
            $( pub $name: AtomicU64, )*
        }

        impl AtomicCounters {
            pub fn publish(&self, c: &Counters) {
                $( self.$name.store(c.$name, Relaxed); )*
            }

            #[must_use]
            pub fn snapshot(&self) -> Counters {
                Counters { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl Counters {
            /// `(name, value)` pairs, for the metrics endpoint.
            #[must_use]
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }

            #[must_use]
            pub fn sum(items: &[Counters]) -> Counters {
                let mut t = Counters::default();
                for c in items {
                    $( t.$name += c.$name; )*
                }
                t
            }
        }
    };
}

counters! {
    /// Connections accepted.
    accepted,
    /// Connections closed, for any reason.
    closed,
    /// Closed because the peer finished (EOF) or the protocol asked to close.
    closed_normal,
    /// Closed because of a socket error (reset, EPIPE, SO_ERROR).
    closed_error,
    /// Closed by the idle timeout.
    closed_idle,
    /// Closed by the shutdown deadline with work still pending.
    closed_shutdown,
    /// Bytes received from peers.
    bytes_in,
    /// Bytes sent to peers.
    bytes_out,
    /// Requests (HTTP) or messages (echo: reads that carried data, proxy: relayed reads).
    requests,
    /// System calls made by the worker (counted by its sys layer).
    syscalls,
    /// Loop iterations (poller waits or ring enters).
    wakeups,
    /// accept() failed for lack of descriptors or memory; accepting paused briefly.
    accept_exhausted,
    /// Connections refused because their descriptor is beyond FD_SETSIZE (select).
    rejected_fd_setsize,
    /// Times reading a connection was paused by the output high watermark.
    backpressure_pauses,
    /// Upstream connects that failed or timed out (proxy).
    upstream_failures,
    /// io_uring: receive buffer ring ran dry (ENOBUFS) and the receive was re-armed.
    uring_enobufs,
    /// io_uring: multishot requests re-armed after ending without F_MORE.
    uring_rearms,
    /// io_uring: zero-copy sends completed (`--uring-send-zc-min`).
    uring_zc_sends,
}

/// One worker's published counters on their own cache line(s).
pub type SharedCounters = CachePadded<AtomicCounters>;

impl Counters {
    /// System calls per request (0 when there were no requests).
    #[must_use]
    pub fn syscalls_per_request(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.syscalls as f64 / self.requests as f64
        }
    }

    /// The one-line exit summary.
    #[must_use]
    pub fn summary(&self, worker: usize, backend: &str) -> String {
        format!(
            "worker {worker} ({backend}): accepted {} closed {} (normal {} error {} idle {} shutdown {}) \
             bytes in {} out {} requests {} syscalls {} ({:.2}/request) wakeups {}{}",
            self.accepted,
            self.closed,
            self.closed_normal,
            self.closed_error,
            self.closed_idle,
            self.closed_shutdown,
            self.bytes_in,
            self.bytes_out,
            self.requests,
            self.syscalls,
            self.syscalls_per_request(),
            self.wakeups,
            self.extras(),
        )
    }

    fn extras(&self) -> String {
        let mut s = String::new();
        for (name, v) in [
            ("accept_exhausted", self.accept_exhausted),
            ("rejected_fd_setsize", self.rejected_fd_setsize),
            ("backpressure_pauses", self.backpressure_pauses),
            ("upstream_failures", self.upstream_failures),
            ("uring_enobufs", self.uring_enobufs),
            ("uring_rearms", self.uring_rearms),
            ("uring_zc_sends", self.uring_zc_sends),
        ] {
            if v > 0 {
                s.push_str(&format!(" {name} {v}"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_snapshot_round_trip() {
        let c = Counters { accepted: 3, requests: 10, syscalls: 25, ..Counters::default() };
        let shared = SharedCounters::default();
        shared.publish(&c);
        assert_eq!(shared.snapshot(), c);
        assert!((c.syscalls_per_request() - 2.5).abs() < 1e-9);
        assert_eq!(Counters::sum(&[c, c]).requests, 20);
        assert!(c.summary(0, "epoll").contains("2.50/request"));
    }
}

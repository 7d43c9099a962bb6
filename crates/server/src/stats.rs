//! Per-worker counters.
//!
//! A worker counts in plain integers ([`Counters`]; the connection lifecycles count into its
//! [`Stats`] part) and publishes a copy into its own cache-padded block of atomics
//! ([`SharedCounters`]) once per loop iteration, with relaxed stores: no locked instruction and
//! no shared cache line on the hot path. Per-upstream counters are published the same way
//! ([`SharedUpstreams`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use ringpoll_proto::upstream::PeerStats;
use ringpoll_proto::{CloseReason, Stats};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Plain counters owned by one worker.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            /// What the connection lifecycles count (bytes, requests, pauses, closes by reason).
            pub conn: Stats,
            $( $(#[$doc])* pub $name: u64, )*
        }

        /// The published copy of one worker's counters.
        #[derive(Debug, Default)]
        pub struct AtomicCounters {
            bytes_in: AtomicU64,
            bytes_out: AtomicU64,
            requests: AtomicU64,
            backpressure_pauses: AtomicU64,
            closed: [AtomicU64; CloseReason::COUNT],
            $( $name: AtomicU64, )*
        }

        impl AtomicCounters {
            pub fn publish(&self, c: &Counters) {
                self.bytes_in.store(c.conn.bytes_in, Relaxed);
                self.bytes_out.store(c.conn.bytes_out, Relaxed);
                self.requests.store(c.conn.requests, Relaxed);
                self.backpressure_pauses.store(c.conn.backpressure_pauses, Relaxed);
                for (a, v) in self.closed.iter().zip(c.conn.closed) {
                    a.store(v, Relaxed);
                }
                $( self.$name.store(c.$name, Relaxed); )*
            }

            #[must_use]
            pub fn snapshot(&self) -> Counters {
                let mut conn = Stats {
                    bytes_in: self.bytes_in.load(Relaxed),
                    bytes_out: self.bytes_out.load(Relaxed),
                    requests: self.requests.load(Relaxed),
                    backpressure_pauses: self.backpressure_pauses.load(Relaxed),
                    ..Stats::default()
                };
                for (v, a) in conn.closed.iter_mut().zip(&self.closed) {
                    *v = a.load(Relaxed);
                }
                Counters { conn, $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl Counters {
            #[must_use]
            pub fn sum(items: &[Counters]) -> Counters {
                let mut t = Counters::default();
                for c in items {
                    t.conn.add(&c.conn);
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
    /// System calls made by the worker (counted by its sys layer).
    syscalls,
    /// Loop iterations (poller waits or ring enters).
    wakeups,
    /// accept() failed for lack of descriptors or memory; accepting paused briefly.
    accept_exhausted,
    /// Connections refused because their descriptor is beyond FD_SETSIZE (select).
    rejected_fd_setsize,
    /// Upstream connects that failed or timed out (proxy).
    upstream_failures,
    /// io_uring: receive buffer ring ran dry (ENOBUFS) and the receive was re-armed.
    uring_enobufs,
    /// io_uring: multishot requests re-armed after ending without F_MORE.
    uring_rearms,
    /// io_uring: zero-copy sends completed (`--uring-send-zc-min`).
    uring_zc_sends,
    /// io_uring: receive completions that carried several buffers (`--uring-bundle`).
    uring_bundles,
    /// io_uring: sends straight out of a receive buffer (echo and relay without a copy).
    uring_held_sends,
    /// Gauge: echo and HTTP connections open now.
    open_connections,
    /// Gauge: proxy pairs open now.
    open_pairs,
}

/// One worker's published counters on their own cache line(s).
pub type SharedCounters = CachePadded<AtomicCounters>;

impl Counters {
    /// System calls per request (0 when there were no requests).
    #[must_use]
    pub fn syscalls_per_request(&self) -> f64 {
        if self.conn.requests == 0 {
            0.0
        } else {
            self.syscalls as f64 / self.conn.requests as f64
        }
    }

    /// The one-line exit summary.
    #[must_use]
    pub fn summary(&self, worker: &str, backend: &str) -> String {
        let c = &self.conn;
        let mut closes = String::new();
        for r in CloseReason::ALL {
            let n = c.closed_by(r);
            if n > 0 || matches!(r, CloseReason::Normal | CloseReason::Error) {
                closes.push_str(&format!("{}{} {n}", if closes.is_empty() { "" } else { " " }, r.name()));
            }
        }
        let mut s = format!(
            "{worker} ({backend}): accepted {} closed {} ({closes}) bytes in {} out {} requests {} syscalls {} \
             ({:.2}/request) wakeups {}",
            self.accepted,
            c.closed_total(),
            c.bytes_in,
            c.bytes_out,
            c.requests,
            self.syscalls,
            self.syscalls_per_request(),
            self.wakeups,
        );
        for (name, v) in [
            ("accept_exhausted", self.accept_exhausted),
            ("rejected_fd_setsize", self.rejected_fd_setsize),
            ("backpressure_pauses", c.backpressure_pauses),
            ("upstream_failures", self.upstream_failures),
            ("uring_enobufs", self.uring_enobufs),
            ("uring_rearms", self.uring_rearms),
            ("uring_zc_sends", self.uring_zc_sends),
            ("uring_bundles", self.uring_bundles),
            ("uring_held_sends", self.uring_held_sends),
        ] {
            if v > 0 {
                s.push_str(&format!(" {name} {v}"));
            }
        }
        s
    }
}

/// One upstream's published counters (one worker's view).
#[derive(Debug, Default)]
pub struct AtomicPeer {
    open: AtomicU64,
    total: AtomicU64,
    failures: AtomicU64,
    bytes_to: AtomicU64,
    bytes_from: AtomicU64,
    /// Passive health: down until `epoch` + this many nanoseconds (0: not down). A time, not
    /// a verdict, so that a reader sees the verdict of its own moment even while the worker
    /// sleeps.
    down_until: AtomicU64,
}

/// One worker's published per-upstream counters, indexed by group then upstream.
#[derive(Debug)]
pub struct SharedUpstreams {
    pub groups: Vec<Vec<AtomicPeer>>,
    epoch: Instant,
}

impl SharedUpstreams {
    #[must_use]
    pub fn new(sizes: &[usize]) -> Self {
        Self {
            groups: sizes.iter().map(|&n| (0..n).map(|_| AtomicPeer::default()).collect()).collect(),
            epoch: Instant::now(),
        }
    }

    pub fn publish_stats(&self, group: usize, upstream: usize, s: &PeerStats) {
        if let Some(p) = self.groups.get(group).and_then(|g| g.get(upstream)) {
            p.open.store(s.open, Relaxed);
            p.total.store(s.total, Relaxed);
            p.failures.store(s.failures, Relaxed);
            p.bytes_to.store(s.bytes_to, Relaxed);
            p.bytes_from.store(s.bytes_from, Relaxed);
            let until = s.down_until.map_or(0, |d| {
                u64::try_from(d.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX).max(1)
            });
            p.down_until.store(until, Relaxed);
        }
    }

    /// The counters of one upstream, and whether passive health lets it take connections at
    /// `now`.
    #[must_use]
    pub fn snapshot(&self, group: usize, upstream: usize, now: Instant) -> (PeerStats, bool) {
        self.groups.get(group).and_then(|g| g.get(upstream)).map_or((PeerStats::default(), false), |p| {
            let until = match p.down_until.load(Relaxed) {
                0 => None,
                n => Some(self.epoch + Duration::from_nanos(n)),
            };
            let s = PeerStats {
                open: p.open.load(Relaxed),
                total: p.total.load(Relaxed),
                failures: p.failures.load(Relaxed),
                bytes_to: p.bytes_to.load(Relaxed),
                bytes_from: p.bytes_from.load(Relaxed),
                down_until: until,
            };
            (s, until.is_none_or(|u| now >= u))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_snapshot_round_trip() {
        let mut c = Counters { accepted: 3, syscalls: 25, ..Counters::default() };
        c.conn.requests = 10;
        c.conn.count_close(CloseReason::HeaderTimeout);
        let shared = SharedCounters::default();
        shared.publish(&c);
        assert_eq!(shared.snapshot(), c);
        assert!((c.syscalls_per_request() - 2.5).abs() < 1e-9);
        assert_eq!(Counters::sum(&[c, c]).conn.requests, 20);
        let s = c.summary("worker 0", "epoll");
        assert!(s.contains("2.50/request") && s.contains("header_timeout 1"), "{s}");
    }

    #[test]
    fn passive_down_time_is_judged_by_the_reader() {
        let shared = SharedUpstreams::new(&[2]);
        let now = Instant::now();
        let down = PeerStats { total: 4, down_until: Some(now + Duration::from_secs(2)), ..PeerStats::default() };
        shared.publish_stats(0, 1, &down);
        assert!(shared.snapshot(0, 0, now).1, "never published: up");
        let (s, up) = shared.snapshot(0, 1, now);
        assert_eq!((s.total, up), (4, false));
        assert!(shared.snapshot(0, 1, now + Duration::from_secs(2)).1, "the window passed without a new publish");
    }
}

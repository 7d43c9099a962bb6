//! Upstream groups: which upstream a new proxied connection goes to, and which are usable.
//!
//! One [`Balancer`] per worker and group (shared nothing: its connection counts and passive
//! failure counts are the worker's own), reading the group's [`HealthBoard`] (written by the
//! active health checker, read by every worker with one relaxed atomic load, no lock).
//!
//! Strategies (nginx `upstream` and HAProxy `balance` semantics):
//! - [`Strategy::RoundRobin`]: smooth weighted round-robin (nginx's `current_weight` /
//!   `effective_weight`): weights 3:1 go A A B A, not A A A B.
//! - [`Strategy::LeastConn`]: the fewest open connections per unit of weight, ties broken by
//!   the smooth round-robin. Counts are per worker: each worker balances its own share, so
//!   with connections spread evenly over workers (SO_REUSEPORT hashing) the sum balances too;
//!   a long-lived skew built up by one worker is corrected by that worker only.
//! - [`Strategy::Hash`]: consistent hashing of the client's IP address on a ring of
//!   [`POINTS_PER_WEIGHT`] points per unit of weight per upstream (ketama, as nginx's
//!   `hash ... consistent`), each point placed by hashing the upstream's address. Chosen over
//!   jump hash because it takes weights and because an upstream that leaves (removed, or down)
//!   moves only the clients that hashed to it: its points are skipped to the next ones, every
//!   other client keeps its upstream.
//!
//! Health: passive (nginx `max_fails` within `fail_timeout` marks an upstream down for
//! `fail_timeout`, per worker; a group of one is never marked down, as in nginx) and active
//! (the board). An upstream is usable when both say so.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lifecycle::pair::Balance;

/// Ring points per unit of weight (nginx uses 160 as well).
pub const POINTS_PER_WEIGHT: u32 = 160;

/// One upstream of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    /// At least 1.
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    LeastConn,
    Hash,
}

impl Strategy {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastConn => "least-conn",
            Strategy::Hash => "hash",
        }
    }
}

/// Passive health: `max_fails` failed connects within `fail_timeout` mark an upstream down
/// for `fail_timeout` (0 failures: never).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Passive {
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

impl Default for Passive {
    /// nginx's defaults: one failure, ten seconds.
    fn default() -> Self {
        Self { max_fails: 1, fail_timeout: Duration::from_secs(10) }
    }
}

/// The active health state of a group's upstreams, shared by every worker.
#[derive(Debug)]
pub struct HealthBoard {
    up: Box<[AtomicBool]>,
}

impl HealthBoard {
    /// Every upstream starts up (until a check says otherwise).
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self { up: (0..n).map(|_| AtomicBool::new(true)).collect() }
    }

    #[must_use]
    pub fn is_up(&self, i: usize) -> bool {
        self.up.get(i).is_some_and(|u| u.load(Ordering::Relaxed))
    }

    /// Set by the health checker; returns the previous state.
    pub fn set(&self, i: usize, up: bool) -> bool {
        self.up.get(i).is_some_and(|u| u.swap(up, Ordering::Relaxed))
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.up.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.up.is_empty()
    }
}

/// Per-upstream counters of one worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Connections currently using it (pairs, connecting included).
    pub open: u64,
    /// Connections sent to it.
    pub total: u64,
    /// Connects that failed or timed out.
    pub failures: u64,
    /// Bytes relayed to it, and from it (counted when a pair ends).
    pub bytes_to: u64,
    pub bytes_from: u64,
    /// Passive health: down until then (a time that may have passed; never for a group of one).
    pub down_until: Option<Instant>,
}

#[derive(Debug)]
struct Peer {
    weight: i64,
    /// Smooth round-robin state.
    current: i64,
    fails: u32,
    window_start: Option<Instant>,
    down_until: Option<Instant>,
    stats: PeerStats,
}

/// A worker's view of one upstream group.
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    passive: Passive,
    peers: Vec<Peer>,
    /// Hash: (point, peer), sorted by point.
    ring: Vec<(u64, u32)>,
    board: Arc<HealthBoard>,
}

impl Balancer {
    #[must_use]
    pub fn new(upstreams: &[Upstream], strategy: Strategy, passive: Passive, board: Arc<HealthBoard>) -> Self {
        let peers = upstreams
            .iter()
            .map(|u| Peer {
                weight: i64::from(u.weight.max(1)),
                current: 0,
                fails: 0,
                window_start: None,
                down_until: None,
                stats: PeerStats::default(),
            })
            .collect();
        let ring = if strategy == Strategy::Hash { ring(upstreams) } else { Vec::new() };
        Self { strategy, passive, peers, ring, board }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether upstream `i` may be given connections now.
    #[must_use]
    pub fn is_usable(&self, i: usize, now: Instant) -> bool {
        self.board.is_up(i) && self.passively_up(i, now)
    }

    fn passively_up(&self, i: usize, now: Instant) -> bool {
        self.peers.len() == 1 || self.peers.get(i).is_some_and(|p| p.down_until.is_none_or(|d| now >= d))
    }

    /// Per-upstream counters, and the passive health verdict (the active one is on the board).
    #[must_use]
    pub fn stats(&self, i: usize) -> PeerStats {
        let down_until = if self.peers.len() > 1 { self.peers.get(i).and_then(|p| p.down_until) } else { None };
        self.peers.get(i).map(|p| PeerStats { down_until, ..p.stats }).unwrap_or_default()
    }

    /// Add the bytes a finished pair moved to and from upstream `i`.
    pub fn account_bytes(&mut self, i: usize, to: u64, from: u64) {
        if let Some(p) = self.peers.get_mut(i) {
            p.stats.bytes_to += to;
            p.stats.bytes_from += from;
        }
    }

    fn take(&mut self, i: usize) {
        if let Some(p) = self.peers.get_mut(i) {
            p.stats.open += 1;
            p.stats.total += 1;
        }
    }

    fn choose(&mut self, client: IpAddr, exclude: Option<usize>, now: Instant) -> Option<usize> {
        let usable = |b: &Self, i: usize| Some(i) != exclude && b.is_usable(i, now);
        match self.strategy {
            Strategy::RoundRobin => self.smooth(|b, i| usable(b, i)),
            Strategy::LeastConn => {
                let mut best: Option<usize> = None;
                for i in (0..self.peers.len()).filter(|&i| usable(self, i)) {
                    if best.is_none_or(|b| self.lighter(i, b)) {
                        best = Some(i);
                    }
                }
                let target = best?;
                self.smooth(|b, i| usable(b, i) && b.same_load(i, target))
            }
            Strategy::Hash => {
                if self.ring.is_empty() || !(0..self.peers.len()).any(|i| usable(self, i)) {
                    return None;
                }
                let h = hash_ip(client);
                let start = self.ring.partition_point(|&(p, _)| p < h);
                (0..self.ring.len())
                    .map(|k| self.ring[(start + k) % self.ring.len()].1 as usize)
                    .find(|&i| usable(self, i))
            }
        }
    }

    /// Upstream `a` has fewer open connections per unit of weight than `b`.
    fn lighter(&self, a: usize, b: usize) -> bool {
        let (pa, pb) = (&self.peers[a], &self.peers[b]);
        u128::from(pa.stats.open) * (pb.weight as u128) < u128::from(pb.stats.open) * (pa.weight as u128)
    }

    fn same_load(&self, i: usize, target: usize) -> bool {
        let (pi, pt) = (&self.peers[i], &self.peers[target]);
        u128::from(pi.stats.open) * pt.weight as u128 == u128::from(pt.stats.open) * pi.weight as u128
    }

    /// Smooth weighted round-robin over the peers `eligible` accepts.
    fn smooth(&mut self, eligible: impl Fn(&Self, usize) -> bool) -> Option<usize> {
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in 0..self.peers.len() {
            if !eligible(self, i) {
                continue;
            }
            let p = &mut self.peers[i];
            p.current += p.weight;
            total += p.weight;
            if best.is_none_or(|b| self.peers[i].current > self.peers[b].current) {
                best = Some(i);
            }
        }
        let b = best?;
        self.peers[b].current -= total;
        Some(b)
    }
}

impl Balance for Balancer {
    fn pick(&mut self, client: IpAddr, now: Instant) -> Option<usize> {
        let i = self.choose(client, None, now)?;
        self.take(i);
        Some(i)
    }

    fn connect_failed(&mut self, i: usize, now: Instant) {
        let Passive { max_fails, fail_timeout } = self.passive;
        let Some(p) = self.peers.get_mut(i) else { return };
        p.stats.failures += 1;
        if max_fails == 0 {
            return;
        }
        if p.window_start.is_none_or(|w| now.saturating_duration_since(w) > fail_timeout) {
            p.window_start = Some(now);
            p.fails = 0;
        }
        p.fails += 1;
        if p.fails >= max_fails {
            p.down_until = Some(now + fail_timeout);
            p.fails = 0;
            p.window_start = None;
        }
    }

    fn connected(&mut self, i: usize) {
        if let Some(p) = self.peers.get_mut(i) {
            p.fails = 0;
            p.window_start = None;
        }
    }

    fn retry(&mut self, failed: usize, client: IpAddr, now: Instant) -> Option<usize> {
        let i = self.choose(client, Some(failed), now)?;
        self.take(i);
        Some(i)
    }

    fn released(&mut self, i: usize) {
        if let Some(p) = self.peers.get_mut(i) {
            p.stats.open = p.stats.open.saturating_sub(1);
        }
    }
}

fn ring(upstreams: &[Upstream]) -> Vec<(u64, u32)> {
    let mut ring = Vec::new();
    for (i, u) in upstreams.iter().enumerate() {
        let id = u.addr.to_string();
        for k in 0..POINTS_PER_WEIGHT * u.weight.max(1) {
            ring.push((hash_bytes(format!("{id}-{k}").as_bytes()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// FNV-1a, then a 64-bit finaliser (splitmix64) so that nearby inputs spread over the ring.
/// Stable across builds and platforms, unlike std's hasher.
fn hash_bytes(data: &[u8]) -> u64 {
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => hash_bytes(&a.to_ipv6_mapped().octets()),
        IpAddr::V6(a) => hash_bytes(&a.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(weights: &[u32]) -> Vec<Upstream> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Upstream { addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)), weight })
            .collect()
    }

    fn balancer(weights: &[u32], strategy: Strategy) -> Balancer {
        Balancer::new(&group(weights), strategy, Passive::default(), Arc::new(HealthBoard::new(weights.len())))
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        let mut b = balancer(&[3, 1], Strategy::RoundRobin);
        let now = Instant::now();
        let seq: Vec<usize> = (0..8).map(|_| b.pick(ip(1), now).unwrap()).collect();
        assert_eq!(seq, [0, 0, 1, 0, 0, 0, 1, 0], "A A B A, not A A A B");
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            counts[b.pick(ip(1), now).unwrap()] += 1;
        }
        assert_eq!(counts, [3000, 1000]);
    }

    #[test]
    fn least_conn_prefers_the_lightest_per_weight() {
        let mut b = balancer(&[1, 1, 2], Strategy::LeastConn);
        let now = Instant::now();
        // Upstream 0 holds 10 long-lived connections (a skew): new ones avoid it.
        for _ in 0..10 {
            b.take(0);
        }
        let picks: Vec<usize> = (0..12).map(|_| b.pick(ip(1), now).unwrap()).collect();
        assert!(!picks.contains(&0), "{picks:?}");
        let twos = picks.iter().filter(|&&i| i == 2).count();
        assert_eq!(twos, 8, "weight 2 takes twice the connections: {picks:?}");
        assert_eq!((b.stats(1).open, b.stats(2).open), (4, 8));
        // Releases rebalance.
        for _ in 0..10 {
            b.released(0);
        }
        assert_eq!(b.pick(ip(1), now), Some(0));
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_only_the_leaving_share() {
        let now = Instant::now();
        let clients: Vec<IpAddr> = (0..5000u32).map(|i| ip(0x0a00_0000 + i * 7919)).collect();
        let mut four = balancer(&[1, 1, 1, 1], Strategy::Hash);
        let before: Vec<usize> = clients.iter().map(|&c| four.pick(c, now).unwrap()).collect();
        let again: Vec<usize> = clients.iter().map(|&c| four.pick(c, now).unwrap()).collect();
        assert_eq!(before, again, "each client always gets the same upstream");
        let mut share = [0usize; 4];
        for &i in &before {
            share[i] += 1;
        }
        assert!(share.iter().all(|&n| (900..1600).contains(&n)), "even spread: {share:?}");

        // Upstream 2 goes down: only its clients move.
        four.board.set(2, false);
        let down: Vec<usize> = clients.iter().map(|&c| four.pick(c, now).unwrap()).collect();
        for (a, b) in before.iter().zip(&down) {
            assert!(a == b || *a == 2, "a client of {a} moved to {b}");
            assert_ne!(*b, 2);
        }
        // Removed from the configuration (the others keep their addresses): the same.
        let ups = group(&[1, 1, 1, 1]);
        let three: Vec<Upstream> = ups.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, u)| *u).collect();
        let mut b3 = Balancer::new(&three, Strategy::Hash, Passive::default(), Arc::new(HealthBoard::new(3)));
        let old_index = [0usize, 1, 3];
        for (c, a) in clients.iter().zip(&before) {
            let now_at = old_index[b3.pick(*c, now).unwrap()];
            assert!(now_at == *a || *a == 2, "a client of {a} moved to {now_at}");
        }
    }

    #[test]
    fn passive_health_marks_down_for_the_window() {
        let t0 = Instant::now();
        let mut b = Balancer::new(
            &group(&[1, 1]),
            Strategy::RoundRobin,
            Passive { max_fails: 2, fail_timeout: Duration::from_secs(10) },
            Arc::new(HealthBoard::new(2)),
        );
        b.connect_failed(0, t0);
        assert!(b.is_usable(0, t0), "one failure of two allowed");
        b.connect_failed(0, t0 + Duration::from_secs(11));
        assert!(b.is_usable(0, t0 + Duration::from_secs(11)), "the window restarted");
        b.connect_failed(0, t0 + Duration::from_secs(12));
        assert!(!b.is_usable(0, t0 + Duration::from_secs(12)));
        let picks: Vec<usize> = (0..4).map(|_| b.pick(ip(1), t0 + Duration::from_secs(13)).unwrap()).collect();
        assert_eq!(picks, [1, 1, 1, 1]);
        assert!(b.is_usable(0, t0 + Duration::from_secs(22)), "back after fail_timeout");
        assert_eq!(b.stats(0).failures, 3);
        assert_eq!(b.stats(0).down_until, Some(t0 + Duration::from_secs(22)), "published for the metrics");
        assert_eq!(b.retry(1, ip(1), t0 + Duration::from_secs(22)), Some(0));

        // A group of one is never marked down passively; the board still counts.
        let mut one = balancer(&[1], Strategy::RoundRobin);
        one.connect_failed(0, t0);
        assert_eq!(one.pick(ip(1), t0), Some(0));
        assert_eq!(one.stats(0).down_until, None);
        one.board.set(0, false);
        assert_eq!(one.pick(ip(1), t0), None, "actively down: none usable");
    }

    #[test]
    fn retry_never_returns_the_failed_upstream() {
        let now = Instant::now();
        for s in [Strategy::RoundRobin, Strategy::LeastConn, Strategy::Hash] {
            let mut b = balancer(&[1, 1, 1], s);
            for c in 0..50 {
                let first = b.pick(ip(c), now).unwrap();
                let second = b.retry(first, ip(c), now).unwrap();
                assert_ne!(first, second, "{}", s.name());
            }
            let mut single = balancer(&[1], s);
            assert_eq!(single.retry(0, ip(1), now), None);
        }
    }
}

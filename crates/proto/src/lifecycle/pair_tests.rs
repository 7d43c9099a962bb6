//! The proxy pair driven in memory: connect, retry, FIN forwarding, deadlines, PROXY headers,
//! and random event orders. No socket anywhere.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::pair::{Balance, PairAction, PairConfig, ProxyPair};
use super::{CloseReason, Stats};
use crate::buf::Watermarks;
use crate::relay::Side;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A balancer for the tests: upstreams 0..n, each may be marked down; picks the first usable
/// one at or after `start`.
#[derive(Default)]
struct TestBal {
    down: Vec<bool>,
    start: usize,
    failed: Vec<usize>,
    connected: Vec<usize>,
    released: Vec<usize>,
}

impl TestBal {
    fn first_up(&self, from: usize, not: Option<usize>) -> Option<usize> {
        let n = self.down.len();
        (0..n).map(|k| (from + k) % n).find(|&i| Some(i) != not && !self.down[i])
    }
}

impl Balance for TestBal {
    fn pick(&mut self, _client: IpAddr, _now: Instant) -> Option<usize> {
        self.first_up(self.start, None)
    }
    fn connect_failed(&mut self, i: usize, _now: Instant) {
        self.failed.push(i);
    }
    fn connected(&mut self, i: usize) {
        self.connected.push(i);
    }
    fn retry(&mut self, failed: usize, _client: IpAddr, _now: Instant) -> Option<usize> {
        self.first_up(failed + 1, Some(failed))
    }
    fn released(&mut self, i: usize) {
        self.released.push(i);
    }
}

fn bal(n: usize) -> TestBal {
    TestBal { down: vec![false; n], ..TestBal::default() }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn new_pair(t0: Instant, cfg: &PairConfig) -> ProxyPair {
    ProxyPair::new(t0, cfg, addr("127.0.0.9:4000"), addr("127.0.0.1:8000"))
}

/// A pair that picked its upstream and connected.
fn connected_pair(t0: Instant, cfg: &PairConfig, b: &mut TestBal, st: &mut Stats) -> ProxyPair {
    let mut p = new_pair(t0, cfg);
    assert!(matches!(p.next_action(t0, b, st), PairAction::Connect(_)));
    p.on_connected(t0, cfg, b);
    p
}

#[test]
fn pair_relays_and_forwards_fins_after_the_data() {
    let (t0, cfg, mut st, mut b) = (Instant::now(), PairConfig::default(), Stats::default(), bal(2));
    let mut p = new_pair(t0, &cfg);
    assert!(!p.wants_read(Side::Client), "nothing is read before the upstream connects");
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Connect(0));
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Continue, "connecting");
    p.on_connected(t0, &cfg, &mut b);
    assert_eq!(b.connected, vec![0]);
    p.received(Side::Client, b"ping", t0, &mut st);
    p.received_eof(Side::Client, t0);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Continue, "ping not yet sent: no FIN yet");
    p.sent(Side::Upstream, 4, t0, &mut st);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::ShutdownWrite(Side::Upstream));
    p.on_shut_down(Side::Upstream, t0);
    assert_eq!(p.deadline(t0, &cfg), Some(t0 + secs(60)), "half-closed");
    p.received(Side::Upstream, b"pong", t0, &mut st);
    p.received_eof(Side::Upstream, t0);
    p.sent(Side::Client, 4, t0, &mut st);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::ShutdownWrite(Side::Client));
    p.on_shut_down(Side::Client, t0);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::Normal));
    assert_eq!((st.bytes_in, st.bytes_out, st.closed_by(CloseReason::Normal)), (8, 8, 1));
    assert_eq!((p.bytes_from(Side::Client), p.bytes_from(Side::Upstream)), (4, 4));
    assert_eq!(b.released, vec![0], "the balancer's count is released at the close");
}

#[test]
fn a_failed_connect_is_retried_once_elsewhere() {
    let (t0, cfg, mut st) = (Instant::now(), PairConfig::default(), Stats::default());
    let mut b = bal(3);
    let mut p = new_pair(t0, &cfg);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Connect(0));
    p.on_connect_failed(t0, &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Connect(1));
    assert_eq!(p.upstream(), Some(1));
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Continue, "connecting");
    p.on_connect_failed(t0, &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::Upstream), "once only");
    assert_eq!(b.failed, vec![0, 1]);
    assert_eq!(b.released, vec![0, 1]);

    // Nothing else is up: give up at once.
    let mut b = bal(2);
    b.down[1] = true;
    let mut p = new_pair(t0, &cfg);
    p.next_action(t0, &mut b, &mut st);
    p.on_connect_failed(t0, &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::Upstream));

    // Nothing up at all: the client is closed without a connect.
    let mut b = bal(1);
    b.down[0] = true;
    let mut p = new_pair(t0, &cfg);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::Upstream));
    assert!(b.released.is_empty(), "nothing was counted");
}

#[test]
fn a_connect_that_times_out_is_retried_like_a_failed_one() {
    let (t0, cfg, mut st, mut b) = (Instant::now(), PairConfig::default(), Stats::default(), bal(2));
    b.start = 1;
    let mut p = new_pair(t0, &cfg);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Connect(1));
    assert_eq!(p.deadline(t0, &cfg), Some(t0 + secs(3)));
    p.on_timer(t0 + secs(2), &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Continue);
    p.on_timer(t0 + secs(3), &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Connect(0));
    assert_eq!(p.deadline(t0 + secs(3), &cfg), Some(t0 + secs(6)));
}

#[test]
fn idle_half_close_and_error_closes() {
    let (t0, cfg, mut st, mut b) = (Instant::now(), PairConfig::default(), Stats::default(), bal(1));
    let mut p = connected_pair(t0, &cfg, &mut b, &mut st);
    assert_eq!(p.deadline(t0, &cfg), Some(t0 + secs(600)));
    p.on_timer(t0 + secs(600), &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::Idle));

    let mut p = connected_pair(t0, &cfg, &mut b, &mut st);
    p.received_eof(Side::Upstream, t0);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::ShutdownWrite(Side::Client));
    p.on_shut_down(Side::Client, t0 + secs(1));
    p.received(Side::Client, b"still talking", t0 + secs(30), &mut st);
    p.on_timer(t0 + secs(61), &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Continue, "activity moves the half-close deadline");
    p.on_timer(t0 + secs(90), &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::HalfCloseTimeout));

    let mut p = connected_pair(t0, &cfg, &mut b, &mut st);
    p.on_error();
    assert!(!p.wants_read(Side::Client));
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::Error));
    assert!(CloseReason::Error.is_abortive());
}

#[test]
fn accept_proxy_reads_the_header_first_and_send_proxy_writes_one_first() {
    use crate::proxy_protocol::Version;
    let t0 = Instant::now();
    let cfg = PairConfig { accept_proxy: true, send_proxy: Some(Version::V1), ..PairConfig::default() };
    let (mut st, mut b) = (Stats::default(), bal(1));
    let mut p = new_pair(t0, &cfg);
    assert!(p.wants_read(Side::Client), "the header is read before any upstream is chosen");
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Continue);
    p.received(Side::Client, b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 ", t0, &mut st);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Continue);
    p.received(Side::Client, b"80\r\nhello", t0, &mut st);
    assert_eq!(p.client(), addr("10.1.2.3:5555"));
    assert_eq!(p.local(), addr("10.0.0.1:80"));
    assert_eq!(p.listener(), addr("127.0.0.1:8000"), "the listener stays ours");
    assert_eq!(p.bytes_from(Side::Client), 5, "the header is not relayed: not counted");
    assert_eq!(st.bytes_in, 43, "but it was received (38 + 5)");
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Connect(0));
    p.on_connected(t0, &cfg, &mut b);
    assert_eq!(p.relay().outgoing(Side::Upstream), b"PROXY TCP4 10.1.2.3 10.0.0.1 5555 80\r\nhello");

    // Malformed, or too slow: closed and counted.
    let mut p = new_pair(t0, &cfg);
    p.received(Side::Client, b"GET / HTTP/1.1\r\n", t0, &mut st);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::ProxyHeader));
    let mut p = new_pair(t0, &cfg);
    p.received(Side::Client, b"PROXY TCP4", t0, &mut st);
    assert_eq!(p.deadline(t0, &cfg), Some(t0 + secs(5)));
    p.on_timer(t0 + secs(5), &cfg, &mut b);
    assert_eq!(p.next_action(t0, &mut b, &mut st), PairAction::Close(CloseReason::ProxyHeader));
    assert_eq!(st.closed_by(CloseReason::ProxyHeader), 2);
    assert!(b.released.is_empty(), "the pairs that closed never had an upstream");
}

proptest! {
    /// A pair under random events: bytes arrive in order per direction, FINs are forwarded
    /// only after the data, and once both peers finish and everything drains the pair closes
    /// normally with every byte delivered.
    #[test]
    fn pair_random_events(events in proptest::collection::vec((0u8..6, any::<bool>(), 1usize..80), 0..200)) {
        let (t0, cfg) = (Instant::now(), PairConfig { watermarks: Watermarks { high: 128, low: 32 }, ..PairConfig::default() });
        let (mut st, mut b) = (Stats::default(), bal(2));
        let mut p = new_pair(t0, &cfg);
        let mut sent: [Vec<u8>; 2] = Default::default();
        let mut got: [Vec<u8>; 2] = Default::default();
        let mut fin = [false; 2];
        let mut counter = 0u8;
        let mut end = None;
        let step = |p: &mut ProxyPair, b: &mut TestBal, st: &mut Stats, got: &mut [Vec<u8>; 2]| -> Option<CloseReason> {
            loop {
                match p.next_action(t0, b, st) {
                    PairAction::ShutdownWrite(s) => p.on_shut_down(s, t0),
                    PairAction::Connect(_) => {}
                    PairAction::Close(r) => return Some(r),
                    PairAction::Continue => {
                        for s in Side::BOTH {
                            let out = p.relay().outgoing(s).to_vec();
                            if !out.is_empty() && p.relay().wants_write(s) {
                                got[s as usize].extend_from_slice(&out);
                                p.sent(s, out.len(), t0, st);
                            }
                        }
                        if Side::BOTH.iter().all(|&s| !p.relay().should_shutdown(s)) {
                            return None;
                        }
                    }
                }
            }
        };
        step(&mut p, &mut b, &mut st, &mut got);
        for (kind, upstream_side, n) in events {
            let side = if upstream_side { Side::Upstream } else { Side::Client };
            match kind {
                0 if p.is_connecting() => p.on_connected(t0, &cfg, &mut b),
                0..=2 if p.wants_read(side) => {
                    let data: Vec<u8> = (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                    sent[side as usize].extend_from_slice(&data);
                    p.received(side, &data, t0, &mut st);
                    continue; // no flush this time: let bytes pile up
                }
                3 if p.wants_read(side) && !fin[side as usize] => {
                    fin[side as usize] = true;
                    p.received_eof(side, t0);
                }
                _ => {}
            }
            if let Some(r) = step(&mut p, &mut b, &mut st, &mut got) { end = Some(r); break; }
        }
        if p.is_connecting() { p.on_connected(t0, &cfg, &mut b); }
        for _ in 0..100 {
            if end.is_some() { break; }
            for s in Side::BOTH {
                if p.wants_read(s) && !fin[s as usize] { fin[s as usize] = true; p.received_eof(s, t0); }
            }
            if let Some(r) = step(&mut p, &mut b, &mut st, &mut got) { end = Some(r); break; }
        }
        prop_assert_eq!(end, Some(CloseReason::Normal));
        prop_assert_eq!(&got[Side::Upstream as usize], &sent[Side::Client as usize]);
        prop_assert_eq!(&got[Side::Client as usize], &sent[Side::Upstream as usize]);
    }
}

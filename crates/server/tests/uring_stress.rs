//! Byte-exactness of the io_uring backend under stress, for every combination of the optional
//! techniques that change how bytes move: recv bundles, incremental buffers, and sending
//! straight out of the receive buffer (echo) or relaying from it (proxy), each on and off; the
//! others (fixed files, SQPOLL, registered waits) are switched on in half of the combinations.
//!
//! 1,000 connections share 8 provided buffers of 4 KiB (the ring runs dry all the time: ENOBUFS
//! and re-arms), and each connection sends messages of random size from 1 B to 1 MiB
//! (log-uniform, so that every order of magnitude is as likely), all of which must come back
//! byte for byte, in order. Large messages make one receive completion span several buffers
//! when bundles are on; the test checks that such completions happened.
//!
//! Each of 8 groups of connections has a writer thread and a reader thread; the reader reads
//! the connections in the order the writer wrote them, so neither can wait on the other for
//! ever. Every socket operation has a timeout and the whole test a deadline.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringpoll_proto::upstream::Upstream;
use ringpoll_server::config::Group;
use ringpoll_server::{Backend, CloseReason, Config, Mode};
use ringpoll_sys::testing::uring_feature_refused;
use ringpoll_sys::uring::{Ring, RingConfig, Techniques};
use support::*;

const CONNS: usize = 1000;
const GROUPS: usize = 8;
const ROUNDS: usize = 2;
const MAX_MSG: usize = 1 << 20;
const BUFS: u16 = 8;
const BUF_SIZE: u32 = 4096;
/// The whole exchange must end within this (a stuck test fails instead of hanging).
const DEADLINE: Duration = Duration::from_secs(300);

/// The techniques of one combination.
#[derive(Clone, Copy, Debug)]
struct Combo {
    bundle: bool,
    buf_inc: bool,
    /// Echo straight from the receive buffer, or the proxy's zero-copy relay.
    zero_copy: bool,
}

impl Combo {
    fn from_bits(bits: u8) -> Self {
        Self { bundle: bits & 1 != 0, buf_inc: bits & 2 != 0, zero_copy: bits & 4 != 0 }
    }

    /// The configuration: the three data-path switches, and the others on in half of the
    /// combinations each.
    fn apply(self, cfg: &mut Config) {
        let u = &mut cfg.uring;
        u.buf_count = BUFS;
        u.buf_size = BUF_SIZE;
        u.bundle = self.bundle;
        u.buf_inc = self.buf_inc;
        u.echo_zero_copy = self.zero_copy;
        u.zero_copy_relay = self.zero_copy;
        u.fixed_files = self.bundle == self.buf_inc;
        u.sqpoll = self.zero_copy && !self.bundle;
        u.reg_wait = self.buf_inc != self.zero_copy;
    }
}

/// Whether this kernel grants the techniques a combination needs checked (bundles and
/// incremental buffers); if not, the test skips visibly (or fails when io_uring is required).
fn kernel_grants(c: Combo) -> bool {
    let cfg =
        RingConfig { sq_entries: 8, cq_entries: 32, buf_count: 8, buf_size: 256, send_zc_min: 0, huge_pages: false };
    let asked = Techniques { bundle: c.bundle, buf_inc: c.buf_inc, ..Techniques::default() };
    let Ok(ring) = Ring::<u8>::with_techniques(cfg, asked) else { return true }; // `start` reports it
    let got = ring.techniques();
    if (c.bundle && !got.bundle) || (c.buf_inc && !got.buf_inc) {
        uring_feature_refused("recv bundles / incremental buffers", &ring.fallbacks().join("; "));
        return false;
    }
    true
}

/// A message's size, the same for the writer and the reader: log-uniform in 1..=MAX_MSG.
fn msg_len(conn: usize, round: usize) -> usize {
    let mut x =
        (conn as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (round as u64 + 7).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
    ((MAX_MSG as f64).powf(unit) as usize).clamp(1, MAX_MSG)
}

/// Byte `i` of connection `conn`'s message in `round` (never the same pattern twice in a row).
fn byte(conn: usize, round: usize, i: usize) -> u8 {
    ((conn * 131 + round * 31 + i) % 251) as u8
}

fn message(conn: usize, round: usize) -> Vec<u8> {
    (0..msg_len(conn, round)).map(|i| byte(conn, round, i)).collect()
}

/// Every connection sends ROUNDS messages, then FIN; the reader checks every byte and the EOF.
/// Returns the bytes sent (and received back).
fn exchange(addr: SocketAddr) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    let per = CONNS / GROUPS;
    let mut handles = Vec::new();
    let (total_tx, total_rx) = mpsc::channel();
    for g in 0..GROUPS {
        let ids: Vec<usize> = (g * per..(g + 1) * per).collect();
        let socks: Vec<TcpStream> = ids.iter().map(|_| connect(addr)).collect();
        let writers: Vec<TcpStream> = socks.iter().map(|s| s.try_clone().expect("clone")).collect();
        let w_ids = ids.clone();
        let total_tx = total_tx.clone();
        handles.push(std::thread::spawn(move || {
            let mut writers = writers;
            let mut sent = 0u64;
            for round in 0..ROUNDS {
                for (s, &id) in writers.iter_mut().zip(&w_ids) {
                    assert!(Instant::now() < deadline, "the exchange took longer than {DEADLINE:?}");
                    let m = message(id, round);
                    s.write_all(&m).unwrap_or_else(|e| panic!("conn {id} round {round}: send: {e}"));
                    sent += m.len() as u64;
                }
            }
            for s in &writers {
                s.shutdown(Shutdown::Write).expect("FIN");
            }
            total_tx.send(sent).expect("report");
        }));
        handles.push(std::thread::spawn(move || {
            let mut socks = socks;
            let mut buf = vec![0u8; 64 * 1024];
            for round in 0..ROUNDS {
                for (s, &id) in socks.iter_mut().zip(&ids) {
                    let len = msg_len(id, round);
                    let mut at = 0;
                    while at < len {
                        assert!(Instant::now() < deadline, "the exchange took longer than {DEADLINE:?}");
                        let want = (len - at).min(buf.len());
                        let n = s.read(&mut buf[..want]).unwrap_or_else(|e| panic!("conn {id} round {round}: {e}"));
                        assert!(n > 0, "conn {id} round {round}: EOF after {at} of {len} bytes");
                        if let Some(k) = (0..n).find(|&k| buf[k] != byte(id, round, at + k)) {
                            panic!("conn {id} round {round}: byte {} of {len} differs", at + k);
                        }
                        at += n;
                    }
                }
            }
            for (s, &id) in socks.iter_mut().zip(&ids) {
                let n = s.read(&mut buf).unwrap_or_else(|e| panic!("conn {id}: waiting for EOF: {e}"));
                assert_eq!(n, 0, "conn {id}: bytes after the last message");
            }
        }));
    }
    drop(total_tx);
    for h in handles {
        h.join().expect("client thread");
    }
    total_rx.iter().sum()
}

fn echo(bits: u8) {
    let combo = Combo::from_bits(bits);
    if !kernel_grants(combo) {
        return;
    }
    let mut cfg = config(Mode::Echo);
    cfg.max_conns = 2 * CONNS;
    combo.apply(&mut cfg);
    let Some(server) = start(cfg) else { return };
    let total = exchange(server.local_addr());
    let live = wait_counters(&server, "every connection closed", |c| c.conn.closed_total() == CONNS as u64);
    let c = stop(server);
    eprintln!("{combo:?}: {total} bytes, {c:?}");
    assert_eq!((c.conn.bytes_in, c.conn.bytes_out), (total, total), "{combo:?}: {c:?}");
    assert_eq!((c.accepted, c.conn.closed_by(CloseReason::Normal)), (CONNS as u64, CONNS as u64), "{combo:?}: {c:?}");
    check_techniques(combo, &live);
}

fn proxy(bits: u8) {
    let combo = Combo::from_bits(bits);
    if !kernel_grants(combo) {
        return;
    }
    let upstream = ringpoll_server::Server::start(config_on(Mode::Echo, Backend::Epoll), None).expect("upstream");
    let mut cfg = config(Mode::Proxy);
    cfg.groups = vec![Group::new("t", vec![Upstream { addr: upstream.local_addr(), weight: 1 }])];
    cfg.listeners[0].group = Some(0);
    cfg.max_conns = 2 * CONNS;
    combo.apply(&mut cfg);
    let Some(server) = start(cfg) else { return };
    let total = exchange(server.local_addr());
    let live = wait_counters(&server, "every pair closed", |c| c.conn.closed_total() == CONNS as u64);
    let c = stop(server);
    stop(upstream);
    eprintln!("{combo:?}: {total} bytes, {c:?}");
    // Client to upstream and back: every byte is received twice and sent twice.
    assert_eq!((c.conn.bytes_in, c.conn.bytes_out), (2 * total, 2 * total), "{combo:?}: {c:?}");
    assert_eq!((c.accepted, c.conn.closed_by(CloseReason::Normal)), (CONNS as u64, CONNS as u64), "{combo:?}: {c:?}");
    assert_eq!(c.upstream_failures, 0, "{c:?}");
    check_techniques(combo, &live);
}

/// The techniques did what they are for: the ring ran dry, bundles spanned several buffers,
/// bytes went out straight from receive buffers.
fn check_techniques(combo: Combo, c: &ringpoll_server::Counters) {
    assert!(c.uring_enobufs > 0, "{BUFS} buffers for {CONNS} connections must run dry: {c:?}");
    if combo.bundle {
        assert!(c.uring_bundles > 0, "no receive completion spanned several buffers: {c:?}");
    } else {
        assert_eq!(c.uring_bundles, 0, "a completion spanned several buffers without bundles: {c:?}");
    }
    if combo.zero_copy {
        assert!(c.uring_held_sends > 0, "nothing was sent straight from a receive buffer: {c:?}");
    } else {
        assert_eq!(c.uring_held_sends, 0, "{c:?}");
    }
}

/// One `#[test]` per combination (bits: 1 bundle, 2 incremental buffers, 4 zero-copy).
macro_rules! combos {
    ($body:ident: $($name:ident = $bits:expr),* $(,)?) => {
        mod $body { $( #[test] fn $name() { super::$body($bits) } )* }
    };
}

combos!(echo:
    plain = 0, bundle = 1, inc = 2, bundle_inc = 3,
    zero_copy = 4, bundle_zero_copy = 5, inc_zero_copy = 6, bundle_inc_zero_copy = 7);
combos!(proxy:
    plain = 0, bundle = 1, inc = 2, bundle_inc = 3,
    zero_copy = 4, bundle_zero_copy = 5, inc_zero_copy = 6, bundle_inc_zero_copy = 7);

//! Ring tests that need a kernel with io_uring (they skip, visibly, where it is refused, and
//! fail instead when `RINGPOLL_REQUIRE_URING` is set). The optional techniques have their own
//! files: `bufs.rs` (recv bundles, incremental buffers, echo from the provided buffer),
//! `fixed.rs` (fixed descriptors), `setup.rs` (SQPOLL, registered waits, fallbacks).

mod bufs;
mod fixed;
mod setup;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::*;
use crate::testing::{uring_feature_refused, uring_refused};

fn cfg() -> RingConfig {
    RingConfig { sq_entries: 8, cq_entries: 32, buf_count: 8, buf_size: 256, send_zc_min: 0, huge_pages: false }
}

/// A ring, or `None` (after the require-or-skip rule) where the kernel refuses io_uring.
fn ring() -> Option<Ring<u8>> {
    ring_with(cfg(), Techniques::default())
}

/// A ring asking for `t`, or `None` where the kernel refuses io_uring.
fn ring_with(cfg: RingConfig, t: Techniques) -> Option<Ring<u8>> {
    match Ring::with_techniques(cfg, t) {
        Ok(r) => Some(r),
        Err(SetupError::Unavailable(msg)) => {
            assert!(msg.contains("--backend epoll"), "{msg}");
            uring_refused(&msg);
            None
        }
        Err(e) => panic!("setting up a ring: {e:?}"),
    }
}

/// A ring with technique `feature` granted (`granted` says whether it is), or `None` after
/// the require-or-skip rule where io_uring or the technique is refused.
fn ring_granting(cfg: RingConfig, t: Techniques, feature: &str, granted: fn(&Techniques) -> bool) -> Option<Ring<u8>> {
    let ring = ring_with(cfg, t)?;
    if granted(&ring.techniques()) {
        return Some(ring);
    }
    let why = ring.fallbacks().join("; ");
    assert!(!why.is_empty(), "{feature} was refused without a fallback line");
    uring_feature_refused(feature, &why);
    None
}

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// A byte pattern that differs at every offset modulo 251 (a prime, so that no buffer size
/// lines up with it).
fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i + seed) % 251) as u8).collect()
}

/// Wait (bounded) for the next completion.
fn next(ring: &mut Ring<u8>) -> Completion<u8> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(c) = ring.next_completion() {
            return c;
        }
        assert!(Instant::now() < end, "no completion within 20 s");
        ring.enter(Duration::from_millis(100), 1).unwrap();
    }
}

/// Queue a multishot receive on `rx`, send `msg` from `tx`, return the receive's completion.
fn receive(ring: &mut Ring<u8>, rx: &TcpStream, tx: &mut TcpStream, msg: &[u8]) -> Completion<u8> {
    ring.recv_multi(rx, 1, 0);
    ring.enter(Duration::ZERO, 1).unwrap();
    tx.write_all(msg).unwrap();
    let c = next(ring);
    assert_eq!(c.op, 1);
    assert_eq!(c.result.as_ref().ok(), Some(&(msg.len() as u32)), "{c:?}");
    c
}

#[test]
fn a_ring_reports_its_setup_or_a_clear_refusal() {
    if let Some(mut ring) = ring() {
        assert!(ring.describe().starts_with("io_uring "), "{}", ring.describe());
        assert_eq!(ring.in_flight(), 0);
        ring.enter(Duration::ZERO, 1).unwrap();
        assert!(ring.next_completion().is_none());
    }
    let bad = RingConfig { buf_count: 12, ..cfg() };
    assert!(matches!(Ring::<u8>::new(bad), Err(SetupError::Invalid(_))));
}

#[test]
fn sends_hand_their_buffer_back_in_the_final_completion() {
    let Some(mut ring) = ring() else { return };
    let (a, mut b) = pair();
    ring.send(&a, SendBuf::new(b"xxhello".to_vec(), 2), 7);
    let c = next(&mut ring);
    assert_eq!((c.op, c.result.as_ref().ok()), (7, Some(&5)));
    let (bytes, start) = c.sent.expect("the buffer comes back").into_parts();
    assert_eq!((bytes.as_slice(), start), (&b"xxhello"[..], 2));
    let mut got = [0u8; 5];
    std::io::Read::read_exact(&mut b, &mut got).unwrap();
    assert_eq!(&got, b"hello");
}

#[test]
fn a_completion_kept_past_the_next_one_reads_nothing() {
    let Some(mut ring) = ring() else { return };
    let (rx, mut tx) = pair();
    let first = receive(&mut ring, &rx, &mut tx, b"first");
    assert_eq!(ring.data(&first), b"first");
    tx.write_all(b"second").unwrap();
    let second = next(&mut ring);
    assert_eq!(ring.data(&second), b"second");
    // The first buffer went back to the kernel when the second completion was handed out
    // (and may now hold other bytes): the stale completion is refused.
    assert!(ring.data(&first).is_empty());
    assert!(ring.hold(&first).is_none());
    assert!(ring.hold(&second).is_some(), "the current one can still be held");
}

#[test]
fn completions_and_held_buffers_of_another_ring_are_refused() {
    let Some(mut a) = ring() else { return };
    let Some(mut b) = ring() else { return };
    let (rx_a, mut tx_a) = pair();
    let (rx_b, mut tx_b) = pair();
    let ca = receive(&mut a, &rx_a, &mut tx_a, b"from a");
    let cb = receive(&mut b, &rx_b, &mut tx_b, b"from b");
    // Both rings lent the same buffer id (their first): only the owner may read it.
    assert!(b.data(&ca).is_empty(), "ring b read a's completion");
    assert!(b.hold(&ca).is_none(), "ring b held a's buffer");
    assert_eq!(a.data(&ca), b"from a");
    let held = a.hold(&ca).expect("a holds its own buffer");
    assert_eq!(held.len(), 6);
    let (out, _peer) = pair();
    // Sending or releasing it through ring b is refused; b's own lent buffer is untouched.
    let refused = b.send_held(&out, held, 9).unwrap_err();
    assert_eq!(refused.owner, a.id);
    assert_eq!(b.in_flight(), 1, "only b's receive is in flight");
    assert_eq!(b.data(&cb), b"from b");
    tx_a.write_all(b"again").unwrap();
    let again = next(&mut a);
    let held = a.hold(&again).expect("a holds its next buffer");
    assert!(b.release(held).is_err());
    let own = b.hold(&cb).expect("b holds its own buffer");
    assert!(b.release(own).is_ok());
}

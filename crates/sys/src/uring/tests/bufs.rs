//! Receive buffers with the optional techniques: recv bundles (one completion, several
//! buffers), incremental consumption (a small message takes a piece of a buffer), and
//! sending received bytes straight out of the provided buffers (echo without a copy).

use std::collections::VecDeque;
use std::io::Read;

use super::*;

fn bufs(count: u16, size: u32) -> RingConfig {
    RingConfig { buf_count: count, buf_size: size, ..cfg() }
}

const BUNDLE: Techniques =
    Techniques { fixed_files: 0, bundle: true, buf_inc: false, sqpoll_idle: None, reg_wait: false };
const INC: Techniques = Techniques { buf_inc: true, ..BUNDLE_OFF };
const BUNDLE_OFF: Techniques = Techniques { bundle: false, ..BUNDLE };
const BOTH: Techniques = Techniques { buf_inc: true, ..BUNDLE };

/// A small deterministic generator of message sizes.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Send `rounds` messages of 1..=`max` bytes one after the other and read them back through
/// the ring, chunk by chunk, byte-exact; every third completion is held and released only
/// after the next one, so that buffers go back to the ring out of order. Returns the most
/// buffers one completion spanned.
fn stream_random_messages(ring: &mut Ring<u8>, rounds: usize, max: usize) -> usize {
    let (rx, mut tx) = pair();
    ring.recv_multi(&rx, 1, 0);
    ring.enter(Duration::ZERO, 1).unwrap();
    let mut rng = Lcg(42);
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    let mut held: VecDeque<HeldBuf> = VecDeque::new();
    let mut most = 0;
    for round in 0..rounds {
        let msg = pattern(1 + rng.below(max), round);
        tx.write_all(&msg).unwrap();
        sent.extend_from_slice(&msg);
        let mut n = 0;
        while got.len() < sent.len() {
            let c = next(ring);
            assert_eq!(c.op, 1);
            assert!(c.result.is_ok() && c.more, "round {round}: {c:?}");
            most = most.max(usize::from(c.buffers));
            let chunks: Vec<&[u8]> = ring.chunks(&c).collect();
            assert_eq!(chunks.len(), usize::from(c.buffers));
            assert_eq!(chunks.iter().map(|b| b.len()).sum::<usize>(), *c.result.as_ref().unwrap() as usize);
            if c.buffers > 1 {
                assert!(ring.data(&c).is_empty(), "data() refuses a bundle: chunks() reads it");
            } else {
                assert_eq!(ring.data(&c), chunks[0]);
            }
            for b in chunks {
                got.extend_from_slice(b);
            }
            n += 1;
            if n % 3 == 0 {
                if let Some(h) = ring.hold(&c) {
                    held.push_back(h);
                }
            }
            while held.len() > 1 {
                ring.release(held.pop_front().unwrap()).unwrap();
            }
        }
        assert_eq!(got, sent, "round {round}: the bytes differ");
    }
    for h in held {
        ring.release(h).unwrap();
    }
    most
}

#[test]
fn bundles_deliver_every_byte_in_order_across_several_buffers() {
    let Some(mut ring) = ring_granting(bufs(32, 256), BUNDLE, "recv bundles", |t| t.bundle) else { return };
    let most = stream_random_messages(&mut ring, 60, 1800);
    assert!(most > 1, "no completion spanned several buffers (most: {most})");
}

#[test]
fn without_bundles_a_completion_never_spans_buffers() {
    let Some(mut ring) = ring_with(bufs(32, 256), Techniques::default()) else { return };
    assert_eq!(stream_random_messages(&mut ring, 30, 1800), 1);
}

#[test]
fn incremental_buffers_carry_small_and_large_messages_byte_exact() {
    let Some(mut ring) = ring_granting(bufs(8, 1024), INC, "incremental buffers", |t| t.buf_inc) else { return };
    assert_eq!(stream_random_messages(&mut ring, 60, 3000), 1, "no bundles asked");
}

#[test]
fn incremental_bundles_deliver_every_byte_in_order() {
    let Some(mut ring) =
        ring_granting(bufs(32, 256), BOTH, "recv bundles with incremental buffers", |t| t.bundle && t.buf_inc)
    else {
        return;
    };
    let most = stream_random_messages(&mut ring, 60, 1800);
    assert!(most > 1, "no completion spanned several buffers (most: {most})");
}

/// Ten small messages, each completion held: they fit in four buffers only if several share
/// one buffer (without incremental consumption the fifth would find the ring empty).
#[test]
fn incremental_buffers_let_small_messages_share_a_buffer() {
    let Some(mut ring) = ring_granting(bufs(4, 4096), INC, "incremental buffers", |t| t.buf_inc) else { return };
    let (rx, mut tx) = pair();
    ring.recv_multi(&rx, 1, 0);
    ring.enter(Duration::ZERO, 1).unwrap();
    let mut held = Vec::new();
    for i in 0..10 {
        let msg = pattern(10, i);
        tx.write_all(&msg).unwrap();
        let c = next(&mut ring);
        assert_eq!(c.result.as_ref().ok(), Some(&10), "message {i}: {c:?}");
        assert!(c.more, "message {i}: the receive ended (out of buffers?)");
        assert_eq!(ring.data(&c), msg);
        held.push(ring.hold(&c).expect("held"));
    }
    // The held pieces still read back as they were once more data went into their buffers.
    let big = pattern(12_000, 3);
    tx.write_all(&big).unwrap();
    let mut got = Vec::new();
    while got.len() < big.len() {
        let c = next(&mut ring);
        assert!(c.result.is_ok() && c.more, "{c:?}");
        got.extend(ring.chunks(&c).flatten().copied());
    }
    assert_eq!(got, big);
    for h in held {
        ring.release(h).unwrap();
    }
}

/// Receive `msg` on `rx` and send it back from the provided buffers it landed in (no copy),
/// re-sending the rest after a short send; returns the most buffers one held send spanned.
fn echo_from_provided_buffers(ring: &mut Ring<u8>, msg: &[u8]) -> usize {
    let (rx, mut tx) = pair();
    tx.write_all(msg).unwrap();
    ring.recv_multi(&rx, 1, 0);
    let (mut received, mut echoed) = (0, 0);
    let mut most = 0;
    while echoed < msg.len() {
        let c = next(ring);
        match c.op {
            1 => {
                assert!(c.more, "{c:?}");
                received += *c.result.as_ref().unwrap() as usize;
                let held = ring.hold(&c).expect("a receive with bytes can be held");
                most = most.max(held.buffers());
                ring.send_held(&rx, held, 2).unwrap();
            }
            2 => {
                let mut held = c.held.expect("the held buffer comes back");
                let n = *c.result.as_ref().unwrap() as usize;
                echoed += n;
                held.advance(n);
                if held.is_empty() {
                    ring.release(held).unwrap();
                } else {
                    ring.send_held(&rx, held, 2).unwrap();
                }
            }
            other => panic!("unexpected op {other}"),
        }
    }
    assert_eq!(received, msg.len());
    let mut back = vec![0u8; msg.len()];
    tx.read_exact(&mut back).unwrap();
    assert_eq!(back, msg, "echoed bytes differ");
    most
}

#[test]
fn echo_straight_from_the_provided_buffer_is_byte_exact() {
    let msg = pattern(1500, 11);
    if let Some(mut ring) = ring_with(bufs(16, 256), Techniques::default()) {
        assert_eq!(echo_from_provided_buffers(&mut ring, &msg), 1);
    }
    if let Some(mut ring) = ring_granting(bufs(16, 256), INC, "incremental buffers", |t| t.buf_inc) {
        echo_from_provided_buffers(&mut ring, &msg);
    }
    if let Some(mut ring) = ring_granting(bufs(16, 256), BUNDLE, "recv bundles", |t| t.bundle) {
        // A bundle goes back out as one sendmsg over its buffers.
        assert!(echo_from_provided_buffers(&mut ring, &msg) > 1);
    }
}

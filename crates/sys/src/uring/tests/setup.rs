//! Ring-wide techniques (SQPOLL, registered wait regions) and the fallbacks: a technique the
//! kernel lacks is off, said once, and the ring works as without it.

use std::io::Read;

use super::super::features::PRETEND_MISSING;
use super::*;

const ALL: Techniques = Techniques {
    fixed_files: 8,
    bundle: true,
    buf_inc: true,
    sqpoll_idle: Some(Duration::from_millis(5)),
    reg_wait: true,
};

/// One round trip through the ring: a receive of `msg` from the peer and a send back.
fn round_trip(ring: &mut Ring<u8>, rx: &TcpStream, tx: &mut TcpStream, msg: &[u8]) {
    tx.write_all(msg).unwrap();
    let mut got = Vec::new();
    while got.len() < msg.len() {
        let c = next(ring);
        assert_eq!(c.op, 1, "{c:?}");
        got.extend(ring.chunks(&c).flatten().copied());
    }
    assert_eq!(got, msg);
    ring.send(rx, SendBuf::new(got, 0), 2);
    let c = next(ring);
    assert_eq!((c.op, c.result.as_ref().ok()), (2, Some(&(msg.len() as u32))));
    let mut back = vec![0; msg.len()];
    tx.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn a_submission_queue_polling_thread_submits_and_is_woken_after_it_sleeps() {
    let t = Techniques { sqpoll_idle: Some(Duration::from_millis(1)), ..Techniques::default() };
    let Some(mut ring) = ring_granting(cfg(), t, "SQPOLL", |t| t.sqpoll_idle.is_some()) else { return };
    assert!(ring.describe().contains("SQPOLL"), "{}", ring.describe());
    let (rx, mut tx) = pair();
    ring.recv_multi(&rx, 1, 0);
    for i in 0..5 {
        round_trip(&mut ring, &rx, &mut tx, &pattern(100, i));
        // Long enough for the thread to go idle: the next submission must wake it.
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn waits_through_a_registered_region_see_completions_and_time_out() {
    let t = Techniques { reg_wait: true, ..Techniques::default() };
    let Some(mut ring) = ring_granting(cfg(), t, "registered wait regions", |t| t.reg_wait) else { return };
    assert!(ring.reg_wait());
    // A wait with nothing to complete ends at its timeout.
    ring.enter(Duration::from_millis(10), 1).unwrap();
    assert!(ring.next_completion().is_none());
    // A batched wait (minimum wait time) too.
    ring.enter(Duration::from_millis(10), 4).unwrap();
    let (rx, mut tx) = pair();
    ring.recv_multi(&rx, 1, 0);
    for i in 0..3 {
        round_trip(&mut ring, &rx, &mut tx, &pattern(300, i));
    }
}

#[test]
fn every_technique_together_carries_bytes_exactly() {
    let Some(mut ring) = ring_with(RingConfig { buf_count: 16, buf_size: 256, ..cfg() }, ALL) else { return };
    let got = ring.techniques();
    for (name, on) in [
        ("fixed files", got.fixed_files > 0),
        ("recv bundles", got.bundle),
        ("incremental buffers", got.buf_inc),
        ("SQPOLL", got.sqpoll_idle.is_some()),
        ("registered wait regions", got.reg_wait),
    ] {
        if !on {
            uring_feature_refused(name, &ring.fallbacks().join("; "));
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.accept_multi_direct(&listener, 9);
    ring.enter(Duration::ZERO, 1).unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = next(&mut ring);
    let conn = c.accepted_fixed.expect("fixed files are on");
    ring.recv_multi(&conn, 1, 0);
    for (i, n) in [1usize, 255, 256, 257, 1000, 3000].into_iter().enumerate() {
        let msg = pattern(n, i);
        client.write_all(&msg).unwrap();
        let mut got = Vec::new();
        while got.len() < n {
            let c = next(&mut ring);
            assert!(c.result.is_ok() && c.more, "{c:?}");
            got.extend(ring.chunks(&c).flatten().copied());
        }
        assert_eq!(got, msg, "{n} bytes");
    }
    ring.close_fixed(conn);
}

#[test]
fn a_technique_the_kernel_lacks_is_off_said_once_and_the_ring_still_works() {
    PRETEND_MISSING.with(|p| p.set(ALL));
    let ring = ring_with(RingConfig { buf_count: 16, buf_size: 256, ..cfg() }, ALL);
    PRETEND_MISSING.with(|p| p.set(Techniques::default()));
    let Some(mut ring) = ring else { return };
    assert_eq!(ring.techniques(), Techniques::default(), "nothing granted");
    let lines = ring.fallbacks().to_vec();
    for name in ["fixed files", "recv bundles", "incremental buffers", "SQPOLL", "registered waits"] {
        assert_eq!(lines.iter().filter(|l| l.contains(name)).count(), 1, "one line for {name}: {lines:?}");
    }
    assert!(ring.describe().contains("fixed files off, recv bundles off"), "{}", ring.describe());
    // Without a table, a direct accept is a plain one; receives take one buffer each.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.accept_multi_direct(&listener, 9);
    ring.enter(Duration::ZERO, 1).unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let conn = next(&mut ring).accepted.expect("a plain descriptor");
    ring.recv_multi(&conn, 1, 0);
    let msg = pattern(1000, 5);
    client.write_all(&msg).unwrap();
    let mut got = Vec::new();
    while got.len() < msg.len() {
        let c = next(&mut ring);
        assert_eq!(c.buffers, 1);
        got.extend_from_slice(ring.data(&c));
    }
    assert_eq!(got, msg);
}

#[test]
fn the_description_names_what_was_granted() {
    let Some(ring) = ring_with(cfg(), Techniques { fixed_files: 4, ..Techniques::default() }) else { return };
    let d = ring.describe();
    assert!(d.contains("receive buffers") && d.contains("zero-copy sends off"), "{d}");
    if ring.techniques().fixed_files > 0 {
        assert!(d.contains("fixed files 4 slots"), "{d}");
    }
}

#[test]
fn completions_waiting_in_task_work_are_seen_without_entering_and_end_the_wait() {
    let Some(mut ring) = ring() else { return };
    let (rx, mut tx) = pair();
    ring.recv_multi(&rx, 1, 0);
    ring.enter(Duration::ZERO, 1).unwrap();
    assert!(!ring.ready(), "nothing received yet");
    tx.write_all(b"x").unwrap();
    // With DEFER_TASKRUN the receive's completion waits in task work until the next enter;
    // TASKRUN_FLAG shows it without entering, so that the enter does not wait for a batch.
    let end = Instant::now() + Duration::from_secs(20);
    while !ring.ready() {
        assert!(Instant::now() < end, "the ring never saw the pending completion ({})", ring.describe());
        std::thread::sleep(Duration::from_millis(1));
    }
    ring.enter(Duration::from_secs(20), 32).unwrap();
    let c = ring.next_completion().expect("the enter ran the task work and posted the completion");
    assert_eq!(ring.data(&c), b"x");
}

//! Fixed (registered) descriptors: accept straight into the table, receive, send, shut down,
//! reset and close by slot; the table's limit; refusal across rings.

use std::io::Read;

use super::*;

fn fixed(n: u32) -> Techniques {
    Techniques { fixed_files: n, ..Techniques::default() }
}

/// A ring with a fixed file table of `n` slots, or `None` (require-or-skip).
fn fixed_ring(n: u32) -> Option<Ring<u8>> {
    ring_granting(cfg(), fixed(n), "fixed files", |t| t.fixed_files > 0)
}

/// Accept one connection from `client` into the table.
fn accept_direct(ring: &mut Ring<u8>, listener: &TcpListener) -> (FixedFd, TcpStream) {
    ring.accept_multi_direct(listener, 9);
    ring.enter(Duration::ZERO, 1).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = next(ring);
    assert_eq!(c.op, 9);
    assert!(c.accepted.is_none(), "a direct accept gives no descriptor");
    let Some(f) = c.accepted_fixed else { panic!("a fixed slot: {c:?}") };
    (f, client)
}

#[test]
fn a_connection_accepted_into_the_table_receives_sends_shuts_down_and_closes() {
    let Some(mut ring) = fixed_ring(16) else { return };
    assert_eq!(ring.techniques().fixed_files, 16);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (conn, mut client) = accept_direct(&mut ring, &listener);
    assert!(conn.slot() < 16);
    ring.recv_multi(&conn, 1, 0);
    ring.enter(Duration::ZERO, 1).unwrap();
    client.write_all(b"ping over a fixed file").unwrap();
    let c = next(&mut ring);
    assert_eq!((c.op, ring.data(&c)), (1, &b"ping over a fixed file"[..]));
    ring.send(&conn, SendBuf::new(b"pong".to_vec(), 0), 2);
    let c = next(&mut ring);
    assert_eq!((c.op, c.result.as_ref().ok()), (2, Some(&4)));
    let mut got = [0u8; 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    ring.shutdown_write(&conn, 3);
    let c = next(&mut ring);
    assert_eq!((c.op, c.result.as_ref().ok()), (3, Some(&0)));
    assert_eq!(client.read(&mut got).unwrap(), 0, "the client sees the FIN");
    // Close the slot while the receive is still armed: it keeps the socket until it ends.
    ring.close_fixed(conn);
    drop(client);
    let c = next(&mut ring);
    assert_eq!((c.op, c.result.as_ref().ok(), c.more), (1, Some(&0), false), "EOF ends the receive");
}

#[test]
fn a_reset_close_through_the_ring_reaches_the_peer() {
    let Some(mut ring) = fixed_ring(4) else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (conn, mut client) = accept_direct(&mut ring, &listener);
    ring.set_linger_zero(&conn, 4);
    let c = next(&mut ring);
    match &c.result {
        Ok(_) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
            uring_feature_refused("socket commands (SO_LINGER on a fixed file)", &e.to_string());
            ring.close_fixed(conn);
            return;
        }
        Err(e) => panic!("set_linger_zero: {e}"),
    }
    ring.close_fixed(conn);
    ring.enter(Duration::ZERO, 1).unwrap();
    let mut buf = [0u8; 8];
    let e = client.read(&mut buf).expect_err("a reset, not an orderly close");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
}

/// A full table fails the accept with ENFILE, and the kernel closes the connection it took
/// from the backlog (so the worker must stop accepting before its table is full: the table
/// should cover --max-conns); a freed slot is used again.
#[test]
fn a_full_table_fails_accepts_with_enfile_and_a_freed_slot_is_reused() {
    let Some(mut ring) = fixed_ring(2) else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, _ca) = accept_direct(&mut ring, &listener);
    let _cb = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let b = next(&mut ring).accepted_fixed.expect("second slot");
    assert_ne!(a.slot(), b.slot());
    let mut refused = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = next(&mut ring);
    assert_eq!(c.result.as_ref().unwrap_err().raw_os_error(), Some(libc::ENFILE), "{c:?}");
    refused.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 1];
    match refused.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the refused connection should be closed: {other:?}"),
    }
    let slot = a.slot();
    ring.close_fixed(a);
    if !c.more {
        ring.accept_multi_direct(&listener, 9);
    }
    ring.enter(Duration::ZERO, 1).unwrap();
    let _cc = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let again = next(&mut ring).accepted_fixed.expect("a slot again");
    assert_eq!(again.slot(), slot);
    ring.close_fixed(b);
    ring.close_fixed(again);
}

#[test]
fn a_fixed_descriptor_of_another_ring_is_refused() {
    let Some(mut a) = fixed_ring(4) else { return };
    let Some(mut b) = fixed_ring(4) else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (conn, _client) = accept_direct(&mut a, &listener);
    b.send(&conn, SendBuf::new(b"x".to_vec(), 0), 5);
    let c = next(&mut b);
    assert_eq!(c.result.as_ref().unwrap_err().raw_os_error(), Some(libc::EBADF), "{c:?}");
    b.close_fixed(conn); // refused as well: the slot stays a's
    b.enter(Duration::ZERO, 1).unwrap();
}

#[test]
fn without_a_table_a_direct_accept_is_a_plain_one() {
    let Some(mut ring) = ring() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.accept_multi_direct(&listener, 9);
    ring.enter(Duration::ZERO, 1).unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let c = next(&mut ring);
    assert!(c.accepted.is_some() && c.accepted_fixed.is_none(), "{c:?}");
}

//! The L4 proxy, end to end, on every backend: client -> ringpoll proxy -> upstream.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::proxy::{closed_port, custom_upstream, expect_closed, proxy_to};
use common::*;

// Every body runs on every backend and relay variant.
on_every_proxy_variant!(
    relays_random_payloads_byte_exact_on_200_connections,
    client_half_close_reaches_the_upstream_after_the_data,
    upstream_half_close_reaches_the_client_while_the_client_keeps_sending,
    client_reset_closes_the_upstream,
    upstream_reset_closes_the_client,
    upstream_down_closes_the_client_promptly,
    a_down_upstream_is_skipped,
    slow_client_fast_upstream_stays_bounded,
    fast_client_slow_upstream_stays_bounded,
    silent_upstream_is_bounded_by_the_idle_timeout,
);

/// A ringpoll echo server on epoll as the upstream.
fn echo_upstream() -> ServerProc {
    ServerProc::start("epoll", "echo", &[])
}

/// Send `payload` in random chunks on one thread while reading the echo on this one.
fn echo_through(addr: SocketAddr, payload: Vec<u8>, seed: u64) -> Vec<u8> {
    let mut s = connect(addr);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut off = 0;
        while off < payload.len() {
            let n = rng.range(1, 50_000).min(payload.len() - off);
            w.write_all(&payload[off..off + n]).unwrap();
            off += n;
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_eof(&mut s);
    writer.join().unwrap();
    got
}

fn relays_random_payloads_byte_exact_on_200_connections(backend: &str) {
    let up = echo_upstream();
    let px = proxy_to(backend, &[up.addr], &[]);
    let addr = px.addr;
    let clients: Vec<_> = (0..200u64)
        .map(|i| {
            std::thread::spawn(move || {
                let payload = Rng::new(i).bytes(1 << 20);
                let want = hash(&payload);
                let got = echo_through(addr, payload, i);
                (got.len(), hash(&got) == want)
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let (len, same) = c.join().unwrap_or_else(|_| panic!("{backend}: client {i} failed"));
        assert_eq!(len, 1 << 20, "{backend}: client {i} length");
        assert!(same, "{backend}: client {i} bytes differ");
    }
}

fn client_half_close_reaches_the_upstream_after_the_data(backend: &str) {
    let (up, rx, go) = custom_upstream(|mut s| {
        let got = read_to_eof(&mut s); // EOF must come after all the data
        s.write_all(format!("got {}", got.len()).as_bytes()).unwrap();
        got
    });
    let px = proxy_to(backend, &[up], &[]);
    go.go();
    let mut c = px.connect();
    let data = Rng::new(3).bytes(500_000);
    write_and_shutdown(&mut c, &data);
    // The reply travels back after our FIN was forwarded: the other direction still flows.
    assert_eq!(read_to_eof(&mut c), b"got 500000", "{backend}");
    assert!(rx.recv_timeout(IO_TIMEOUT).unwrap() == data, "{backend}: upstream saw other bytes");
}

fn upstream_half_close_reaches_the_client_while_the_client_keeps_sending(backend: &str) {
    let (up, rx, go) = custom_upstream(|mut s| {
        s.write_all(b"greeting").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        read_to_eof(&mut s)
    });
    let px = proxy_to(backend, &[up], &[]);
    go.go();
    let mut c = px.connect();
    let mut greet = Vec::new();
    c.read_to_end(&mut greet).unwrap();
    assert_eq!(greet, b"greeting", "{backend}: the upstream's FIN reached the client after its data");
    // Our direction is still open.
    let data = Rng::new(9).bytes(200_000);
    write_and_shutdown(&mut c, &data);
    assert!(rx.recv_timeout(IO_TIMEOUT).unwrap() == data, "{backend}: client bytes lost after upstream half-close");
}

/// Read until the peer closes (FIN or reset); `Err` with what happened instead (the read
/// timeout, IO_TIMEOUT, passed with the connection still open).
fn wait_closed(s: &mut TcpStream) -> Result<(), String> {
    let mut buf = [0u8; 1024];
    for _ in 0..100_000 {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(format!("still open: {e}")),
            Ok(_) => {}
        }
    }
    Err("still sending".into())
}

// No idle timeout is configured in the reset and down-upstream tests: nothing but the
// behaviour under test can close the connection within the read timeout (IO_TIMEOUT).

fn client_reset_closes_the_upstream(backend: &str) {
    let (read_tx, read_rx) = mpsc::channel();
    let (up, rx, go) = custom_upstream(move |mut s| {
        let mut first = [0u8; 5];
        s.read_exact(&mut first).unwrap();
        let _ = read_tx.send(());
        wait_closed(&mut s)
    });
    let px = proxy_to(backend, &[up], &[]);
    go.go();
    let mut c = px.connect();
    c.write_all(b"hello").unwrap();
    // Reset only once the upstream has the data (else the reset may discard it in the proxy).
    read_rx.recv_timeout(IO_TIMEOUT).expect("the upstream received the data");
    set_linger_zero(&c);
    drop(c);
    let closed = rx.recv_timeout(IO_TIMEOUT + IO_TIMEOUT).expect("the upstream thread ended");
    assert_eq!(closed, Ok(()), "{backend}: the upstream never saw the close");
}

fn upstream_reset_closes_the_client(backend: &str) {
    let (up, _rx, go) = custom_upstream(|mut s| {
        let mut first = [0u8; 5];
        s.read_exact(&mut first).unwrap();
        set_linger_zero(&s);
    });
    let px = proxy_to(backend, &[up], &[]);
    go.go();
    let mut c = px.connect();
    c.write_all(b"hello").unwrap();
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("{backend}: expected the client to be closed, got {other:?}"),
    }
}

fn upstream_down_closes_the_client_promptly(backend: &str) {
    // The refused connect closes the client, not the connect timeout (far beyond the read's).
    let px = proxy_to(backend, &[closed_port()], &["--connect-timeout", "300s"]);
    for _ in 0..5 {
        expect_closed(px.addr, b"anyone?", backend);
    }
    let (code, err) = px.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(err.contains("upstream_failures 5"), "{backend}: failures are counted: {err}");
}

fn a_down_upstream_is_skipped(backend: &str) {
    let up = echo_upstream();
    let px = proxy_to(backend, &[closed_port(), up.addr], &[]);
    for i in 0..40u64 {
        let payload = Rng::new(i).bytes(1000);
        assert!(echo_through(px.addr, payload.clone(), i) == payload, "{backend}: connection {i}");
    }
}

/// Write 64 KiB chunks until a write blocks for half a second (the peer stopped taking
/// bytes) or 128 MiB went out; returns the bytes written.
fn flood(s: &mut TcpStream) -> usize {
    s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let chunk = vec![0xabu8; 1 << 16];
    let mut sent = 0usize;
    while sent < 128 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    sent
}

/// RSS growth of the proxy while one side floods and the other never reads: the flood must
/// stall (backpressure) with the proxy's memory bounded.
fn flood_bound(backend: &str, client_floods: bool) {
    // An upstream that either floods us or never reads; its socket comes back through the
    // channel (and stays open until the test ends).
    let (up, rx, go) = custom_upstream(move |mut s| {
        let sent = if client_floods { 0 } else { flood(&mut s) };
        (s, sent)
    });
    let px = proxy_to(backend, &[up], &[]);
    go.go();
    let base = rss_kib(px.pid());
    let mut c = px.connect();
    let mut upstream = None;
    let sent = if client_floods {
        flood(&mut c)
    } else {
        let (s, sent) = rx.recv_timeout(Duration::from_secs(120)).expect("the upstream's flood ended");
        upstream = Some(s);
        sent
    };
    assert!(sent < 64 << 20, "{backend}: the proxy absorbed {sent} bytes");
    let grown = rss_kib(px.pid()).saturating_sub(base);
    assert!(grown < 2 * 256 + 2048, "{backend}: proxy RSS grew by {grown} KiB");
    drop(upstream);
}

fn slow_client_fast_upstream_stays_bounded(backend: &str) {
    flood_bound(backend, false);
}

fn fast_client_slow_upstream_stays_bounded(backend: &str) {
    flood_bound(backend, true);
}

fn silent_upstream_is_bounded_by_the_idle_timeout(backend: &str) {
    // The upstream holds its socket open, silent, until the test ends.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (up, _rx, go) = custom_upstream(move |s| {
        let _ = done_rx.recv_timeout(Duration::from_secs(120));
        s
    });
    let px = proxy_to(backend, &[up], &["--idle-timeout", "300ms"]);
    go.go();
    let mut c = px.connect();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    // Only the idle timeout can close the client within the read timeout (IO_TIMEOUT).
    assert_eq!(wait_closed(&mut c), Ok(()), "{backend}: the silent pair was not closed");
    drop(done_tx);
}

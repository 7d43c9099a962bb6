//! Deadlines and request limits end to end, on every backend: a trickled head gets 408 at the
//! head deadline while other connections are served, a peer that never reads is closed at the
//! send deadline with the server's memory bounded, keep-alive limits and timeouts, the body
//! deadline, `--max-body`, and echo's idle timeout. Every close is checked by reason in
//! `/metrics` and in the exit summary.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::http::{assert_hello, Reader, GET};
use common::metrics::{closed, sum, wait_for};
use common::*;

on_every_backend!(
    a_trickled_head_gets_408_at_the_deadline_while_64_others_are_served,
    a_peer_that_never_reads_is_closed_at_the_send_deadline_with_memory_bounded,
    keepalive_limits_body_deadline_and_max_body,
);

/// How much earlier than the client's clock says a deadline may strike: the server reads its
/// clock once per loop iteration, so an event can be stamped with the iteration's start.
const CLOCK_SLACK: Duration = Duration::from_millis(100);

/// Closes with `reason` in the exit summary (summed over the `worker N` lines).
fn summary_closes(stderr: &str, reason: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.starts_with("worker "))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().map(|w| w.trim_matches(|c| c == '(' || c == ')')).collect();
            words.windows(2).find(|w| w[0] == reason).and_then(|w| w[1].parse::<u64>().ok())
        })
        .sum()
}

/// What a trickling client saw: bytes it got out before the server answered, the time from
/// its first byte to the answer, and the answer (read to EOF).
struct Trickled {
    sent: usize,
    waited: Duration,
    answer: String,
}

/// Send `head` one byte per `every` until the server answers; read the answer to EOF.
fn trickle(addr: SocketAddr, head: &[u8], every: Duration) -> Trickled {
    let mut s = connect(addr);
    s.set_read_timeout(Some(every)).unwrap();
    let mut first = None;
    let mut got = Vec::new();
    let mut sent = 0;
    for b in head {
        // Taken before the byte leaves: the server cannot see it earlier.
        first.get_or_insert_with(Instant::now);
        if s.write_all(std::slice::from_ref(b)).is_err() {
            break;
        }
        sent += 1;
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("trickle: read: {e}"),
        }
    }
    let waited = first.map_or(Duration::ZERO, |t| t.elapsed());
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.read_to_end(&mut got).unwrap_or_else(|e| panic!("trickle: reading the answer to EOF: {e}"));
    Trickled { sent, waited, answer: String::from_utf8_lossy(&got).into_owned() }
}

fn a_trickled_head_gets_408_at_the_deadline_while_64_others_are_served(backend: &str) {
    const OTHERS: usize = 64;
    const TRICKLERS: usize = 4;
    const AT_LEAST: u64 = 20;
    let deadline = Duration::from_secs(2);
    let srv = ServerProc::start(backend, "http", &["--header-timeout", "2s", "--metrics", "127.0.0.1:0"]);
    let m = srv.metrics_addr();
    let addr = srv.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let others: Vec<JoinHandle<u64>> = (0..OTHERS)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut r = Reader::new(connect(addr));
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    r.stream.write_all(GET).unwrap_or_else(|e| panic!("other {i}: write: {e}"));
                    assert_hello(&r.response(false), false);
                    done += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                // Still served after the tricklers are gone.
                r.stream.write_all(GET).unwrap();
                assert_hello(&r.response(false), false);
                done
            })
        })
        .collect();
    let head = format!("GET /slow HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n", "p".repeat(40));
    let tricklers: Vec<JoinHandle<Trickled>> = (0..TRICKLERS)
        .map(|_| {
            let head = head.clone().into_bytes();
            std::thread::spawn(move || trickle(addr, &head, Duration::from_secs(1)))
        })
        .collect();
    // A connection that never sends a byte is closed at the same deadline, without a 408.
    let t = Instant::now(); // before the server can have accepted it
    let mut silent = connect(addr);
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).unwrap_or_else(|e| panic!("{backend}: silent connection: {e}"));
    assert!(rest.is_empty(), "{backend}: a silent connection got {:?}", String::from_utf8_lossy(&rest));
    assert!(t.elapsed() + CLOCK_SLACK >= deadline, "{backend}: silent connection closed after {:?}", t.elapsed());

    for (i, t) in tricklers.into_iter().enumerate() {
        let t = t.join().unwrap_or_else(|_| panic!("{backend}: trickler {i} failed"));
        assert!(t.answer.starts_with("HTTP/1.1 408 "), "{backend}: trickler {i}: {:?}", t.answer);
        assert!(t.answer.contains("\r\nConnection: close\r\n"), "{backend}: trickler {i}: {:?}", t.answer);
        // Never before the deadline (counted from the first byte), and at the head deadline,
        // not at the end of the head nor at the 10 s default.
        assert!(t.waited + CLOCK_SLACK >= deadline, "{backend}: trickler {i} answered after {:?}", t.waited);
        assert!((2..=10).contains(&t.sent), "{backend}: trickler {i} sent {} of {} bytes", t.sent, head.len());
    }
    stop.store(true, Ordering::Relaxed);
    for (i, o) in others.into_iter().enumerate() {
        let done = o.join().unwrap_or_else(|_| panic!("{backend}: connection {i} failed while others trickled"));
        assert!(done >= AT_LEAST, "{backend}: connection {i} completed only {done} requests meanwhile");
    }
    let expected = TRICKLERS as u64 + 1; // and the silent one
    let s = wait_for(m, "the head-deadline closes", |s| closed(s, "header_timeout") >= expected);
    assert_eq!(closed(&s, "header_timeout"), expected, "{backend}");
    let (code, err) = srv.terminate(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{backend}: {err}");
    assert_eq!(summary_closes(&err, "header_timeout"), expected, "{backend}: {err}");
}

/// Write to `s` (which never reads) until the server stops taking bytes; returns the total
/// and whether the server already closed the connection meanwhile. On a loaded machine
/// filling the kernel's buffers (megabytes on loopback) can take longer than the send
/// deadline, which then strikes while this is still writing: that is the close under test,
/// not a failure (the caller checks its reason in the metrics).
fn write_until_stuck(s: &mut TcpStream, chunk: &[u8], cap: usize) -> (usize, bool) {
    s.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    let end = Instant::now() + IO_TIMEOUT;
    let mut sent = 0;
    while sent < cap && Instant::now() < end {
        match s.write(chunk) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => return (sent, true),
            Err(e) => panic!("write after {sent} bytes: {e}"),
        }
    }
    (sent, false)
}

/// Keep writing until the connection is reset (the server closed it); bounded.
fn wait_reset(s: &mut TcpStream, what: &str) {
    let end = Instant::now() + IO_TIMEOUT;
    loop {
        assert!(Instant::now() < end, "{what}: the connection was never closed");
        match s.write(b"x") {
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn a_peer_that_never_reads_is_closed_at_the_send_deadline_with_memory_bounded(backend: &str) {
    let modes: Vec<_> = ["echo", "http"]
        .into_iter()
        .map(|mode| {
            let backend = backend.to_string();
            std::thread::spawn(move || a_stuck_reader(&backend, mode))
        })
        .collect();
    for m in modes {
        m.join().unwrap_or_else(|_| panic!("{backend}: a stuck reader case failed"));
    }
}

fn a_stuck_reader(backend: &str, mode: &str) {
    const HIGH: u64 = 64 * 1024;
    const CAP: usize = 64 << 20;
    let what = format!("{backend}/{mode}");
    let mut extra = vec!["--send-timeout", "1s", "--high-watermark", "64KiB", "--low-watermark", "16KiB"];
    extra.extend(["--metrics", "127.0.0.1:0"]);
    if mode == "echo" {
        extra.extend(["--idle-timeout", "2s"]);
    } else {
        // Otherwise the 10,000th response ends the connection (and its lingering close
        // reads on) before the peer's buffers fill.
        extra.extend(["--keepalive-requests", "0"]);
    }
    let srv = ServerProc::start(backend, mode, &extra);
    let m = srv.metrics_addr();
    // Warm up buffers and the allocator with a full-size exchange, then measure.
    let mut w = srv.connect();
    let (chunk, warm) = if mode == "echo" {
        (vec![b'z'; 64 * 1024], vec![b'w'; 300_000])
    } else {
        (GET.repeat(1000), GET.repeat(2000))
    };
    let reader = {
        let mut r = w.try_clone().unwrap();
        std::thread::spawn(move || read_to_eof(&mut r).len())
    };
    write_and_shutdown(&mut w, &warm);
    assert!(reader.join().unwrap() > 0, "{what}: warm-up");
    wait_for(m, "the warm-up connection closed", |s| sum(s, "ringpoll_connections_open", &[]) == 0);
    let base = rss_kib(srv.pid());

    // Echo: a quiet connection meanwhile is closed by the idle deadline, not the send one.
    let mut quiet = srv.connect();
    if mode == "echo" {
        quiet.write_all(b"q").unwrap();
        assert_eq!(read_exact(&mut quiet, 1), b"q");
    }
    let mut s = srv.connect();
    let (sent, reset) = write_until_stuck(&mut s, &chunk, CAP);
    assert!(sent < CAP, "{what}: a peer that never reads got all {CAP} bytes in: reading never paused");
    // Memory stays bounded for as long as the peer is stuck, until the send deadline ends it.
    let mut grown = 0;
    let s2 = wait_for(m, "the send-deadline close", |s| {
        grown = grown.max(rss_kib(srv.pid()).saturating_sub(base));
        assert!(grown <= 2 * HIGH / 1024 + 4096, "{what}: RSS grew by {grown} KiB while the peer was stuck");
        closed(s, "send_timeout") == 1
    });
    eprintln!("{what}: the stuck peer got {sent} bytes in; server RSS +{grown} KiB at most");
    assert_eq!(closed(&s2, "idle"), 0, "{what}: the stuck peer was closed as idle");
    if !reset {
        wait_reset(&mut s, &what);
    }
    if mode == "echo" {
        let mut b = [0u8; 1];
        assert!(matches!(quiet.read(&mut b), Ok(0)), "{what}: the quiet connection was not closed");
        wait_for(m, "the idle close", |s| closed(s, "idle") == 1);
    }
    drop(quiet);
    let (code, err) = srv.terminate(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{what}: {err}");
    assert_eq!(summary_closes(&err, "send_timeout"), 1, "{what}: {err}");
    assert_eq!(summary_closes(&err, "idle"), u64::from(mode == "echo"), "{what}: {err}");
    if mode == "echo" {
        // Echo sends back all it reads, and the other connections were echoed in full:
        // what it read and never sent is what it held for the stuck peer at the close (0
        // when its window opened just as the deadline struck: zero-window probes back off
        // to about the deadline).
        let (rx, tx) = (summary_counter(&err, "in"), summary_counter(&err, "out"));
        let held = rx.saturating_sub(tx);
        eprintln!("{what}: {held} bytes read from the stuck peer and held (received {rx}, sent {tx})");
        assert!(held <= HIGH + 64 * 1024, "{what}: {held} bytes read and held: {err}");
    }
}

/// The status line and head of one response read from `r`, with its body.
fn exchange(r: &mut Reader, req: &[u8]) -> common::http::Response {
    r.stream.write_all(req).unwrap();
    r.response(false)
}

fn keepalive_limits_body_deadline_and_max_body(backend: &str) {
    let flags =
        ["--keepalive-timeout", "1s", "--body-timeout", "1s", "--keepalive-requests", "5", "--max-body", "1KiB"];
    let mut extra = flags.to_vec();
    extra.extend(["--metrics", "127.0.0.1:0"]);
    let srv = ServerProc::start(backend, "http", &extra);
    let m = srv.metrics_addr();
    let addr = srv.addr;
    let second = Duration::from_secs(1);
    let mut cases: Vec<(&str, JoinHandle<()>)> = Vec::new();
    let mut case = |name: &'static str, f: fn(SocketAddr, Duration)| {
        cases.push((name, std::thread::spawn(move || f(addr, second))));
    };
    case("the 5th sequential request carries Connection: close", |addr, _| {
        let mut r = Reader::new(connect(addr));
        for i in 1..=5 {
            let resp = exchange(&mut r, GET);
            assert_hello(&resp, false);
            let close = resp.header("Connection") == Some("close");
            assert_eq!(close, i == 5, "response {i}: {resp:?}");
        }
        r.expect_eof();
    });
    case("8 pipelined requests get 5 answers", |addr, _| {
        let mut r = Reader::new(connect(addr));
        r.stream.write_all(&GET.repeat(8)).unwrap();
        for i in 1..=5 {
            let resp = r.response(false);
            assert_hello(&resp, false);
            assert_eq!(resp.header("Connection") == Some("close"), i == 5, "response {i}: {resp:?}");
        }
        r.expect_eof();
    });
    case("a quiet keep-alive connection closes after the keep-alive timeout", |addr, timeout| {
        let mut r = Reader::new(connect(addr));
        let t = Instant::now(); // the response, and so the deadline's start, comes after this
        r.stream.write_all(GET).unwrap();
        assert_hello(&r.response(false), false);
        r.expect_eof();
        assert!(t.elapsed() + CLOCK_SLACK >= timeout, "closed after {:?}", t.elapsed());
    });
    case("requests spaced below the keep-alive timeout keep the connection", |addr, timeout| {
        let mut r = Reader::new(connect(addr));
        let t = Instant::now();
        for _ in 0..5 {
            assert_hello(&exchange(&mut r, GET), false);
            std::thread::sleep(timeout / 4);
        }
        assert!(t.elapsed() > timeout);
    });
    case("empty lines do not hold a keep-alive connection open", |addr, _| {
        let mut r = Reader::new(connect(addr));
        assert_hello(&exchange(&mut r, GET), false);
        r.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        for _ in 0..50 {
            if r.stream.write_all(b"\r\n").is_err() {
                return;
            }
            let mut b = [0u8; 16];
            match r.stream.read(&mut b) {
                Ok(0) => return,
                Ok(n) => panic!("unexpected bytes {:?}", String::from_utf8_lossy(&b[..n])),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return, // reset
            }
        }
        panic!("still open after 50 empty lines, 10 s");
    });
    case("a stalled body gets 408", |addr, timeout| {
        let mut r = Reader::new(connect(addr));
        let t = Instant::now();
        let resp = exchange(&mut r, b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
        assert_eq!(resp.status, 408, "{resp:?}");
        assert!(t.elapsed() + CLOCK_SLACK >= timeout, "answered after {:?}", t.elapsed());
        assert_eq!(resp.header("Connection"), Some("close"));
        r.expect_eof();
    });
    case("Content-Length above --max-body gets 413 before the body", |addr, _| {
        let mut r = Reader::new(connect(addr));
        let resp = exchange(&mut r, b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n");
        assert_eq!(resp.status, 413, "{resp:?}");
        assert_eq!(resp.header("Connection"), Some("close"));
        r.expect_eof();
    });
    case("a body of exactly --max-body is read", |addr, _| {
        let mut r = Reader::new(connect(addr));
        let mut req = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n".to_vec();
        req.extend_from_slice(&[b'b'; 1024]);
        assert_eq!(exchange(&mut r, &req).status, 405);
        assert_hello(&exchange(&mut r, GET), false);
    });
    case("chunks adding up past --max-body get 413", |addr, _| {
        let mut r = Reader::new(connect(addr));
        let chunk = format!("200\r\n{}\r\n", "c".repeat(512));
        let req = format!("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}1\r\n");
        let resp = exchange(&mut r, req.as_bytes());
        assert_eq!(resp.status, 413, "{resp:?}");
        r.expect_eof();
    });
    case("a chunk of 2^64-1 bytes is refused, not read forever", |addr, _| {
        let mut r = Reader::new(connect(addr));
        let head = b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        let resp = exchange(&mut r, head);
        assert_eq!(resp.status, 413, "{resp:?}");
        assert_eq!(resp.header("Connection"), Some("close"));
        // Keep sending "body": the server must close the connection (after its lingering
        // close), not go on reading.
        r.stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let junk = vec![b'j'; 16 * 1024];
        let end = Instant::now() + IO_TIMEOUT;
        loop {
            assert!(Instant::now() < end, "still reading the body after {:?}", IO_TIMEOUT);
            match r.stream.write(&junk) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break, // reset or broken pipe: closed
            }
        }
    });
    for (name, h) in cases {
        h.join().unwrap_or_else(|_| panic!("{backend}: {name}"));
    }
    let s = wait_for(m, "every close", |s| sum(s, "ringpoll_connections_open", &[]) == 0);
    assert_eq!(closed(&s, "keepalive_timeout"), 2, "{backend}: {}", common::metrics::render(&s));
    assert_eq!(closed(&s, "body_timeout"), 1, "{backend}");
    assert_eq!(closed(&s, "header_timeout"), 0, "{backend}");
    let (code, err) = srv.terminate(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{backend}: {err}");
    assert_eq!(summary_closes(&err, "keepalive_timeout"), 2, "{backend}: {err}");
    assert_eq!(summary_closes(&err, "body_timeout"), 1, "{backend}: {err}");
}

//! End-to-end HTTP/1.1 plaintext behaviour, on every backend.

mod common;

use std::io::Write;
use std::time::Duration;

use common::http::{assert_hello, Reader, GET};
use common::*;

on_every_backend!(
    keep_alive_serves_many_requests_on_one_connection,
    pipelined_requests_split_at_random_offsets,
    http10_closes_after_the_response,
    http10_keep_alive_stays_open,
    connection_close_is_honoured,
    head_has_no_body,
    error_statuses_close_the_connection,
    method_not_allowed_keeps_the_connection,
    expect_continue_is_answered_before_the_body,
    a_thousand_concurrent_connections,
);

fn keep_alive_serves_many_requests_on_one_connection(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    let mut r = Reader::new(srv.connect());
    for i in 0..200 {
        let path = format!("GET /p/{i} HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n");
        r.stream.write_all(path.as_bytes()).unwrap();
        assert_hello(&r.response(false), false);
    }
}

fn pipelined_requests_split_at_random_offsets(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    let mut rng = Rng::new(42);
    for round in 0..20 {
        let mut r = Reader::new(srv.connect());
        let mut stream = Vec::new();
        let mut kinds = Vec::new();
        for i in 0..16 {
            match rng.range(0, 3) {
                0 => {
                    stream.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
                    kinds.push(true);
                }
                1 => {
                    stream.extend_from_slice(
                        format!("GET /{i}?q={round} HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n").as_bytes(),
                    );
                    kinds.push(false);
                }
                _ => {
                    stream.extend_from_slice(GET);
                    kinds.push(false);
                }
            }
        }
        let mut off = 0;
        while off < stream.len() {
            let n = rng.range(1, 40).min(stream.len() - off);
            r.stream.write_all(&stream[off..off + n]).unwrap();
            off += n;
            if rng.range(0, 3) == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        for (i, &head) in kinds.iter().enumerate() {
            let resp = r.response(head);
            assert!(resp.status == 200, "{backend}: round {round} request {i}: {resp:?}");
            assert_hello(&resp, head);
        }
    }
}

fn http10_closes_after_the_response(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    let mut r = Reader::new(srv.connect());
    r.stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_hello(&r.response(false), false);
    r.expect_eof();
}

fn http10_keep_alive_stays_open(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    let mut r = Reader::new(srv.connect());
    for _ in 0..3 {
        r.stream.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let resp = r.response(false);
        assert_hello(&resp, false);
        assert_eq!(resp.header("Connection").map(str::to_ascii_lowercase).as_deref(), Some("keep-alive"));
    }
}

fn connection_close_is_honoured(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    let mut r = Reader::new(srv.connect());
    // The request after `Connection: close` must not be answered.
    r.stream.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_hello(&r.response(false), false);
    let last = r.response(false);
    assert_hello(&last, false);
    assert_eq!(last.header("Connection"), Some("close"));
    r.expect_eof();
}

fn head_has_no_body(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    let mut r = Reader::new(srv.connect());
    r.stream.write_all(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_hello(&r.response(true), true);
    // If HEAD had carried a body, this response would start with "Hello, World!".
    assert_hello(&r.response(false), false);
    assert_eq!(r.pending(), 0);
}

/// Requests that must each get one error status, `Connection: close`, then EOF.
fn error_cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(5000));
    let big_header = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n", "b".repeat(9000));
    let many_headers = {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..120 {
            s.push_str(&format!("X-H{i}: v\r\n"));
        }
        s.push_str("\r\n");
        s
    };
    vec![
        ("garbage", b"BLAH\x01\x02 nonsense\r\n\r\n".to_vec(), 400),
        ("no Host in 1.1", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "CL with TE",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "conflicting CL",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            400,
        ),
        ("bad CL", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        ("bad chunk", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(), 400),
        ("long target", long_target.into_bytes(), 414),
        ("big header section", big_header.into_bytes(), 431),
        ("too many headers", many_headers.into_bytes(), 431),
        ("unknown coding", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 501),
        ("unknown expectation", b"POST / HTTP/1.1\r\nHost: h\r\nExpect: x\r\nContent-Length: 1\r\n\r\nx".to_vec(), 417),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n".to_vec(), 505),
    ]
}

fn error_statuses_close_the_connection(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    for (what, req, status) in error_cases() {
        let mut r = Reader::new(srv.connect());
        r.stream.write_all(&req).unwrap();
        let resp = r.response(false);
        assert_eq!(resp.status, status, "{backend}: {what}: {resp:?}");
        assert_eq!(resp.header("Connection"), Some("close"), "{backend}: {what}");
        r.expect_eof();
    }
    // The worker keeps serving everyone else.
    let mut r = Reader::new(srv.connect());
    r.stream.write_all(GET).unwrap();
    assert_hello(&r.response(false), false);
}

fn method_not_allowed_keeps_the_connection(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    let mut r = Reader::new(srv.connect());
    r.stream
        .write_all(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloDELETE / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\n")
        .unwrap();
    for _ in 0..2 {
        let resp = r.response(false);
        assert_eq!(resp.status, 405, "{backend}: {resp:?}");
        assert!(resp.header("Allow").is_some_and(|a| a.contains("GET")), "{resp:?}");
    }
    // The bodies were consumed, not taken for requests.
    r.stream.write_all(GET).unwrap();
    assert_hello(&r.response(false), false);
}

fn expect_continue_is_answered_before_the_body(backend: &str) {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    let srv = ServerProc::start(backend, "http", &[]);
    let mut r = Reader::new(srv.connect());
    r.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A client that waits for the interim response before sending its body (as curl does).
    r.stream.write_all(b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let mut interim = [0u8; CONTINUE.len()];
    std::io::Read::read_exact(&mut r.stream, &mut interim).expect("100 Continue before the body");
    assert_eq!(&interim[..], CONTINUE, "{backend}: {:?}", String::from_utf8_lossy(&interim));
    r.stream.write_all(b"hello").unwrap();
    let resp = r.response(false);
    assert_eq!(resp.status, 405, "{backend}: {resp:?}");
    // The body was consumed and the connection is still usable.
    r.stream.write_all(GET).unwrap();
    assert_hello(&r.response(false), false);
}

fn a_thousand_concurrent_connections(backend: &str) {
    let srv = ServerProc::start(backend, "http", &[]);
    let mut conns: Vec<_> = (0..1000).map(|_| Reader::new(srv.connect())).collect();
    for round in 0..2 {
        for r in &mut conns {
            r.stream.write_all(GET).unwrap();
        }
        for (i, r) in conns.iter_mut().enumerate() {
            let resp = r.response(false);
            assert!(resp.status == 200, "{backend}: round {round} conn {i}: {resp:?}");
        }
    }
}

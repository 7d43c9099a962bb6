//! The connection limits and the lifecycle's hooks: keep-alive request count, the body limit
//! (413), `Connection: close` while the server drains, and 408 on a read timeout.

use super::*;

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
const CTX: Ctx<'static> = Ctx::new(DATE);
const CLOSE: &str = "Connection: close\r\n";

/// Expected `200 OK` with an optional `Connection` line.
fn ok(conn: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nServer: ringpoll\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Content-Type: text/plain\r\nContent-Length: 13\r\n{conn}\r\nHello, World!"
    )
}

#[test]
fn the_nth_keepalive_request_gets_connection_close() {
    let mut h = Http1::with_limits(Limits { keepalive_requests: 3, max_body: u64::MAX });
    let mut out = Vec::new();
    let reqs = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(5);
    let p = h.on_data(&reqs, &mut out, &CTX);
    assert_eq!(p, Progress { requests: 3, close: true }, "the 4th and 5th are not answered");
    let expected = [ok(""), ok(""), ok(CLOSE)].concat();
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn closing_ctx_puts_connection_close_on_the_next_response() {
    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    let closing = Ctx { date: DATE, closing: true };
    let p = h.on_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &mut out, &closing);
    assert_eq!(p, Progress { requests: 1, close: true });
    assert_eq!(String::from_utf8(out).unwrap(), ok(CLOSE));
}

#[test]
fn bodies_over_the_limit_get_413_without_100_continue() {
    let lim = Limits { keepalive_requests: 0, max_body: 100 };
    let mut h = Http1::with_limits(lim);
    let mut out = Vec::new();
    let req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\nExpect: 100-continue\r\n\r\n";
    let p = h.on_data(req, &mut out, &CTX);
    assert!(p.close);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 413 Content Too Large\r\n"), "{text}");
    assert_eq!(h.status_of_last_error(), Some(413));
    // At the limit it is read and answered as usual.
    let mut h = Http1::with_limits(lim);
    let mut out = Vec::new();
    let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 100]);
    assert_eq!(h.on_data(&req, &mut out, &CTX), Progress { requests: 1, close: false });
    // A chunked body that adds up past the limit.
    let mut h = Http1::with_limits(lim);
    let mut out = Vec::new();
    let p = h.on_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n", &mut out, &CTX);
    assert!(!p.close, "100 bytes declared: still within");
    let p = h.on_data(&[b'y'; 100], &mut out, &CTX);
    assert!(!p.close);
    let p = h.on_data(b"\r\n1\r\n", &mut out, &CTX);
    assert!(p.close);
    assert_eq!(h.status_of_last_error(), Some(413));
}

#[test]
fn read_timeouts_answer_408_only_mid_request() {
    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    assert_eq!(h.request_state(), RequestState::Idle);
    assert_eq!(h.on_read_timeout(&mut out, &CTX), Progress { requests: 0, close: true });
    assert!(out.is_empty(), "nothing of a request: just close");

    let mut h = Http1::with_limits(Limits::NONE);
    h.on_data(b"GET / HTTP/1.1\r\nHo", &mut out, &CTX);
    assert_eq!(h.request_state(), RequestState::Head);
    let p = h.on_read_timeout(&mut out, &CTX);
    assert!(p.close);
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    assert_eq!(h.status_of_last_error(), Some(408));

    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    h.on_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab", &mut out, &CTX);
    assert_eq!(h.request_state(), RequestState::Body);
    h.on_read_timeout(&mut out, &CTX);
    assert_eq!(h.status_of_last_error(), Some(408));
}

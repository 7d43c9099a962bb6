//! Behaviour of the whole connection state machine: chunking independence, pipelining,
//! keep-alive rules, every error status, bounds, and property tests.

use super::*;
use proptest::prelude::*;

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
const CTX: Ctx<'static> = Ctx::new(DATE);
const CLOSE: &str = "Connection: close\r\n";
const KEEP_ALIVE: &str = "Connection: keep-alive\r\n";

/// Expected `200 OK` (no body for HEAD) with an optional `Connection` line.
fn ok(head: bool, conn: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nServer: ringpoll\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Content-Type: text/plain\r\nContent-Length: 13\r\n{conn}\r\n{}",
        if head { "" } else { "Hello, World!" }
    )
}

fn not_allowed(conn: &str) -> String {
    format!(
        "HTTP/1.1 405 Method Not Allowed\r\nServer: ringpoll\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         Allow: GET, HEAD\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n{conn}\r\n\
         Method Not Allowed"
    )
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Run {
    out: Vec<u8>,
    requests: u32,
    close: bool,
    last_error: Option<u16>,
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

/// Feeds the chunks in order, checking the contract after every call.
fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Run {
    let mut h = Http1::with_limits(Limits::NONE);
    let mut run = Run::default();
    for chunk in chunks {
        let before = run.out.len();
        let p = h.on_data(chunk, &mut run.out, &CTX);
        assert!(h.buffered() <= MAX_HEADER_BYTES, "buffered {} bytes", h.buffered());
        if run.close {
            assert_eq!(p, Progress { requests: 0, close: true }, "input after close");
            assert_eq!(run.out.len(), before, "output after close");
        }
        run.requests += p.requests;
        run.close = p.close;
        assert_eq!(p.close, h.is_closed());
    }
    run.last_error = h.status_of_last_error();
    run
}

fn whole(stream: &[u8]) -> Run {
    feed([stream])
}

fn bytewise(stream: &[u8]) -> Run {
    feed(stream.chunks(1))
}

/// Asserts that every two-piece split and byte-at-a-time feeding match feeding it whole.
fn assert_split_independent(stream: &[u8]) -> Run {
    let reference = whole(stream);
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(feed([a, b]), reference, "split at {cut}");
    }
    assert_eq!(bytewise(stream), reference, "byte at a time");
    reference
}

const MIXED: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world\
POST /up?q=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5;ext=1\r\nhello\r\n6 ; a=\"b;c\"\r\n world\r\n0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n\
\r\n\
HEAD /h HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n\
GET /bye HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n";

#[test]
fn mixed_pipeline_is_independent_of_chunking() {
    let run = assert_split_independent(MIXED);
    let expected = [ok(false, ""), not_allowed(""), not_allowed(""), ok(true, ""), ok(false, CLOSE)].concat();
    assert_eq!(run.text(), expected);
    assert_eq!(run.requests, 5);
    assert!(run.close);
    assert_eq!(run.last_error, None);
}

#[test]
fn sixteen_pipelined_gets_in_one_call() {
    let reqs: Vec<u8> = (0..16).flat_map(|i| format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes()).collect();
    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    let p = h.on_data(&reqs, &mut out, &CTX);
    assert_eq!(p, Progress { requests: 16, close: false });
    assert_eq!(String::from_utf8(out).unwrap(), ok(false, "").repeat(16));
    // Hot path: whole requests never touch the carry-over buffer.
    assert_eq!(h.buf.capacity(), 0);
    assert!(h.is_idle());
}

#[test]
fn partial_tail_is_carried_and_completed() {
    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    let p = h.on_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHo", &mut out, &CTX);
    assert_eq!(p, Progress { requests: 1, close: false });
    assert_eq!(h.buffered(), 19);
    assert!(!h.is_idle());
    let p = h.on_data(b"st: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n", &mut out, &CTX);
    assert_eq!(p, Progress { requests: 2, close: false });
    assert_eq!(h.buffered(), 0);
    assert!(h.is_idle());
    assert_eq!(String::from_utf8(out).unwrap(), ok(false, "").repeat(3));
}

#[test]
fn http10_closes_unless_keep_alive() {
    let run = whole(b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n");
    assert_eq!(run.text(), ok(false, CLOSE));
    assert_eq!((run.requests, run.close), (1, true));

    let ka = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nHEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let run = assert_split_independent(ka);
    assert_eq!(run.text(), [ok(false, KEEP_ALIVE), ok(true, KEEP_ALIVE)].concat());
    assert_eq!((run.requests, run.close), (2, false));
}

#[test]
fn head_has_length_but_no_body() {
    let run = whole(b"HEAD /anything HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(run.text(), ok(true, ""));
    assert!(run.text().ends_with("Content-Length: 13\r\n\r\n"));
}

#[test]
fn connection_close_stops_the_pipeline() {
    let run = whole(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: CLOSE\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(run.text(), ok(false, CLOSE));
    assert_eq!((run.requests, run.close, run.last_error), (1, true, None));
}

#[test]
fn not_allowed_waits_for_the_body_and_keeps_the_connection() {
    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    let p = h.on_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel", &mut out, &CTX);
    assert_eq!((p.requests, out.len()), (0, 0));
    assert!(!h.is_idle());
    let p = h.on_data(b"lo", &mut out, &CTX);
    assert_eq!(p, Progress { requests: 1, close: false });
    assert_eq!(String::from_utf8(out.clone()).unwrap(), not_allowed(""));
    assert!(h.is_idle());

    // Chunked body, then the connection goes on.
    out.clear();
    let p = h.on_data(b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", &mut out, &CTX);
    assert_eq!((p.requests, out.len()), (0, 0));
    let p =
        h.on_data(b"0\r\n\r\nDELETE /y HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &mut out, &CTX);
    assert_eq!(p, Progress { requests: 3, close: false });
    assert_eq!(String::from_utf8(out).unwrap(), [not_allowed(""), not_allowed(""), ok(false, "")].concat());
    assert_eq!(h.status_of_last_error(), None);
}

#[test]
fn expect_continue_gets_an_interim_response_before_the_body() {
    const CONTINUE: &str = "HTTP/1.1 100 Continue\r\n\r\n";
    let head = b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    // The head alone: the client is told to send the body, nothing else yet.
    let p = h.on_data(head, &mut out, &CTX);
    assert_eq!(p, Progress { requests: 0, close: false });
    assert_eq!(String::from_utf8_lossy(&out), CONTINUE);
    // The body completes the request (405 for POST), the connection stays open.
    let p = h.on_data(b"hello", &mut out, &CTX);
    assert_eq!(p, Progress { requests: 1, close: false });
    assert_eq!(String::from_utf8_lossy(&out), [CONTINUE, &not_allowed("")].concat());

    // Whatever the chunking: GET with a chunked body, then a plain GET.
    let stream = b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
    let run = assert_split_independent(stream);
    assert_eq!(run.text(), [CONTINUE, &ok(false, ""), &ok(false, "")].concat());
    // No body: no interim response.
    let run = whole(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(run.text(), ok(false, ""));
}

#[test]
fn bodies_on_get_and_duplicate_identical_lengths_are_skipped() {
    let stream = b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nGET \
POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc\
HEAD / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let run = assert_split_independent(stream);
    assert_eq!(run.text(), [ok(false, ""), not_allowed(""), ok(true, "")].concat());
    assert_eq!((run.requests, run.close), (3, false));
}

#[test]
fn huge_content_length_streams_without_overflow_or_growth() {
    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    h.on_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n", &mut out, &CTX);
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        assert_eq!(h.on_data(&chunk, &mut out, &CTX), Progress { requests: 0, close: false });
    }
    assert!(out.is_empty());
    assert_eq!(h.buffered(), 0);
    assert!(!h.is_idle());
}

fn error_cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let post = |extra: &str, body: &str| format!("POST / HTTP/1.1\r\nHost: h\r\n{extra}\r\n{body}").into_bytes();
    let chunked = |body: &str| post("Transfer-Encoding: chunked\r\n", body);
    let cl = |v: &str| post(&format!("Content-Length: {v}\r\n"), "");
    let big_header = format!("X-Big: {}\r\n", "b".repeat(3000));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    vec![
        ("bad request line", b"GET\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n".to_vec(), 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n".to_vec(), 400),
        ("NUL in value", b"GET / HTTP/1.1\r\nHost: h\0\r\n\r\n".to_vec(), 400),
        ("HTTP/2.0 line", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n".to_vec(), 505),
        ("HTTP/1.2 line", b"GET / HTTP/1.2\r\nHost: h\r\n\r\n".to_vec(), 505),
        ("malformed version", b"GET / HTTP/1.x\r\nHost: h\r\n\r\n".to_vec(), 400),
        ("unknown expectation", post("Expect: 200-ok\r\nContent-Length: 1\r\n", "x"), 417),
        ("differing CL headers", post("Content-Length: 5\r\nContent-Length: 6\r\n", ""), 400),
        ("differing CL list", cl("5, 6"), 400),
        ("negative CL", cl("-5"), 400),
        ("signed CL", cl("+5"), 400),
        ("non-digit CL", cl("5a"), 400),
        ("overflowing CL", cl("99999999999999999999999"), 400),
        ("empty CL", cl(""), 400),
        ("CL with TE", post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), 400),
        ("chunked twice", post("Transfer-Encoding: chunked, chunked\r\n", ""), 400),
        ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), 400),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("bad chunk size", chunked("zz\r\n"), 400),
        ("chunk size overflow", chunked("10000000000000000\r\n"), 400),
        ("chunk data without CRLF", chunked("3\r\nabcX\r\n"), 400),
        ("bare LF after chunk size", chunked("3\nabc\r\n0\r\n\r\n"), 400),
        ("chunk line too long", chunked(&format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE))), 400),
        ("target too long", format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "t".repeat(MAX_TARGET)).into_bytes(), 414),
        ("target too long, line unfinished", format!("GET /{}", "t".repeat(MAX_TARGET + 100)).into_bytes(), 414),
        ("header section too big", post(&big_header.repeat(3), ""), 431),
        (
            "header section too big, unfinished",
            format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(MAX_HEADER_BYTES)).into_bytes(),
            431,
        ),
        ("too many headers", post(&many, ""), 431),
        ("trailers too big", chunked(&format!("0\r\n{}\r\n", big_header.repeat(3))), 431),
        ("gzip", post("Transfer-Encoding: gzip\r\n", ""), 501),
        ("gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"), 501),
        ("identity", post("Transfer-Encoding: identity\r\n", ""), 501),
    ]
}

#[test]
fn every_error_status_answers_then_closes() {
    for (name, req, status) in error_cases() {
        let run = whole(&req);
        let text = run.text();
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{name}: {text}");
        assert!(text.contains("\r\nConnection: close\r\n\r\n"), "{name}: {text}");
        assert!(text.contains("\r\nServer: ringpoll\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), "{name}");
        assert_eq!(responses(&run.out), Ok(vec![(status, true)]), "{name}");
        assert!(run.close, "{name}");
        assert_eq!(run.last_error, Some(status), "{name}");
        // Same verdict whatever the chunking.
        assert_eq!(bytewise(&req), run, "{name}: byte at a time");

        // After the close nothing more is read or produced.
        let mut h = Http1::with_limits(Limits::NONE);
        let mut out = Vec::new();
        assert!(h.on_data(&req, &mut out, &CTX).close, "{name}");
        let len = out.len();
        let p = h.on_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &mut out, &CTX);
        assert_eq!((p, out.len()), (Progress { requests: 0, close: true }, len), "{name}");
        assert_eq!(h.buffered(), 0, "{name}");
    }
}

#[test]
fn error_after_good_requests_keeps_earlier_responses() {
    let run = assert_split_independent(
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(responses(&run.out), Ok(vec![(200, false), (400, true)]));
    assert_eq!((run.requests, run.close, run.last_error), (2, true, Some(400)));
}

#[test]
fn leading_blank_lines_are_ignored() {
    let run = assert_split_independent(b"\r\n\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n\r\n");
    assert_eq!(run.text(), ok(false, ""));
    // Endless blank lines do not accumulate.
    let mut h = Http1::with_limits(Limits::NONE);
    let mut out = Vec::new();
    for _ in 0..10_000 {
        h.on_data(b"\r\n", &mut out, &CTX);
        h.on_data(b"\r", &mut out, &CTX);
        h.on_data(b"\n", &mut out, &CTX);
    }
    assert!(out.is_empty() && h.is_idle());
}

#[test]
fn eof_closes_without_answering_partial_requests() {
    for partial in [&b"GET / HTTP/1.1\r\nHost"[..], b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nab", b""] {
        let mut h = Http1::with_limits(Limits::NONE);
        let mut out = Vec::new();
        h.on_data(partial, &mut out, &CTX);
        assert_eq!(h.is_idle(), partial.is_empty());
        assert_eq!(h.on_eof(&mut out, &CTX), Progress { requests: 0, close: true });
        assert!(out.is_empty());
        assert_eq!(
            h.on_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &mut out, &CTX),
            Progress { requests: 0, close: true }
        );
        assert!(out.is_empty());
    }
}

/// Splits `out` into complete responses: (status, has `Connection: close`). A 200 may lack
/// its body (HEAD); every other body must be there in full.
fn responses(mut out: &[u8]) -> Result<Vec<(u16, bool)>, String> {
    let mut list = Vec::new();
    while !out.is_empty() {
        if !out.starts_with(b"HTTP/1.1 ") {
            return Err(format!("not a status line: {:?}", String::from_utf8_lossy(out)));
        }
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").ok_or("unterminated head")? + 4;
        let head = std::str::from_utf8(&out[..end]).map_err(|e| e.to_string())?;
        let status: u16 = head[9..12].parse().map_err(|_| "bad status")?;
        if status == 100 {
            // Interim response to `Expect: 100-continue`: not an answer to a request.
            if head != "HTTP/1.1 100 Continue\r\n\r\n" {
                return Err(format!("bad interim response {head:?}"));
            }
            out = &out[end..];
            continue;
        }
        let len: usize = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .ok_or("no Content-Length")?
            .parse()
            .map_err(|_| "bad Content-Length")?;
        out = &out[end..];
        if status != 200 || out.starts_with(HELLO_BODY) {
            if out.len() < len {
                return Err("truncated body".into());
            }
            out = &out[len..];
        }
        list.push((status, head.contains("\r\nConnection: close\r\n")));
    }
    Ok(list)
}

const VOCAB: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\n",
    b"HEAD /x HTTP/1.1\r\n",
    b"POST /p HTTP/1.1\r\n",
    b"GET / HTTP/1.0\r\n",
    b"Host: a\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Expect: 100-continue\r\n",
    b"Expect: x\r\n",
    b"GET / HTTP/2.0\r\n",
    b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"3\r\nabc\r\n",
    b"3;x=y\r\nabc\r\n",
    b"0\r\n\r\n",
    b"0\r\nT: 1\r\n\r\n",
    b"fffffffffffffffff\r\n",
    b"abc",
];

fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(VOCAB).prop_map(<[u8]>::to_vec),
        2 => proptest::collection::vec(any::<u8>(), 0..48),
        1 => (0usize..6000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

/// Cuts `stream` into pieces of the given sizes (cycled), the last piece taking the rest.
fn pieces<'a>(stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut rest = stream;
    let mut out = Vec::new();
    for &s in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(s.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_any_chunking_is_safe_and_bounded(
        frags in proptest::collection::vec(fragment(), 0..40),
        sizes in proptest::collection::vec(1usize..3000, 1..16),
    ) {
        let stream = frags.concat();
        // `feed` checks the buffer bound and the silence after close on every call.
        let run = feed(pieces(&stream, &sizes));
        let list = responses(&run.out).map_err(TestCaseError::fail)?;
        prop_assert_eq!(list.len(), run.requests as usize);
        if let Some(pos) = list.iter().position(|&(_, close)| close) {
            prop_assert_eq!(pos + 1, list.len(), "response after a closing one");
            prop_assert!(run.close);
        }
        if let Some(status) = run.last_error {
            prop_assert_eq!(list.last().copied(), Some((status, true)));
        }
    }
}

#[derive(Clone, Debug)]
enum ReqBody {
    None,
    Length(Vec<u8>),
    /// Chunks (each non-empty), with or without extensions, and trailer lines.
    Chunked(Vec<Vec<u8>>, bool, Vec<String>),
}

#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    path: String,
    http10: bool,
    headers: Vec<(String, String)>,
    body: ReqBody,
}

fn req_strategy() -> impl Strategy<Value = Req> {
    let body = prop_oneof![
        Just(ReqBody::None),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(ReqBody::Length),
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..4),
            any::<bool>(),
            proptest::collection::vec("X-T[a-z]{0,5}: [ -~]{0,10}", 0..3),
        )
            .prop_map(|(c, e, t)| ReqBody::Chunked(c, e, t)),
    ];
    (
        proptest::sample::select(&["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"][..]),
        "/[a-zA-Z0-9._~/-]{0,30}(\\?[a-z0-9=&]{0,10})?",
        proptest::bool::weighted(0.2),
        proptest::collection::vec(("X-[A-Za-z-]{1,10}", "[!-~]([ -~]{0,20}[!-~])?"), 0..5),
        body,
    )
        .prop_map(|(method, path, http10, headers, body)| {
            // HTTP/1.0 has no transfer codings: frame its bodies by length instead.
            let body = match body {
                ReqBody::Chunked(chunks, _, _) if http10 => ReqBody::Length(chunks.concat()),
                b => b,
            };
            Req { method, path, http10, headers, body }
        })
}

impl Req {
    fn serialize(&self, close: bool, out: &mut Vec<u8>) {
        let version = if self.http10 { "1.0" } else { "1.1" };
        out.extend_from_slice(format!("{} {} HTTP/{version}\r\nHost: example\r\n", self.method, self.path).as_bytes());
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if self.http10 && !close {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        match &self.body {
            ReqBody::None => out.extend_from_slice(b"\r\n"),
            ReqBody::Length(b) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            ReqBody::Chunked(chunks, ext, trailers) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for c in chunks {
                    let e = if *ext { ";name=\"v a l\"" } else { "" };
                    out.extend_from_slice(format!("{:x}{e}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for t in trailers {
                    out.extend_from_slice(format!("{t}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    fn expected(&self, close: bool) -> String {
        let conn = if close {
            CLOSE
        } else if self.http10 {
            KEEP_ALIVE
        } else {
            ""
        };
        match self.method {
            "GET" => ok(false, conn),
            "HEAD" => ok(true, conn),
            _ => not_allowed(conn),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_requests_any_chunking_one_response_each(
        reqs in proptest::collection::vec(req_strategy(), 1..12),
        close_last in any::<bool>(),
        sizes in proptest::collection::vec(1usize..200, 1..16),
    ) {
        let mut stream = Vec::new();
        let mut expected = String::new();
        for (i, r) in reqs.iter().enumerate() {
            let close = close_last && i + 1 == reqs.len();
            r.serialize(close, &mut stream);
            expected.push_str(&r.expected(close));
        }
        let run = feed(pieces(&stream, &sizes));
        prop_assert_eq!(run.text(), expected);
        prop_assert_eq!(run.requests as usize, reqs.len());
        prop_assert_eq!(run.close, close_last);
        prop_assert_eq!(run.last_error, None);
        prop_assert_eq!(&run, &whole(&stream));
    }
}

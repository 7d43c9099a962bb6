//! Request-head parsing (httparse) and the framing rules of RFC 9112 on top of it.
//!
//! [`parse_head`] is a pure function of the bytes it is given, so that the driver in `mod.rs`
//! can call it on the peer's input directly (the hot path) or on its own partial buffer and
//! reach the same verdict either way.

use std::mem::MaybeUninit;

use super::limits::{MAX_HEADERS, MAX_HEADER_BYTES, MAX_TARGET};

/// A first line this long whose target has not ended yet cannot carry a target of at most
/// [`MAX_TARGET`] bytes (the slack leaves room for the method and the version), so the request
/// is answered with 414 without waiting for the rest of the line.
pub(super) const REQUEST_LINE_LIMIT: usize = MAX_TARGET + 64;

/// The methods the plaintext endpoint distinguishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Method {
    #[default]
    Get,
    Head,
    /// Anything else: answered with 405 once its body has been skipped.
    Other,
}

/// What the response says about the connection, and whether it closes afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Conn {
    /// HTTP/1.1 persistent connection: no `Connection` header in the response.
    #[default]
    KeepAlive,
    /// HTTP/1.0 with `Connection: keep-alive`: echoed back, connection stays open.
    KeepAlive10,
    /// `Connection: close` in the response, then close.
    Close,
}

/// How the request body (if any) is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Everything the driver needs from a valid request head (owned, so that the parsed borrow
/// of the input can end before the connection state is updated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub method: Method,
    pub conn: Conn,
    pub framing: Framing,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body: the client may wait for an
    /// interim `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    /// A valid head of `len` bytes (the body, if any, starts right after it).
    Complete { len: usize, head: Head },
    /// More bytes are needed; nothing is wrong so far and the limits still hold.
    Partial,
    /// Answer with this status and close.
    Error(u16),
}

/// Parses one request head at the start of `data`.
///
/// Callers pass at most `MAX_HEADER_BYTES + 1` bytes: that is enough to decide every case,
/// and it makes the verdict independent of how much of the stream happened to be available.
pub(super) fn parse_head(data: &[u8]) -> Parsed {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let res = req.parse_with_uninit_headers(data, &mut headers);
    // httparse records the target as soon as it is parsed, even when the rest of the head is
    // missing or broken: an over-long target is reported as such in every case.
    if req.path.is_some_and(|p| p.len() > MAX_TARGET) {
        return Parsed::Error(414);
    }
    match res {
        Err(httparse::Error::TooManyHeaders) => Parsed::Error(431),
        Err(httparse::Error::Version) => Parsed::Error(version_error(data)),
        Err(_) => Parsed::Error(400),
        Ok(httparse::Status::Partial) => {
            if req.path.is_none() && data.len() > REQUEST_LINE_LIMIT {
                Parsed::Error(414)
            } else if data.len() > MAX_HEADER_BYTES {
                Parsed::Error(431)
            } else {
                Parsed::Partial
            }
        }
        Ok(httparse::Status::Complete(len)) => {
            if len > MAX_HEADER_BYTES {
                return Parsed::Error(431);
            }
            match analyze(req.method, req.version, req.headers) {
                Ok(head) => Parsed::Complete { len, head },
                Err(status) => Parsed::Error(status),
            }
        }
    }
}

/// Status for a request line whose version httparse refused: a well-formed `HTTP/x.y` other
/// than 1.0 and 1.1 is a version this server does not speak (505); anything else is malformed
/// (400). httparse stops at the first byte that cannot belong to `HTTP/1.0` or `HTTP/1.1`, and
/// only the bytes up to that point are looked at, so the verdict is the same however the
/// stream is split.
fn version_error(data: &[u8]) -> u16 {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    // Exactly one space between the parts: a second space is where httparse stopped (an
    // empty token here, so 400), not a separator to look past.
    let Some(version) = line.split(|&b| b == b' ').nth(2) else {
        return 400;
    };
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, ..] if major.is_ascii_digit() && *major != b'1' => 505,
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor, ..] if minor.is_ascii_digit() && *minor > b'1' => 505,
        _ => 400,
    }
}

/// Number of bytes of blank lines (`\r\n` or `\n`) at the start of `data`, which a server
/// ignores before a request line (RFC 9112 section 2.2).
pub(super) fn skip_empty_lines(data: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match data.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// Applies the framing and connection rules to a complete, syntactically valid head.
fn analyze(method: Option<&str>, version: Option<u8>, headers: &[httparse::Header<'_>]) -> Result<Head, u16> {
    let http10 = version == Some(0);
    let method = match method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };

    let mut close = false;
    let mut keep_alive = false;
    let mut hosts = 0u32;
    let mut content_length: Option<u64> = None;
    let mut content_length_seen = false;
    let mut bad_length = false;
    let mut te_seen = false;
    let mut chunked = 0u32;
    let mut unknown_coding = false;
    let mut expect_continue = false;
    let mut unknown_expectation = false;

    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in list(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            content_length_seen = true;
            // `Content-Length: 5, 5` (or the same value twice) is tolerated as RFC 9110
            // allows; anything else that is not one plain decimal number is rejected.
            let mut any = false;
            for elem in h.value.split(|&b| b == b',') {
                any = true;
                match (parse_decimal(trim(elem)), content_length) {
                    (None, _) => bad_length = true,
                    (Some(n), None) => content_length = Some(n),
                    (Some(n), Some(prev)) if n != prev => bad_length = true,
                    (Some(_), Some(_)) => {}
                }
            }
            bad_length |= !any;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            for coding in list(h.value) {
                // Transfer parameters (`;q=...`) do not change which coding it is.
                let coding_name = trim(coding.split(|&b| b == b';').next().unwrap_or_default());
                if coding_name.eq_ignore_ascii_case(b"chunked") {
                    chunked += 1;
                } else {
                    unknown_coding = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"expect") && !http10 {
            // RFC 9110 section 10.1.1: 100-continue is the only expectation; an HTTP/1.0
            // request's Expect is ignored.
            if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                unknown_expectation = true;
            }
        }
    }

    if bad_length {
        return Err(400);
    }
    let framing = if te_seen {
        // Both framings at once is the classic request-smuggling vector; HTTP/1.0 has no
        // transfer codings at all (RFC 9112 section 6.1 says: treat the framing as faulty).
        if content_length_seen || http10 {
            return Err(400);
        }
        if unknown_coding {
            return Err(501);
        }
        if chunked != 1 {
            // Empty list, or chunked applied twice.
            return Err(400);
        }
        Framing::Chunked
    } else {
        match content_length {
            None | Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    if hosts > 1 || (!http10 && hosts == 0) {
        return Err(400);
    }
    if unknown_expectation {
        return Err(417);
    }

    let conn = if http10 {
        if keep_alive && !close {
            Conn::KeepAlive10
        } else {
            Conn::Close
        }
    } else if close {
        Conn::Close
    } else {
        Conn::KeepAlive
    };
    let expect_continue = expect_continue && framing != Framing::None;
    Ok(Head { method, conn, framing, expect_continue })
}

/// The non-empty elements of a comma-separated header list, with optional whitespace trimmed.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim).filter(|e| !e.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `1*DIGIT` as a u64; `None` on anything else (sign, empty, non-digit, overflow).
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(req: &str) -> Result<Head, u16> {
        match parse_head(req.as_bytes()) {
            Parsed::Complete { len, head } => {
                assert_eq!(len, req.len(), "head length");
                Ok(head)
            }
            Parsed::Partial => panic!("partial: {req:?}"),
            Parsed::Error(s) => Err(s),
        }
    }

    #[test]
    fn plain_get_keeps_alive_without_body() {
        let h = head("GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(
            h,
            Head { method: Method::Get, conn: Conn::KeepAlive, framing: Framing::None, expect_continue: false }
        );
        let h = head("HEAD / HTTP/1.1\r\nhost: a\r\nconnection: Keep-Alive, CLOSE\r\n\r\n").unwrap();
        assert_eq!(h, Head { method: Method::Head, conn: Conn::Close, framing: Framing::None, expect_continue: false });
    }

    #[test]
    fn expect_rules() {
        let req = |v: &str, extra: &str| format!("POST / HTTP/1.1\r\nHost: a\r\nExpect: {v}\r\n{extra}\r\n");
        let h = head(&req("100-Continue", "Content-Length: 3\r\n")).unwrap();
        assert!(h.expect_continue);
        assert!(head(&req(" 100-continue ", "Transfer-Encoding: chunked\r\n")).unwrap().expect_continue);
        // No body, nothing to wait for.
        assert!(!head(&req("100-continue", "")).unwrap().expect_continue);
        assert_eq!(head(&req("100-continue, fancy", "Content-Length: 3\r\n")), Err(417));
        assert_eq!(head(&req("fancy", "")), Err(417));
        // HTTP/1.0 expectations are ignored.
        let h10 = head("POST / HTTP/1.0\r\nExpect: fancy\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert!(!h10.expect_continue);
    }

    #[test]
    fn unsupported_versions_are_505_malformed_ones_400() {
        for (line, status) in [
            ("GET / HTTP/2.0", 505),
            ("GET / HTTP/3", 505),
            ("GET / HTTP/0.9", 505),
            ("GET / HTTP/1.2", 505),
            ("GET / HTTP/1.9", 505),
            ("GET / HTTP/1.x", 400),
            ("GET / HTTP/x.1", 400),
            ("GET / HTTQ/1.1", 400),
            ("GET / http/1.1", 400),
            ("GET /  HTTP/2.0", 400),
            ("At* E?EE  HTTP/0S", 400),
        ] {
            let req = format!("{line}\r\nHost: a\r\n\r\n");
            assert_eq!(head(&req), Err(status), "{line}");
            // The verdict does not depend on how much of the line has arrived.
            let verdicts: Vec<_> = (1..=req.len())
                .filter_map(|n| match parse_head(&req.as_bytes()[..n]) {
                    Parsed::Error(s) => Some(s),
                    _ => None,
                })
                .collect();
            assert!(verdicts.iter().all(|&s| s == status), "{line}: {verdicts:?}");
        }
    }

    #[test]
    fn http10_connection_rules() {
        assert_eq!(head("GET / HTTP/1.0\r\n\r\n").unwrap().conn, Conn::Close);
        let ka = "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        assert_eq!(head(ka).unwrap().conn, Conn::KeepAlive10);
        let both = "GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n";
        assert_eq!(head(both).unwrap().conn, Conn::Close);
    }

    #[test]
    fn content_length_rules() {
        let f =
            |v: &str| head(&format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n")).map(|h| h.framing);
        assert_eq!(f("5"), Ok(Framing::Length(5)));
        assert_eq!(f("0"), Ok(Framing::None));
        assert_eq!(f("5, 5"), Ok(Framing::Length(5)));
        assert_eq!(f("18446744073709551615"), Ok(Framing::Length(u64::MAX)));
        for bad in ["5, 6", "-5", "+5", "5a", "0x5", "", "5,", "18446744073709551616", "1 2"] {
            assert_eq!(f(bad), Err(400), "{bad:?}");
        }
        let twice = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n";
        assert_eq!(head(twice).unwrap().framing, Framing::Length(7));
        let differ = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n";
        assert_eq!(head(differ), Err(400));
    }

    #[test]
    fn transfer_encoding_rules() {
        let f =
            |v: &str| head(&format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n")).map(|h| h.framing);
        assert_eq!(f("chunked"), Ok(Framing::Chunked));
        assert_eq!(f("Chunked"), Ok(Framing::Chunked));
        for unknown in ["gzip", "gzip, chunked", "identity", "chunked, gzip"] {
            assert_eq!(f(unknown), Err(501), "{unknown:?}");
        }
        assert_eq!(f("chunked, chunked"), Err(400));
        assert_eq!(f(""), Err(400));
        let both = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head(both), Err(400));
        assert_eq!(head("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(400));
    }

    #[test]
    fn host_rules() {
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(400));
        assert!(head("GET / HTTP/1.0\r\n\r\n").is_ok());
    }

    #[test]
    fn limits_and_syntax() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_TARGET));
        assert_eq!(head(&long), Err(414));
        let ok = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(MAX_TARGET - 1));
        assert!(head(&ok).is_ok());
        // Target still open after REQUEST_LINE_LIMIT bytes: 414 without the rest.
        let open = format!("GET /{}", "a".repeat(REQUEST_LINE_LIMIT));
        assert_eq!(parse_head(open.as_bytes()), Parsed::Error(414));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(head(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")), Err(431));
        assert_eq!(head("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), Err(400));
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), Err(400));
        assert_eq!(head("GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Partial);
    }

    #[test]
    fn helpers() {
        assert_eq!(skip_empty_lines(b"\r\n\n\r\nGET"), 5);
        assert_eq!(skip_empty_lines(b"\r"), 0);
        assert_eq!(skip_empty_lines(b"\r\r\n"), 0);
        assert_eq!(trim(b" \t a b\t "), b"a b");
        assert_eq!(trim(b"  "), b"");
        assert_eq!(parse_decimal(b"007"), Some(7));
        assert_eq!(list(b" a ,, b,").collect::<Vec<_>>(), vec![&b"a"[..], &b"b"[..]]);
    }
}

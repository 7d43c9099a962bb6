//! Response serialization from precomputed pieces: a few `extend_from_slice` per response,
//! no formatting on the hot path.

use super::parse::Conn;

/// Interim response to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Body of every `200 OK` response.
pub const HELLO_BODY: &[u8] = b"Hello, World!";

const OK_BEFORE_DATE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: ringpoll\r\nDate: ";
const OK_AFTER_DATE: &[u8] = b"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n";

const NOT_ALLOWED_BEFORE_DATE: &[u8] = b"HTTP/1.1 405 Method Not Allowed\r\nServer: ringpoll\r\nDate: ";
const NOT_ALLOWED_AFTER_DATE: &[u8] = b"\r\nAllow: GET, HEAD\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n";
const NOT_ALLOWED_BODY: &[u8] = b"Method Not Allowed";

const SERVER_DATE: &[u8] = b"\r\nServer: ringpoll\r\nDate: ";
const ERROR_AFTER_DATE: &[u8] = b"\r\nContent-Type: text/plain\r\nContent-Length: ";
const ERROR_CLOSE: &[u8] = b"\r\nConnection: close\r\n\r\n";

/// The `Connection` header line (if any) and the blank line that ends the head.
fn end_of_head(conn: Conn) -> &'static [u8] {
    match conn {
        Conn::KeepAlive => b"\r\n",
        Conn::KeepAlive10 => b"Connection: keep-alive\r\n\r\n",
        Conn::Close => b"Connection: close\r\n\r\n",
    }
}

/// `200 OK` with `Hello, World!` (the body is left out for HEAD; Content-Length stays 13).
pub(super) fn hello(out: &mut Vec<u8>, date: &[u8], head_only: bool, conn: Conn) {
    let end = end_of_head(conn);
    let body = if head_only { &[][..] } else { HELLO_BODY };
    out.reserve(OK_BEFORE_DATE.len() + date.len() + OK_AFTER_DATE.len() + end.len() + body.len());
    out.extend_from_slice(OK_BEFORE_DATE);
    out.extend_from_slice(date);
    out.extend_from_slice(OK_AFTER_DATE);
    out.extend_from_slice(end);
    out.extend_from_slice(body);
}

/// `405 Method Not Allowed` with `Allow: GET, HEAD`; the connection is not at fault.
pub(super) fn not_allowed(out: &mut Vec<u8>, date: &[u8], conn: Conn) {
    out.extend_from_slice(NOT_ALLOWED_BEFORE_DATE);
    out.extend_from_slice(date);
    out.extend_from_slice(NOT_ALLOWED_AFTER_DATE);
    out.extend_from_slice(end_of_head(conn));
    out.extend_from_slice(NOT_ALLOWED_BODY);
}

/// Status line (without the `HTTP/1.1 ` prefix) and body of each error response.
fn error_parts(status: u16) -> (u16, &'static [u8], &'static [u8]) {
    match status {
        408 => (408, b"408 Request Timeout", b"Request Timeout"),
        413 => (413, b"413 Content Too Large", b"Content Too Large"),
        414 => (414, b"414 URI Too Long", b"URI Too Long"),
        417 => (417, b"417 Expectation Failed", b"Expectation Failed"),
        431 => (431, b"431 Request Header Fields Too Large", b"Request Header Fields Too Large"),
        501 => (501, b"501 Not Implemented", b"Not Implemented"),
        505 => (505, b"505 HTTP Version Not Supported", b"HTTP Version Not Supported"),
        _ => (400, b"400 Bad Request", b"Bad Request"),
    }
}

/// An error response that ends the connection (`Connection: close`). Unknown statuses are
/// sent as 400. Returns the status actually sent.
pub(super) fn error(out: &mut Vec<u8>, date: &[u8], status: u16) -> u16 {
    let (status, line, body) = error_parts(status);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(line);
    out.extend_from_slice(SERVER_DATE);
    out.extend_from_slice(date);
    out.extend_from_slice(ERROR_AFTER_DATE);
    push_decimal(out, body.len());
    out.extend_from_slice(ERROR_CLOSE);
    out.extend_from_slice(body);
    status
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hello_is_byte_exact() {
        let base = "HTTP/1.1 200 OK\r\nServer: ringpoll\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
                    Content-Type: text/plain\r\nContent-Length: 13\r\n";
        assert_eq!(text(|o| hello(o, DATE, false, Conn::KeepAlive)), format!("{base}\r\nHello, World!"));
        assert_eq!(text(|o| hello(o, DATE, true, Conn::KeepAlive)), format!("{base}\r\n"));
        assert_eq!(
            text(|o| hello(o, DATE, false, Conn::Close)),
            format!("{base}Connection: close\r\n\r\nHello, World!")
        );
        assert_eq!(text(|o| hello(o, DATE, true, Conn::KeepAlive10)), format!("{base}Connection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn not_allowed_is_byte_exact() {
        assert_eq!(
            text(|o| not_allowed(o, DATE, Conn::KeepAlive)),
            "HTTP/1.1 405 Method Not Allowed\r\nServer: ringpoll\r\n\
             Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nAllow: GET, HEAD\r\n\
             Content-Type: text/plain\r\nContent-Length: 18\r\n\r\nMethod Not Allowed"
        );
        assert_eq!(NOT_ALLOWED_BODY.len(), 18);
    }

    #[test]
    fn errors_have_matching_length_and_close() {
        for status in [400u16, 408, 413, 414, 417, 431, 501, 505] {
            let mut out = Vec::new();
            assert_eq!(error(&mut out, DATE, status), status);
            let s = String::from_utf8(out).unwrap();
            let (head, body) = s.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.ends_with("\r\nConnection: close"), "{head}");
            assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{head}");
            assert!(head.contains("\r\nServer: ringpoll\r\nDate: Sun, 06 Nov 1994"), "{head}");
            assert!(head.contains("\r\nContent-Type: text/plain\r\n"), "{head}");
        }
        let mut out = Vec::new();
        assert_eq!(error(&mut out, DATE, 999), 400);
    }

    #[test]
    fn decimal() {
        for n in [0usize, 7, 10, 31, 12345, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}

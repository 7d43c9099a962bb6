//! A tiny, strict HTTP/1.1 response reader for the tests (Content-Length framing only: the
//! server never sends chunked responses).

use std::io::Read;
use std::net::TcpStream;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads responses from one connection, keeping bytes that belong to the next one.
pub struct Reader {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Self {
        Self { stream, buf: Vec::new() }
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 16384];
        let n = self.stream.read(&mut tmp).unwrap_or_else(|e| panic!("reading a response: {e}"));
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    /// Next response; `head` says the request was HEAD (no body follows).
    pub fn response(&mut self, head: bool) -> Response {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(
                self.fill() > 0,
                "EOF before a complete response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head_text = String::from_utf8(self.buf[..end].to_vec()).expect("ASCII response head");
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "status line {status_line:?}");
        let status = status_line[9..12].parse().expect("status code");
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').expect("header line");
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("numeric content-length"))
            .expect("every response has Content-Length");
        self.buf.drain(..end);
        let body_len = if head { 0 } else { len };
        while self.buf.len() < body_len {
            assert!(self.fill() > 0, "EOF inside a response body");
        }
        let body = self.buf.drain(..body_len).collect();
        Response { status, headers, body }
    }

    /// Assert the connection reaches EOF with no further bytes.
    pub fn expect_eof(&mut self) {
        while self.buf.is_empty() {
            if self.fill() == 0 {
                return;
            }
        }
        panic!("unexpected bytes after the last response: {:?}", String::from_utf8_lossy(&self.buf));
    }

    /// Bytes read but not consumed yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

pub const GET: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Check a 200 plaintext response.
pub fn assert_hello(r: &Response, head: bool) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Content-Length"), Some("13"));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Server"), Some("ringpoll"));
    let date = r.header("Date").expect("Date header");
    assert!(date.ends_with(" GMT") && date.len() == 29, "Date {date:?}");
    if head {
        assert!(r.body.is_empty());
    } else {
        assert_eq!(r.body, b"Hello, World!");
    }
}

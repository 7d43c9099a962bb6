//! Shared bits of the reference servers: argument parsing and the HTTP plaintext responder.

use std::net::SocketAddr;

/// `--listen ADDR` (default 127.0.0.1:0); nothing else is configurable: one thread, one
/// runtime, as the comparison needs.
pub fn listen_addr() -> SocketAddr {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .map_or_else(|| "127.0.0.1:0".parse().unwrap(), |a| a.parse().expect("--listen HOST:PORT"))
}

/// Print the address the way `ringpoll serve` does.
pub fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

/// Parse every complete request in `buf` and append a plaintext response for each to
/// `out`; returns the bytes consumed, or `None` on a malformed request (close).
/// Request bodies are not supported (the benchmark sends GETs only).
pub fn answer_all(buf: &[u8], out: &mut Vec<u8>, date: &[u8]) -> Option<usize> {
    let mut used = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[used..]) {
            Ok(httparse::Status::Complete(n)) => {
                used += n;
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: tokio\r\nDate: ");
                out.extend_from_slice(date);
                out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!");
            }
            Ok(httparse::Status::Partial) => return Some(used),
            Err(_) => return None,
        }
    }
}

/// The Date header, formatted at most once per second.
pub struct DateCache {
    secs: u64,
    text: String,
}

impl Default for DateCache {
    fn default() -> Self {
        Self { secs: u64::MAX, text: String::new() }
    }
}

impl DateCache {
    pub fn get(&mut self) -> &[u8] {
        let now = std::time::SystemTime::now();
        let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            self.text = httpdate::fmt_http_date(now);
        }
        self.text.as_bytes()
    }
}

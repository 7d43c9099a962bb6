//! In-test servers on 127.0.0.1:0: thread per connection, std only, every loop bounded by a
//! stop flag (set on drop) and read timeouts.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    /// Requests (HTTP) or reads (echo) handled so far.
    pub handled: Arc<AtomicU64>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Per-connection context handed to handlers.
pub struct ConnCtx {
    pub stop: Arc<AtomicBool>,
    pub handled: Arc<AtomicU64>,
    pub index: u64,
}

/// Start a server calling `handler` on a thread per accepted connection.
pub fn serve<F>(handler: F) -> TestServer
where
    F: Fn(TcpStream, &ConnCtx) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicU64::new(0));
    let handler = Arc::new(handler);
    let (s, h) = (Arc::clone(&stop), Arc::clone(&handled));
    let accept = std::thread::spawn(move || {
        let mut index = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_nodelay(true).unwrap();
                    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let ctx = ConnCtx { stop: Arc::clone(&s), handled: Arc::clone(&h), index };
                    index += 1;
                    let handler = Arc::clone(&handler);
                    std::thread::spawn(move || handler(stream, &ctx));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    TestServer { addr, stop, accept: Some(accept), handled }
}

/// Read once (bounded by the read timeout): `None` on EOF/error/stop, `Some(0)` on timeout.
pub fn read_some(stream: &mut TcpStream, buf: &mut [u8], ctx: &ConnCtx) -> Option<usize> {
    if ctx.stop.load(Ordering::Relaxed) {
        return None;
    }
    match stream.read(buf) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => Some(0),
        Err(_) => None,
    }
}

/// An echo server; `corrupt(conn_index, stream_offset) -> bool` flips the byte at that offset.
pub fn echo_server(corrupt: impl Fn(u64, u64) -> bool + Send + Sync + 'static) -> TestServer {
    serve(move |mut s, ctx| {
        let mut buf = vec![0; 64 * 1024];
        let mut off = 0u64;
        while let Some(n) = read_some(&mut s, &mut buf, ctx) {
            if n == 0 {
                continue;
            }
            for (i, b) in buf[..n].iter_mut().enumerate() {
                if corrupt(ctx.index, off + i as u64) {
                    *b ^= 0x20;
                }
            }
            off += n as u64;
            ctx.handled.fetch_add(1, Ordering::Relaxed);
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

/// An HTTP server: for request number `n` (over all connections) `respond(n)` gives the
/// response bytes and a delay to wait before sending them. Requests of one read are answered
/// together (pipelining).
pub fn http_server(respond: impl Fn(u64) -> (Vec<u8>, Duration) + Send + Sync + 'static) -> TestServer {
    serve(move |mut s, ctx| {
        let mut buf = vec![0; 64 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        while let Some(n) = read_some(&mut s, &mut buf, ctx) {
            if n == 0 {
                continue;
            }
            carry.extend_from_slice(&buf[..n]);
            let mut delay = Duration::ZERO;
            while let Some(end) = carry.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = carry.drain(..end + 4).collect();
                // What the load generator sends, exactly: anything else is a 400.
                let valid = head.starts_with(b"GET /") && head.windows(17).any(|w| w == b" HTTP/1.1\r\nHost: ");
                let idx = ctx.handled.fetch_add(1, Ordering::Relaxed);
                let (resp, d) = if valid { respond(idx) } else { (bad_request(), Duration::ZERO) };
                out.extend_from_slice(&resp);
                delay = delay.max(d);
            }
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            if !out.is_empty() {
                if s.write_all(&out).is_err() {
                    return;
                }
                out.clear();
            }
        }
    })
}

pub fn bad_request() -> Vec<u8> {
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec()
}

pub fn ok_response() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!".to_vec()
}

/// A port with nothing listening on it.
pub fn dead_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// One request as the recording server parsed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// An HTTP server that parses every request (httparse, Content-Length bodies), keeps it in
/// `log`, and answers `200 OK`. Anything unparsable is answered 400 and closed.
pub fn recording_server() -> (TestServer, Arc<std::sync::Mutex<Vec<Recorded>>>) {
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = Arc::clone(&log);
    let srv = serve(move |mut s, ctx| {
        let mut buf = vec![0; 64 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        while let Some(n) = read_some(&mut s, &mut buf, ctx) {
            carry.extend_from_slice(&buf[..n]);
            let mut out = Vec::new();
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                let head_len = match req.parse(&carry) {
                    Ok(httparse::Status::Complete(len)) => len,
                    Ok(httparse::Status::Partial) => break,
                    Err(_) => {
                        let _ = s.write_all(&bad_request());
                        return;
                    }
                };
                let hs: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                let len: usize = hs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                if carry.len() < head_len + len {
                    break;
                }
                let rec = Recorded {
                    method: req.method.unwrap_or_default().to_string(),
                    path: req.path.unwrap_or_default().to_string(),
                    headers: hs,
                    body: carry[head_len..head_len + len].to_vec(),
                };
                carry.drain(..head_len + len);
                l.lock().unwrap().push(rec);
                ctx.handled.fetch_add(1, Ordering::Relaxed);
                out.extend_from_slice(&ok_response());
            }
            if !out.is_empty() && s.write_all(&out).is_err() {
                return;
            }
        }
    });
    (srv, log)
}

/// An echo server that counts every byte it receives (in `handled`).
pub fn counting_echo_server() -> TestServer {
    serve(|mut s, ctx| {
        let mut buf = vec![0; 64 * 1024];
        while let Some(n) = read_some(&mut s, &mut buf, ctx) {
            if n == 0 {
                continue;
            }
            ctx.handled.fetch_add(n as u64, Ordering::Relaxed);
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

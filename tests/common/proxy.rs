//! Proxy test helpers: start the proxy on any backend or relay variant, in-test upstreams that
//! hand one relayed connection to the test, clients from chosen 127.0.0.x addresses, and the
//! Prometheus endpoint parsed.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use super::{ServerProc, IO_TIMEOUT};

/// The io_uring relay mode that is not the default (both must stay correct).
pub const URING_OTHER_RELAY: &str = "copy";

/// Generate one `#[test]` per backend, plus the epoll zero-copy relay (`epoll+splice`) and
/// io_uring's other relay mode (`uring+other-relay`), for each body `fn name(variant: &str)`
/// (start the proxy with [`proxy_to`] or [`proxy_args`]).
#[macro_export]
macro_rules! on_every_proxy_variant {
    ($($name:ident),* $(,)?) => {
        $crate::on_every_backend!($($name),*);
        mod epoll_splice { $( #[test] fn $name() { super::$name("epoll+splice") } )* }
        mod uring_other_relay {
            $( #[test] fn $name() { if $crate::common::uring_usable() { super::$name("uring+other-relay") } } )*
        }
    };
}

/// The backend of a variant and the flags that select it.
pub fn variant(v: &str) -> (&str, Vec<&'static str>) {
    match v.split_once('+') {
        Some((b, "splice")) => (b, vec!["--splice"]),
        Some((b, "other-relay")) => (b, vec!["--uring-relay", URING_OTHER_RELAY]),
        // `uring+on` / `uring+off`: `ServerProc` turns them into flags (`backend_args`).
        Some((_, "on" | "off")) => (v, Vec::new()),
        Some((_, x)) => panic!("unknown variant {x}"),
        None => (v, Vec::new()),
    }
}

/// `ringpoll serve --mode proxy` on a variant, one `--upstream` per address, plus `extra`.
pub fn proxy_to(v: &str, upstreams: &[SocketAddr], extra: &[&str]) -> ServerProc {
    let ups: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
    let mut args: Vec<&str> = Vec::new();
    for u in &ups {
        args.extend(["--upstream", u.as_str()]);
    }
    args.extend(extra);
    proxy_args(v, &args)
}

/// `ringpoll serve --mode proxy` on a variant with these arguments (upstreams included).
pub fn proxy_args(v: &str, args: &[&str]) -> ServerProc {
    let (backend, mut all) = variant(v);
    all.extend(args);
    ServerProc::start(backend, "proxy", &all)
}

/// The address `--metrics 127.0.0.1:0` bound (the stdout line after `listening on`).
pub fn metrics_addr(px: &ServerProc) -> SocketAddr {
    px.metrics_addr()
}

/// One scrape of `/metrics`, parsed.
pub struct Metrics(prometheus_parse::Scrape);

impl Metrics {
    pub fn scrape(addr: SocketAddr) -> Self {
        let mut s = super::connect(addr);
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let text = String::from_utf8(super::read_to_eof(&mut s)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        Self(prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap())
    }

    /// The sum of the samples of `name` (without the `ringpoll_` prefix) whose labels include
    /// `labels`; panics if there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let full = format!("ringpoll_{name}");
        let mut found = false;
        let mut total = 0.0;
        for s in self.0.samples.iter().filter(|s| s.metric == full) {
            if labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
                found = true;
                total += match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    _ => panic!("{full}: not a number"),
                };
            }
        }
        assert!(found, "no {full} with {labels:?}");
        total
    }

    /// `ringpoll_upstream_<what>` of one upstream (summed over workers).
    pub fn upstream(&self, what: &str, upstream: SocketAddr) -> f64 {
        self.sum(&format!("upstream_{what}"), &[("upstream", &upstream.to_string())])
    }

    /// Closes counted with `reason`, summed over workers.
    pub fn closed(&self, reason: &str) -> f64 {
        self.sum("connections_closed_total", &[("reason", reason)])
    }
}

/// Connect to `to`, from `from` (any port) when given; timeouts set, Nagle off.
pub fn connect_from(to: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(ip) = from {
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    sock.connect_timeout(&to.into(), IO_TIMEOUT)?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One connection through the proxy to a [`super::upstream::TestUpstream`]: send `payload`,
/// get the upstream's tag and the echo, close cleanly. Returns the tag.
pub fn round_trip(proxy: SocketAddr, from: Option<IpAddr>, payload: &[u8]) -> Result<u8, String> {
    let mut s = connect_from(proxy, from).map_err(|e| format!("connect: {e}"))?;
    s.write_all(payload).map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0u8; payload.len() + 1];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if got[1..] != *payload {
        return Err("the echo differs".into());
    }
    s.shutdown(Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
    match s.read(&mut got) {
        Ok(0) => Ok(got[0]),
        Ok(n) => Err(format!("{n} bytes after the echo")),
        Err(e) => Err(format!("waiting for the close: {e}")),
    }
}

/// A connection through the proxy that stays open: one byte sent, the tag and echo read.
pub fn hold(proxy: SocketAddr) -> (TcpStream, u8) {
    let mut s = connect_from(proxy, None).unwrap();
    s.write_all(b"h").unwrap();
    let mut got = [0u8; 2];
    s.read_exact(&mut got).unwrap();
    (s, got[0])
}

/// A one-shot in-test upstream: hands the proxy's first relayed connection to `f` on a thread.
/// The proxy connects once to every upstream when it starts (and closes at once) to warn about
/// upstreams that do not answer: call the returned `go` once the proxy listens; connections
/// already closed by then are those probes and are skipped.
pub fn custom_upstream<T: Send + 'static>(
    f: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, mpsc::Receiver<T>, Go) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if go_rx.recv_timeout(IO_TIMEOUT).is_err() {
            return;
        }
        l.set_nonblocking(false).unwrap();
        for _ in 0..16 {
            let Ok((s, _)) = l.accept() else { return };
            s.set_nonblocking(true).unwrap();
            let probe = matches!(s.peek(&mut [0u8; 1]), Ok(0));
            s.set_nonblocking(false).unwrap();
            if probe {
                continue;
            }
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            let _ = tx.send(f(s));
            return;
        }
    });
    (addr, rx, Go(go_tx))
}

/// Lets a [`custom_upstream`] start accepting.
pub struct Go(mpsc::Sender<()>);

impl Go {
    pub fn go(self) {
        self.0.send(()).unwrap();
    }
}

/// Connect to `addr` and send `bytes`; the proxy must close the connection (FIN or reset)
/// without answering a byte, within IO_TIMEOUT.
pub fn expect_closed(addr: SocketAddr, bytes: &[u8], what: &str) {
    // Raw connect: the proxy may reset the connection before any socket option is set.
    let mut c = TcpStream::connect(addr).unwrap();
    let _ = c.write_all(bytes);
    let _ = c.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected a close after sending {bytes:?}, got {other:?}"),
    }
}

/// A port nobody listens on.
pub fn closed_port() -> SocketAddr {
    // Bound but not listening, and kept bound until the test process ends: connects to it
    // are refused, and no other test's server can be given the port meanwhile (a port only
    // released would be free for the next bind to port 0, and then answer).
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    std::mem::forget(s);
    addr
}

/// Wait (bounded) for `cond` on fresh scrapes; panics with `what` if it never holds.
pub fn wait_metrics(addr: SocketAddr, what: &str, mut cond: impl FnMut(&Metrics) -> bool) {
    let ok = super::eventually(Duration::from_secs(20), || cond(&Metrics::scrape(addr)));
    assert!(ok, "{what}: never seen on /metrics");
}

//! `--metrics ADDR`: the workers' counters in the Prometheus text exposition format, served on
//! `GET /metrics` (every other path answers 404) by one background thread.
//!
//! The listener is bound before `listening on` is printed, so a script that sees that line can
//! scrape at once, and a bad address fails the start. The thread reads what workers publish
//! (relaxed loads of their own cache-padded blocks): scraping never slows a worker. Accept
//! errors that mean the process is out of descriptors pause it like the workers' accept loops
//! (no busy loop), each pause counted in `ringpoll_metrics_accept_backoffs_total`.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringpoll_proto::upstream::HealthBoard;
use ringpoll_proto::CloseReason;
use ringpoll_sys::socket::{self, is_per_connection_accept_error, is_resource_exhaustion};
use tracing::{debug, warn};

use crate::accesslog::Dropped;
use crate::stats::{Counters, SharedCounters, SharedUpstreams};
use crate::{RateLimit, ACCEPT_BACKOFF};

/// What the endpoint reports.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub workers: Vec<Arc<SharedCounters>>,
    pub upstreams: Vec<Arc<SharedUpstreams>>,
    /// Group names and their upstreams' addresses, indexed like [`SharedUpstreams::groups`].
    pub groups: Vec<(String, Vec<SocketAddr>)>,
    /// The groups' active health.
    pub boards: Vec<Arc<HealthBoard>>,
    /// The access log's dropped records (not the log itself: its writer must be able to end).
    pub access_log: Option<Dropped>,
    /// Times the endpoint's own accept failed (out of descriptors, say) and paused.
    pub accept_backoffs: Arc<AtomicU64>,
}

/// Bind the metrics listener (non-blocking: the metrics thread waits for connections in
/// poll(2), see [`serve`]).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("cannot listen on {addr} for --metrics: {e}"));
    let l = TcpListener::bind(addr).map_err(context)?;
    l.set_nonblocking(true).map_err(context)?;
    Ok(l)
}

/// Serve `listener` on a background thread.
pub fn spawn(listener: TcpListener, source: Source) -> io::Result<()> {
    std::thread::Builder::new().name("ringpoll-metrics".into()).spawn(move || serve(&listener, &source))?;
    Ok(())
}

fn serve(listener: &TcpListener, source: &Source) {
    let mut log = RateLimit::new(Duration::from_secs(1));
    // The listener is non-blocking (from `bind`, or handed over by `--takeover`): waited for
    // in poll(2), never in a blocking accept(2) (see `socket::wait_acceptable`).
    loop {
        let accepted = socket::wait_acceptable(listener.as_fd()).and_then(|()| listener.accept());
        // Each answer blocks, bounded by its timeouts.
        match accepted.and_then(|(s, _)| s.set_nonblocking(false).map(|()| s)) {
            Ok(s) => {
                if let Err(e) = answer(s, source) {
                    debug!("metrics: {e}");
                }
            }
            Err(e)
                if is_per_connection_accept_error(&e)
                    || matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                source.accept_backoffs.fetch_add(1, Relaxed);
                if log.allow(Instant::now()) {
                    if is_resource_exhaustion(&e) {
                        warn!("metrics: accept: {e}; pausing for {ACCEPT_BACKOFF:?}");
                    } else {
                        warn!("metrics: accept: {e}");
                    }
                }
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

fn answer(mut s: TcpStream, source: &Source) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let head_ok = loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        match httparse::Request::new(&mut headers).parse(&req) {
            Ok(httparse::Status::Complete(_)) => break true,
            Ok(httparse::Status::Partial) if req.len() < 8192 => {}
            _ => break false,
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Request::new(&mut headers);
    let parsed = head_ok && r.parse(&req).is_ok();
    let path = r.path.unwrap_or("").split('?').next().unwrap_or("");
    let (status, body) = match (parsed, r.method) {
        (false, _) => ("400 Bad Request", "bad request\n".to_string()),
        (true, Some("GET" | "HEAD")) if path == "/metrics" => ("200 OK", render(source)),
        (true, Some("GET" | "HEAD")) => ("404 Not Found", "not found: the metrics are at /metrics\n".to_string()),
        (true, _) => ("405 Method Not Allowed", "method not allowed\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    if r.method != Some("HEAD") {
        s.write_all(body.as_bytes())?;
    }
    Ok(())
}

/// A family of per-worker series.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&Counters) -> u64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "connections_accepted_total",
        help: "Connections accepted.",
        kind: "counter",
        value: |c| c.accepted,
    },
    Family {
        name: "connections_open",
        help: "Echo and HTTP connections open now.",
        kind: "gauge",
        value: |c| c.open_connections,
    },
    Family { name: "proxy_pairs_open", help: "Proxy pairs open now.", kind: "gauge", value: |c| c.open_pairs },
    Family {
        name: "received_bytes_total",
        help: "Bytes received from peers (both sides of proxy pairs).",
        kind: "counter",
        value: |c| c.conn.bytes_in,
    },
    Family {
        name: "sent_bytes_total",
        help: "Bytes sent to peers (both sides of proxy pairs).",
        kind: "counter",
        value: |c| c.conn.bytes_out,
    },
    Family {
        name: "requests_total",
        help: "HTTP requests answered, echo reads that carried data, proxy reads relayed.",
        kind: "counter",
        value: |c| c.conn.requests,
    },
    Family {
        name: "backpressure_pauses_total",
        help: "Times reading a peer paused because its pending output passed the high watermark.",
        kind: "counter",
        value: |c| c.conn.backpressure_pauses,
    },
    Family { name: "syscalls_total", help: "System calls made by the worker.", kind: "counter", value: |c| c.syscalls },
    Family { name: "wakeups_total", help: "Event loop iterations.", kind: "counter", value: |c| c.wakeups },
    Family {
        name: "accept_exhausted_total",
        help: "Accepts that failed for lack of descriptors or memory (accepting paused briefly).",
        kind: "counter",
        value: |c| c.accept_exhausted,
    },
    Family {
        name: "rejected_fd_setsize_total",
        help: "Connections refused because select cannot watch their descriptor.",
        kind: "counter",
        value: |c| c.rejected_fd_setsize,
    },
    Family {
        name: "upstream_connect_failures_total",
        help: "Upstream connects that failed or timed out.",
        kind: "counter",
        value: |c| c.upstream_failures,
    },
    Family {
        name: "uring_enobufs_total",
        help: "io_uring receives that found the buffer ring empty.",
        kind: "counter",
        value: |c| c.uring_enobufs,
    },
    Family {
        name: "uring_rearms_total",
        help: "io_uring multishot requests re-armed after the kernel ended them.",
        kind: "counter",
        value: |c| c.uring_rearms,
    },
    Family {
        name: "uring_zc_sends_total",
        help: "io_uring zero-copy sends completed.",
        kind: "counter",
        value: |c| c.uring_zc_sends,
    },
    Family {
        name: "uring_bundles_total",
        help: "io_uring receive completions that carried several buffers (recv bundles).",
        kind: "counter",
        value: |c| c.uring_bundles,
    },
    Family {
        name: "uring_held_sends_total",
        help: "io_uring sends straight out of a receive buffer (echo and relay without a copy).",
        kind: "counter",
        value: |c| c.uring_held_sends,
    },
];

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP ringpoll_{name} {help}\n# TYPE ringpoll_{name} {kind}");
}

/// The exposition text.
#[must_use]
pub fn render(source: &Source) -> String {
    let snaps: Vec<Counters> = source.workers.iter().map(|w| w.snapshot()).collect();
    let mut out = String::with_capacity(4096);
    for f in FAMILIES {
        header(&mut out, f.name, f.help, f.kind);
        for (w, s) in snaps.iter().enumerate() {
            let _ = writeln!(out, "ringpoll_{}{{worker=\"{w}\"}} {}", f.name, (f.value)(s));
        }
    }
    header(&mut out, "connections_closed_total", "Connections and proxy pairs closed, by reason.", "counter");
    for (w, s) in snaps.iter().enumerate() {
        for r in CloseReason::ALL {
            let _ = writeln!(
                out,
                "ringpoll_connections_closed_total{{worker=\"{w}\",reason=\"{}\"}} {}",
                r.name(),
                s.conn.closed_by(r)
            );
        }
    }
    header(
        &mut out,
        "metrics_accept_backoffs_total",
        "Times this endpoint's accept failed (out of descriptors, say) and paused before retrying.",
        "counter",
    );
    let _ = writeln!(out, "ringpoll_metrics_accept_backoffs_total {}", source.accept_backoffs.load(Relaxed));
    render_upstreams(&mut out, source);
    if let Some(log) = &source.access_log {
        header(
            &mut out,
            "access_log_dropped_total",
            "Access log lines dropped because the writer was behind.",
            "counter",
        );
        let _ = writeln!(out, "ringpoll_access_log_dropped_total {}", log.get());
    }
    out
}

fn render_upstreams(out: &mut String, source: &Source) {
    if source.groups.is_empty() {
        return;
    }
    type Get = fn(&ringpoll_proto::upstream::PeerStats, bool) -> u64;
    let families: [(&str, &str, &str, Get); 6] = [
        (
            "upstream_up",
            "1 when the worker may send connections to the upstream now (active and passive health).",
            "gauge",
            |_, up| u64::from(up),
        ),
        ("upstream_connections_open", "Proxy pairs using the upstream now.", "gauge", |s, _| s.open),
        ("upstream_connections_total", "Connections sent to the upstream.", "counter", |s, _| s.total),
        ("upstream_failures_total", "Connects to the upstream that failed or timed out.", "counter", |s, _| s.failures),
        (
            "upstream_sent_bytes_total",
            "Bytes relayed to the upstream (counted when a pair ends).",
            "counter",
            |s, _| s.bytes_to,
        ),
        (
            "upstream_received_bytes_total",
            "Bytes relayed from the upstream (counted when a pair ends).",
            "counter",
            |s, _| s.bytes_from,
        ),
    ];
    let now = Instant::now();
    for (name, help, kind, get) in families {
        header(out, name, help, kind);
        for (w, shared) in source.upstreams.iter().enumerate() {
            for (g, (gname, addrs)) in source.groups.iter().enumerate() {
                for (i, addr) in addrs.iter().enumerate() {
                    let (s, passively_up) = shared.snapshot(g, i, now);
                    let up = passively_up && source.boards.get(g).is_none_or(|b| b.is_up(i));
                    let _ = writeln!(
                        out,
                        "ringpoll_{name}{{worker=\"{w}\",group=\"{}\",upstream=\"{addr}\"}} {}",
                        escape(gname),
                        get(&s, up)
                    );
                }
            }
        }
    }
}

/// A label value as the exposition format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

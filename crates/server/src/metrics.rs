//! `--metrics ADDR`: a tiny plain-text endpoint with every worker's counters.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::stats::SharedCounters;

/// Serve `GET /metrics` (any path) in Prometheus text format on a background thread.
pub fn spawn(addr: SocketAddr, workers: Vec<Arc<SharedCounters>>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new().name("ringpoll-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let body = render(&workers);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if let Err(e) = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body.as_bytes())) {
                debug!("metrics: {e}");
            }
        }
    })?;
    Ok(local)
}

/// Prometheus text exposition of the counters, one series per worker.
#[must_use]
pub fn render(workers: &[Arc<SharedCounters>]) -> String {
    let snaps: Vec<_> = workers.iter().map(|w| w.snapshot()).collect();
    let mut out = String::new();
    if let Some(first) = snaps.first() {
        for (i, (name, _)) in first.fields().into_iter().enumerate() {
            out.push_str(&format!("# TYPE ringpoll_{name} counter\n"));
            for (w, s) in snaps.iter().enumerate() {
                out.push_str(&format!("ringpoll_{name}{{worker=\"{w}\"}} {}\n", s.fields()[i].1));
            }
        }
    }
    out
}

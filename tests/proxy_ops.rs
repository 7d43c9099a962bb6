//! What an operator sees of the proxy, on every backend and relay variant: the access log (one
//! line per finished pair, JSON to a file and text to stderr, with the byte counts each way)
//! and the per-upstream metrics (open and total connections, failures, health, bytes).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::proxy::{closed_port, connect_from, hold, metrics_addr, proxy_to, round_trip, wait_metrics, Metrics};
use common::upstream::TestUpstream;
use common::*;

on_every_proxy_variant!(access_log_has_one_line_per_pair_with_its_bytes, per_upstream_metrics_move);

/// A file in the temporary directory, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(what: &str, v: &str) -> Self {
        Self(std::env::temp_dir().join(format!("ringpoll-{what}-{}-{}", std::process::id(), v.replace('+', "-"))))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn access_log_has_one_line_per_pair_with_its_bytes(v: &str) {
    let a = TestUpstream::start(b'A');
    let log = TempFile::new("access.json", v);
    let px = proxy_to(v, &[a.addr], &["--access-log", log.path(), "--access-log-format", "json"]);
    let listener = px.addr.to_string();
    // client address -> (bytes up, bytes down, close reason)
    let mut want: HashMap<String, (u64, u64, &str)> = HashMap::new();
    for i in 0..10usize {
        let payload = Rng::new(i as u64).bytes(1 + 997 * i);
        let mut c = connect_from(px.addr, None).unwrap();
        c.write_all(&payload).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let got = read_to_eof(&mut c);
        assert_eq!(got.len(), payload.len() + 1, "{v}: the tag and the echo");
        want.insert(c.local_addr().unwrap().to_string(), (payload.len() as u64, got.len() as u64, "normal"));
    }
    // A client that resets after its answer.
    let (c, _) = hold(px.addr);
    want.insert(c.local_addr().unwrap().to_string(), (1, 2, "error"));
    set_linger_zero(&c);
    drop(c);
    let (code, err) = px.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{v}: {err}");

    // Written by the time the process exits.
    let text = std::fs::read_to_string(log.path()).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{v}: {e}: {l}"))).collect();
    assert_eq!(lines.len(), want.len(), "{v}: one line per pair: {text}");
    for l in &lines {
        let client = l["client"].as_str().unwrap();
        let (up, down, close) = want[client];
        assert_eq!(l["listener"], listener, "{v}: {l}");
        assert_eq!(l["upstream"], a.addr.to_string(), "{v}: {l}");
        assert_eq!((l["bytes_up"].as_u64(), l["bytes_down"].as_u64()), (Some(up), Some(down)), "{v}: {l}");
        assert_eq!(l["close"], close, "{v}: {l}");
        assert!(l["duration_s"].as_f64().is_some_and(|d| (0.0..60.0).contains(&d)), "{v}: {l}");
        assert!(l["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}: {l}");
    }

    // Text to stderr, behind a PROXY header: the header's client, our listener, payload bytes.
    let mut px = proxy_to(v, &[a.addr], &["--access-log", "-", "--accept-proxy"]);
    px.collect_stderr();
    let mut c = connect_from(px.addr, None).unwrap();
    c.write_all(b"PROXY TCP4 127.3.3.3 127.0.0.9 5555 443\r\nabc").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut c), b"Aabc", "{v}");
    let listener = px.addr.to_string();
    assert!(
        eventually(IO_TIMEOUT, || px.stderr_so_far().contains(" 127.3.3.3:5555 ")),
        "{v}: no access log line: {}",
        px.stderr_so_far()
    );
    let (_, err) = px.terminate(Duration::from_secs(10));
    let line = err.lines().find(|l| l.contains(" 127.3.3.3:5555 ")).unwrap();
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 8, "{v}: TIME CLIENT LISTENER UPSTREAM UP DOWN DURATION REASON: {line}");
    let upstream = a.addr.to_string();
    assert_eq!(f[1..6], ["127.3.3.3:5555", &listener, &upstream, "3", "4"], "{v}: {line}");
    assert!(f[6].parse::<f64>().is_ok() && f[7] == "normal", "{v}: {line}");
}

fn per_upstream_metrics_move(v: &str) {
    let a = TestUpstream::start(b'A');
    let dead = closed_port();
    let px = proxy_to(v, &[a.addr, dead], &["--metrics", "127.0.0.1:0", "--fail-timeout", "60s"]);
    let m = metrics_addr(&px);
    let s = Metrics::scrape(m);
    for (what, value) in [("up", 1.0), ("connections_open", 0.0), ("connections_total", 0.0), ("failures_total", 0.0)] {
        assert_eq!((s.upstream(what, a.addr), s.upstream(what, dead)), (value, value), "{v}: {what} at the start");
    }

    // Three held connections: all on A (a connect to the dead one is refused, retried on A, and
    // marks it down for the 60 s window).
    let held: Vec<_> = (0..3).map(|_| hold(px.addr)).collect();
    let a_addr = a.addr;
    wait_metrics(m, "3 open on A", |s| s.upstream("connections_open", a_addr) == 3.0);
    let s = Metrics::scrape(m);
    assert_eq!(s.upstream("connections_total", a.addr), 3.0, "{v}");
    assert_eq!((s.upstream("failures_total", dead), s.upstream("up", dead)), (1.0, 0.0), "{v}: refused, down");
    assert_eq!(s.upstream("connections_open", dead), 0.0, "{v}");
    assert_eq!(s.upstream("sent_bytes_total", a.addr), 0.0, "{v}: bytes count when a pair ends");

    // Five round trips of 1000 bytes, then the held ones end: bytes each way.
    for _ in 0..5 {
        round_trip(px.addr, None, &[7u8; 1000]).unwrap();
    }
    drop(held);
    wait_metrics(m, "every pair ended", |s| {
        s.upstream("connections_open", a_addr) == 0.0 && s.upstream("connections_total", a_addr) == 8.0
    });
    wait_metrics(m, "the bytes of every pair", |s| {
        s.upstream("sent_bytes_total", a_addr) == 5.0 * 1000.0 + 3.0
            && s.upstream("received_bytes_total", a_addr) == 5.0 * 1001.0 + 3.0 * 2.0
    });
    let s = Metrics::scrape(m);
    assert_eq!((s.upstream("sent_bytes_total", dead), s.upstream("received_bytes_total", dead)), (0.0, 0.0), "{v}");
}

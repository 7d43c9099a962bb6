//! HTTP mode against in-test servers: latency, status classes, chunked + pipelined framing,
//! reconnects after `Connection: close`, and the JSON report's fields.

mod common;

use std::time::Duration;

use common::{http_server, ok_response};
use ringpoll_load::{run_load, LoadConfig, LoadPoller, Report};

fn cfg(target: String, secs: f64) -> LoadConfig {
    let mut c = LoadConfig::new(target);
    c.duration = Duration::from_secs_f64(secs);
    c.connections = 4;
    c
}

#[test]
fn fixed_10ms_server_gives_p50_between_10_and_12ms() {
    let srv = http_server(|_| (ok_response(), Duration::from_millis(10)));
    let r = run_load(cfg(srv.url("/"), 1.5)).unwrap();
    assert!(r.requests > 100, "{r:#?}");
    assert_eq!(r.errors.total(), 0, "{r:#?}");
    let p50 = r.latency_us.unwrap().p50;
    assert!((10_000..=12_000).contains(&p50), "p50 {p50} us\n{}", r.summary());
    assert_eq!(r.latency_us, r.latency_uncorrected_us, "closed loop: one measure");
}

#[test]
fn non_2xx_statuses_are_counted_as_errors() {
    let srv = http_server(|n| {
        let resp = match n % 4 {
            0 => b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found".to_vec(),
            1 => b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n".to_vec(),
            2 => b"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n".to_vec(),
            _ => ok_response(),
        };
        (resp, Duration::ZERO)
    });
    let r = run_load(cfg(srv.url("/"), 0.5)).unwrap();
    let s = r.status;
    assert!(r.requests > 40, "{r:#?}");
    // Only 2xx responses are successful requests; the others are errors, never requests.
    assert_eq!(s.s2xx, r.requests);
    assert!(s.s2xx > 0 && s.s3xx > 0 && s.s4xx > 0 && s.s5xx > 0, "{s:?}");
    assert_eq!(r.errors.status, s.s3xx + s.s4xx + s.s5xx + s.other);
    assert_eq!(r.errors.read, 0, "{r:#?}");
    assert!(r.summary().contains("Non-2xx responses"), "{}", r.summary());
}

#[test]
fn chunked_pipelined_responses_are_framed() {
    // Chunk sizes vary per request; trailers on some; all responses of a read sent together.
    let srv = http_server(|n| {
        let body = format!("hello number {n}, padded {}", "x".repeat((n % 37) as usize));
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let step = 1 + (n % 7) as usize;
        for piece in body.as_bytes().chunks(step) {
            resp.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            resp.extend_from_slice(piece);
            resp.extend_from_slice(b"\r\n");
        }
        resp.extend_from_slice(if n % 2 == 0 { b"0\r\n\r\n" } else { b"0\r\nX-T: 1\r\n\r\n" });
        (resp, Duration::ZERO)
    });
    for poller in [LoadPoller::Epoll, LoadPoller::EpollEt] {
        let mut c = cfg(srv.url("/chunked"), 0.4);
        c.depth = 8;
        c.poller = poller;
        let r = run_load(c).unwrap();
        assert!(r.requests > 100, "{r:#?}");
        assert_eq!(r.errors.total(), 0, "{r:#?}");
        assert_eq!(r.status.s2xx, r.requests);
        assert_eq!(r.depth, 8);
    }
}

#[test]
fn connection_close_responses_reconnect_without_errors() {
    let srv = http_server(|_| {
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(), Duration::ZERO)
    });
    let r = run_load(cfg(srv.url("/"), 0.5)).unwrap();
    assert!(r.requests > 20, "{r:#?}");
    assert_eq!(r.errors.total(), 0, "{r:#?}");
    assert!(r.connects >= r.requests.saturating_sub(4), "one connection per request: {r:#?}");
}

#[test]
fn json_has_the_documented_fields() {
    let srv = http_server(|_| (ok_response(), Duration::ZERO));
    let mut c = cfg(srv.url("/"), 1.2);
    c.timeline = true;
    c.idle = 3;
    c.threads = 2;
    let r = run_load(c).unwrap();
    let j = serde_json::to_value(&r).unwrap();
    for f in [
        "target",
        "mode",
        "connections",
        "threads",
        "idle",
        "depth",
        "size",
        "rate_requested",
        "duration_s",
        "requests",
        "rps",
        "bytes_read",
        "bytes_written",
        "latency_us",
        "latency_uncorrected_us",
        "errors",
        "status",
        "idle_connected",
        "timeline",
        "client_cpu_us_per_request",
    ] {
        assert!(j.get(f).is_some(), "missing {f} in {j}");
    }
    for f in ["p50", "p75", "p90", "p99", "p999", "p9999", "max", "mean", "stdev"] {
        assert!(j["latency_us"].get(f).is_some() && j["latency_uncorrected_us"].get(f).is_some(), "missing {f}");
    }
    for f in ["connect", "read", "write", "timeout", "mismatch", "status"] {
        assert!(j["errors"].get(f).is_some(), "missing errors.{f}");
    }
    for f in ["2xx", "3xx", "4xx", "5xx"] {
        assert!(j["status"].get(f).is_some(), "missing status.{f}");
    }
    assert_eq!(j["mode"], "http");
    assert_eq!(j["idle_connected"], 3);
    let rows = j["timeline"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        assert!(row.get("t").is_some() && row.get("rps").is_some() && row.get("p99_us").is_some());
    }
    assert!(r.client_cpu_us_per_request > 0.0);
    assert!((r.duration_s - 1.2).abs() < 0.05, "{}", r.duration_s);
    assert!(r.bytes_read > 0 && r.bytes_written > 0);
    // The JSON parses back into the same report (what `compare` does with --json output).
    // (Floats may move by one ulp through serde_json's default float parsing.)
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(
        (back.requests, back.errors, back.status, back.latency_us.map(|l| l.p99)),
        (r.requests, r.errors, r.status, r.latency_us.map(|l| l.p99))
    );
    assert!((back.rps - r.rps).abs() < 1e-6 * r.rps);
}

//! `--metrics`: the Prometheus text read with a real parser (`prometheus-parse`), on every
//! backend; only `/metrics` answers; an address that cannot be bound fails the start before
//! `listening on`; and out of descriptors, the metrics thread backs off instead of spinning.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{assert_hello, Reader, GET};
use common::metrics::{closed, parse, render, request, scrape, sum, text, wait_for};
use common::*;
use prometheus_parse::Value;

on_every_backend!(families_labels_and_gauges_parse_as_prometheus_text);

/// Per-worker families: (name, counter?).
const WORKER_FAMILIES: &[(&str, bool)] = &[
    ("ringpoll_connections_accepted_total", true),
    ("ringpoll_connections_open", false),
    ("ringpoll_proxy_pairs_open", false),
    ("ringpoll_received_bytes_total", true),
    ("ringpoll_sent_bytes_total", true),
    ("ringpoll_requests_total", true),
    ("ringpoll_backpressure_pauses_total", true),
    ("ringpoll_syscalls_total", true),
    ("ringpoll_wakeups_total", true),
    ("ringpoll_accept_exhausted_total", true),
    ("ringpoll_rejected_fd_setsize_total", true),
    ("ringpoll_upstream_connect_failures_total", true),
    ("ringpoll_connections_closed_total", true),
];

const REASONS: [&str; 11] = [
    "normal",
    "error",
    "idle",
    "header_timeout",
    "body_timeout",
    "keepalive_timeout",
    "send_timeout",
    "half_close_timeout",
    "upstream",
    "proxy_header",
    "shutdown",
];

fn families_labels_and_gauges_parse_as_prometheus_text(backend: &str) {
    const OPEN: usize = 5;
    let srv = ServerProc::start(backend, "http", &["--workers", "2", "--metrics", "127.0.0.1:0"]);
    let m = srv.metrics_addr();
    // Some traffic, then connections that stay open.
    for _ in 0..3 {
        let mut r = Reader::new(srv.connect());
        r.stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        assert_hello(&r.response(false), false);
        r.expect_eof();
    }
    let mut open: Vec<Reader> = (0..OPEN).map(|_| Reader::new(srv.connect())).collect();
    for r in &mut open {
        r.stream.write_all(GET).unwrap();
        assert_hello(&r.response(false), false);
    }
    // Counters are published per worker and read one by one: wait for all of them.
    let s = wait_for(m, "the open connections", |s| {
        sum(s, "ringpoll_connections_open", &[]) == OPEN as u64
            && sum(s, "ringpoll_connections_accepted_total", &[]) == 3 + OPEN as u64
            && sum(s, "ringpoll_requests_total", &[]) == 3 + OPEN as u64
            && closed(s, "normal") == 3
    });

    // Every sample has HELP and TYPE, counters end in _total, gauges do not.
    let names: BTreeSet<&str> = s.samples.iter().map(|x| x.metric.as_str()).collect();
    for name in &names {
        assert!(s.docs.get(*name).is_some_and(|d| !d.is_empty()), "{backend}: no # HELP for {name}");
    }
    for x in &s.samples {
        match x.value {
            Value::Counter(v) => {
                assert!(x.metric.ends_with("_total"), "{backend}: counter {} without _total", x.metric);
                assert!(v >= 0.0 && v.fract() == 0.0, "{backend}: {} = {v}", x.metric);
            }
            Value::Gauge(_) => assert!(!x.metric.ends_with("_total"), "{backend}: gauge {}", x.metric),
            ref other => panic!("{backend}: {} has no # TYPE counter|gauge: {other:?}", x.metric),
        }
        let process_wide = x.metric == "ringpoll_metrics_accept_backoffs_total";
        assert_eq!(x.labels.get("worker").is_some(), !process_wide, "{backend}: worker label of {}", x.metric);
        if x.metric.contains("bytes") {
            assert!(x.metric.ends_with("_bytes_total"), "{backend}: byte counter {} lacks the unit", x.metric);
        }
    }
    // Each per-worker family, once per worker, with the right type.
    for (name, counter) in WORKER_FAMILIES {
        let samples: Vec<_> = s.samples.iter().filter(|x| x.metric == *name).collect();
        assert!(!samples.is_empty(), "{backend}: no {name}:\n{}", render(&s));
        for x in &samples {
            assert_eq!(matches!(x.value, Value::Counter(_)), *counter, "{backend}: type of {name}");
        }
        let workers: BTreeSet<&str> = samples.iter().filter_map(|x| x.labels.get("worker")).collect();
        assert_eq!(workers, BTreeSet::from(["0", "1"]), "{backend}: worker labels of {name}");
        if *name == "ringpoll_connections_closed_total" {
            for w in ["0", "1"] {
                let reasons: BTreeSet<&str> = samples
                    .iter()
                    .filter(|x| x.labels.get("worker") == Some(w))
                    .filter_map(|x| x.labels.get("reason"))
                    .collect();
                assert_eq!(reasons, REASONS.into_iter().collect(), "{backend}: close reasons of worker {w}");
            }
        } else {
            assert_eq!(samples.len(), 2, "{backend}: {name} once per worker");
        }
    }
    assert_eq!(sum(&s, "ringpoll_connections_accepted_total", &[]), 3 + OPEN as u64, "{backend}");
    assert_eq!(sum(&s, "ringpoll_requests_total", &[]), 3 + OPEN as u64, "{backend}");
    assert_eq!(closed(&s, "normal"), 3, "{backend}");
    assert!(sum(&s, "ringpoll_received_bytes_total", &[]) > 0 && sum(&s, "ringpoll_sent_bytes_total", &[]) > 0);
    assert_eq!(sum(&s, "ringpoll_proxy_pairs_open", &[]), 0, "{backend}");

    // The gauge follows the connections down; the closes are counted by reason.
    for r in open.drain(..2) {
        drop(r);
    }
    wait_for(m, "two closes", |s| {
        sum(s, "ringpoll_connections_open", &[]) == OPEN as u64 - 2 && closed(s, "normal") == 5
    });
    drop(open);
    let s = wait_for(m, "every close", |s| sum(s, "ringpoll_connections_open", &[]) == 0);
    assert_eq!(closed(&s, "normal"), 3 + OPEN as u64, "{backend}");
    let (code, err) = srv.terminate(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{backend}: {err}");
}

#[test]
fn only_metrics_answers() {
    let srv = ServerProc::start("epoll", "echo", &["--metrics", "127.0.0.1:0"]);
    let m = srv.metrics_addr();
    for (req, status) in [
        ("GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 200),
        ("GET /metrics?name=x HTTP/1.1\r\nHost: t\r\n\r\n", 200),
        ("GET / HTTP/1.1\r\nHost: t\r\n\r\n", 404),
        ("GET /metricsx HTTP/1.1\r\nHost: t\r\n\r\n", 404),
        ("GET /metrics/x HTTP/1.0\r\n\r\n", 404),
        ("GET /favicon.ico HTTP/1.1\r\nHost: t\r\n\r\n", 404),
        ("POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405),
        ("garbage\r\n\r\n", 400),
    ] {
        let (got, head, body) = request(m, req);
        assert_eq!(got, status, "{req:?}: {head}\n{body}");
        if status == 200 {
            assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
            parse(&body);
        } else {
            assert!(!body.contains("ringpoll_"), "{req:?} answered with metrics: {body}");
        }
    }
    let (got, head, body) = request(m, "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((got, body.as_str()), (200, ""), "HEAD: {head}");
    assert!(text(m).contains("# TYPE ringpoll_connections_open gauge"));
}

fn run_serve(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN).arg("serve").args(args).env("RINGPOLL_LOG", "warn").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code(), stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_metrics_address_that_cannot_be_bound_fails_the_start() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    for backend in ["epoll", "uring"] {
        if backend == "uring" && !uring_usable() {
            continue;
        }
        let (code, stdout, err) =
            run_serve(&["--listen", "127.0.0.1:0", "--backend", backend, "--no-pin", "--metrics", &taken]);
        assert_eq!(code, Some(1), "{backend}: {stdout}{err}");
        assert!(!stdout.contains("listening on"), "{backend}: printed `listening on` first: {stdout}");
        assert_eq!(err.trim().lines().count(), 1, "{backend}: one line: {err}");
        assert!(err.contains("--metrics") && err.contains(&taken), "{backend}: {err}");
    }
}

/// The lowest descriptor number a process does not have open.
fn lowest_free_fd(pid: u32) -> u64 {
    let open: BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

fn set_nofile(pid: u32, soft: &str) {
    let ok = Command::new("prlimit").args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")]).status();
    assert!(ok.is_ok_and(|s| s.success()), "prlimit --pid {pid} --nofile={soft}:");
}

#[test]
fn out_of_descriptors_the_metrics_thread_backs_off() {
    let srv = ServerProc::start("epoll", "echo", &["--metrics", "127.0.0.1:0"]);
    let m = srv.metrics_addr();
    let pid = srv.pid();
    assert_eq!(sum(&scrape(m), "ringpoll_metrics_accept_backoffs_total", &[]), 0);
    // Every descriptor number below the limit in use (the metrics thread waits in poll, so it
    // holds no reserved descriptor that /proc cannot show): the scrapes must wait.
    let soft = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        .expect("Max open files in /proc/PID/limits");
    let started = Instant::now();
    set_nofile(pid, &lowest_free_fd(pid).to_string());
    let mut waiting: Vec<_> = (0..3)
        .map(|_| {
            let mut s = connect(m);
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Out of descriptors for a while: a metrics thread that spins on EMFILE counts hundreds of
    // thousands of failed accepts a second.
    std::thread::sleep(Duration::from_secs(1));
    waiting[0].set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut b = [0u8; 1];
    assert!(
        std::io::Read::read(&mut waiting[0], &mut b).is_err(),
        "a scrape was answered although the process had no descriptor to accept it with"
    );
    waiting[0].set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    set_nofile(pid, &soft);
    // Descriptors free again: the waiting scrapes are answered.
    let mut last = String::new();
    for s in &mut waiting {
        let (status, head, body) = common::metrics::finish(s);
        assert_eq!(status, 200, "{head}");
        last = body;
    }
    let backoffs = sum(&parse(&last), "ringpoll_metrics_accept_backoffs_total", &[]);
    let bound = 10 * (started.elapsed().as_millis() as u64 / 100) + 10;
    eprintln!("{backoffs} metrics accept back-offs in {:?}", started.elapsed());
    assert!((1..=bound).contains(&backoffs), "{backoffs} metrics accept back-offs in {:?}", started.elapsed());
    // The workers went on serving meanwhile.
    let mut c = srv.connect();
    c.write_all(b"still").unwrap();
    assert_eq!(read_exact(&mut c, 5), b"still");
    let (code, err) = srv.terminate(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{err}");
}

//! Dead targets, resets, timeouts and interruption: counted, bounded in time, never a hang.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{dead_port, echo_server, http_server, ok_response, serve};
use ringpoll_load::{run_load, run_load_until, LoadConfig};

#[test]
fn dead_target_is_a_clear_error_in_bounded_time() {
    let addr = dead_port();
    let mut c = LoadConfig::new(addr.to_string());
    c.duration = Duration::from_secs(10);
    let t = Instant::now();
    let e = run_load(c).unwrap_err().to_string();
    assert_eq!(e, format!("could not connect to {addr}: connection refused"));
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
}

#[test]
fn dead_target_with_a_short_duration_ends_with_the_duration() {
    let addr = dead_port();
    let mut c = LoadConfig::new(format!("http://{addr}/"));
    c.duration = Duration::from_millis(300);
    let t = Instant::now();
    let e = run_load(c).unwrap_err().to_string();
    assert!(e.contains("could not connect to") && e.contains("connection refused"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
}

#[test]
fn resets_are_counted_and_reconnected() {
    // Answers two requests per connection, then resets it.
    let srv = serve(|s, ctx| {
        let mut s = s;
        let mut buf = [0u8; 4096];
        let mut answered = 0;
        while let Some(n) = common::read_some(&mut s, &mut buf, ctx) {
            if n == 0 {
                continue;
            }
            if answered == 2 {
                let sock = socket2::SockRef::from(&s);
                let _ = sock.set_linger(Some(Duration::ZERO));
                return;
            }
            answered += 1;
            use std::io::Write;
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    let mut c = LoadConfig::new(srv.addr.to_string());
    c.duration = Duration::from_millis(600);
    c.connections = 2;
    c.size = 16;
    let r = run_load(c).unwrap();
    assert!(r.requests >= 4, "{r:#?}");
    assert!(r.errors.read > 0, "{r:#?}");
    assert!(r.connects >= 2, "{r:#?}");
    assert!(r.first_error.is_some());
}

#[test]
fn unanswered_requests_time_out() {
    let srv = http_server(|n| (ok_response(), if n % 2 == 1 { Duration::from_secs(2) } else { Duration::ZERO }));
    let mut c = LoadConfig::new(srv.url("/"));
    c.duration = Duration::from_millis(800);
    c.connections = 2;
    c.timeout = Duration::from_millis(200);
    let t = Instant::now();
    let r = run_load(c).unwrap();
    assert!(r.errors.timeout > 0, "{r:#?}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
}

#[test]
fn stop_flag_returns_partial_results_quickly() {
    let srv = echo_server(|_, _| false);
    let mut c = LoadConfig::new(srv.addr.to_string());
    c.duration = Duration::from_secs(30);
    c.connections = 2;
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(400));
            stop.store(true, Ordering::Relaxed);
        });
        run_load_until(c, &stop).unwrap()
    });
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert!(r.interrupted);
    assert!(r.requests > 0 && r.duration_s < 1.0, "{r:#?}");
}

#[test]
fn bad_configurations_are_refused() {
    let mut c = LoadConfig::new("127.0.0.1:1");
    c.threads = 100;
    assert!(run_load(c).unwrap_err().to_string().contains("--threads"));
    assert!(run_load(LoadConfig::new("https://x:1/")).is_err());
}

/// Reads one request (one read) at a time; `answer(n)` says whether request `n` of this
/// connection is answered (200, keep-alive) or the connection is closed unanswered.
fn closing_server(answer: impl Fn(u64) -> bool + Send + Sync + 'static) -> common::TestServer {
    serve(move |mut s, ctx| {
        use std::io::Write;
        let mut buf = [0u8; 4096];
        let mut n = 0;
        while let Some(got) = common::read_some(&mut s, &mut buf, ctx) {
            if got == 0 {
                continue;
            }
            if !answer(n) {
                return;
            }
            n += 1;
            if s.write_all(&ok_response()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn a_request_whose_connection_closes_unanswered_is_an_error() {
    // Every connection answers its first request and closes on the second without a reply.
    let srv = closing_server(|n| n == 0);
    let mut c = LoadConfig::new(srv.url("/"));
    c.duration = Duration::from_millis(500);
    c.connections = 2;
    let r = run_load(c).unwrap();
    assert!(r.requests >= 2, "{r:#?}");
    assert!(r.errors.read >= 2, "each unanswered request is an error: {r:#?}");
    // One success and one loss per connection (give or take those cut by the window's end).
    assert!(r.requests.abs_diff(r.errors.read) <= 2, "{r:#?}");
    assert!(r.first_error.as_deref().is_some_and(|e| e.contains("closed by the server")), "{r:#?}");
}

#[test]
fn connection_close_is_not_an_error_but_pipelined_requests_it_cuts_off_are() {
    // Depth 1: `Connection: close` on every response, then the server closes: clean.
    let close_each = || {
        http_server(|_| {
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec(), Duration::ZERO)
        })
    };
    let srv = close_each();
    let mut c = LoadConfig::new(srv.url("/"));
    c.duration = Duration::from_millis(400);
    c.connections = 2;
    let r = run_load(c.clone()).unwrap();
    assert!(r.requests > 10 && r.errors.total() == 0, "{r:#?}");
    // Depth 4: the three requests behind the closing response were sent and never answered.
    let srv = closing_server(|n| n == 0);
    c.target = srv.url("/");
    c.depth = 4;
    let r = run_load(c).unwrap();
    assert!(r.errors.read > 0, "{r:#?}");
}

#[test]
fn echo_against_an_http_server_has_no_successful_request() {
    // The case: an HTTP server answers the echo bytes with 400 and closes; every
    // reply fails verification, so nothing is a request.
    let srv = serve(|mut s, ctx| {
        use std::io::Write;
        let mut buf = [0u8; 4096];
        while let Some(n) = common::read_some(&mut s, &mut buf, ctx) {
            if n > 0 {
                let _ = s.write_all(&common::bad_request());
                return;
            }
        }
    });
    let mut c = LoadConfig::new(srv.addr.to_string());
    c.duration = Duration::from_millis(300);
    c.connections = 2;
    let r = run_load(c).unwrap();
    assert_eq!(r.requests, 0, "{r:#?}");
    assert!(r.errors.mismatch + r.errors.read > 0, "{r:#?}");
    assert!(r.latency_us.is_none() && r.latency_uncorrected_us.is_none());
    assert_eq!(r.rps, 0.0);
    let text = r.summary();
    assert!(text.contains("No successful requests") && !text.contains("Latency"), "{text}");
}

#[test]
fn requests_behind_a_connection_close_are_sent_again_not_lost() {
    // Every connection's first response says `Connection: close`, then the server closes: at
    // depth 4 the three requests behind it were never processed, and are sent again on the
    // next connection (RFC 9112 section 9.3.2), so nothing is an error.
    let srv = http_server_closing_after_first();
    let mut c = LoadConfig::new(srv.url("/"));
    c.duration = Duration::from_millis(500);
    c.connections = 2;
    c.depth = 4;
    let r = run_load(c).unwrap();
    assert!(r.requests > 10, "{r:#?}");
    assert_eq!(r.errors.total(), 0, "{r:#?}");
}

/// Answers one request per connection, with `Connection: close`, then closes (whatever else
/// was pipelined behind it).
fn http_server_closing_after_first() -> common::TestServer {
    serve(|mut s, ctx| {
        use std::io::Write;
        let mut buf = [0u8; 4096];
        while let Some(got) = common::read_some(&mut s, &mut buf, ctx) {
            if got > 0 {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
                return;
            }
        }
    })
}

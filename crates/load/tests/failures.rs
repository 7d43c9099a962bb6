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

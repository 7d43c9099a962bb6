//! `ringpoll load` through the real binary, against the real server.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn load(args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = Command::new(BIN).arg("load").args(args).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn echo_and_http_against_the_server_report_clean_json() {
    let echo = ServerProc::start("epoll", "echo", &[]);
    let addr = echo.addr.to_string();
    let (code, j, err) = load(&["--json", "-c", "8", "-d", "500ms", "--size", "100", "--depth", "2", &addr]);
    assert_eq!(code, Some(0), "{err}");
    assert!(j["requests"].as_u64().unwrap() > 100, "{j}");
    assert_eq!(j["errors"]["mismatch"], 0, "{j}");
    for key in ["rps", "latency_us", "latency_uncorrected_us", "errors", "window_start_unix_s", "window_end_unix_s"] {
        assert!(j.get(key).is_some(), "--json lacks {key}: {j}");
    }
    let span = j["window_end_unix_s"].as_f64().unwrap() - j["window_start_unix_s"].as_f64().unwrap();
    assert!((0.4..2.0).contains(&span), "window {span} s");

    let http = ServerProc::start("epoll", "http", &[]);
    let url = format!("http://{}/plaintext", http.addr);
    let (code, j, err) = load(&["--json", "-c", "4", "-d", "500ms", "--depth", "8", &url]);
    assert_eq!(code, Some(0), "{err}");
    assert!(j["status"]["2xx"].as_u64().unwrap() > 100, "{j}");
    assert_eq!(j["errors"]["status"], 0, "{j}");
    assert_eq!(j["errors"]["read"], 0, "{j}");
}

#[test]
fn a_dead_target_fails_clearly_in_bounded_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = Instant::now();
    let (code, _, err) = load(&["-c", "4", "-d", "5s", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("could not connect") && err.contains("refused"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(7), "took {:?}", t.elapsed());
}

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
    // Bound, never listening, held for the whole test: refused, and no other test's server
    // can be given the port meanwhile.
    let hold = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    hold.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = hold.local_addr().unwrap().as_socket().unwrap().port();
    let t = Instant::now();
    let (code, _, err) = load(&["-c", "4", "-d", "5s", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("could not connect") && err.contains("refused"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(7), "took {:?}", t.elapsed());
}

/// `requests N` from the server's exit summary (summed over workers).
fn server_requests(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.starts_with("worker "))
        .filter_map(|l| l.split(" requests ").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn two_loads_at_once_merge_to_the_servers_own_count() {
    let srv = ServerProc::start("epoll", "http", &[]);
    let url = format!("http://{}/", srv.addr);
    let dir = std::env::temp_dir().join(format!("ringpoll-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spawn = |name: &str| {
        let out = std::fs::File::create(dir.join(name)).unwrap();
        Command::new(BIN).args(["load", "--json", "-c", "4", "-d", "700ms", &url]).stdout(out).spawn().unwrap()
    };
    let (mut a, mut b) = (spawn("a.json"), spawn("b.json"));
    assert_eq!(wait_exit(&mut a, Duration::from_secs(30)), Some(0));
    assert_eq!(wait_exit(&mut b, Duration::from_secs(30)), Some(0));
    let (code, merged, err) =
        load(&["merge", "--json", dir.join("a.json").to_str().unwrap(), dir.join("b.json").to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let (code, stderr) = srv.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
    let parts: Vec<serde_json::Value> = ["a.json", "b.json"]
        .iter()
        .map(|f| serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let sum: u64 = parts.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert!(sum > 100, "{parts:?}");
    assert_eq!(merged["requests"].as_u64(), Some(sum));
    assert_eq!(merged["incomplete"], 0, "{merged}");
    assert_eq!(merged["requests"].as_u64(), Some(server_requests(&stderr)), "server: {stderr}");
    assert_eq!(merged["connections"], 8);
    // A percentile of the merged histogram lies between the two runs' own percentiles.
    let p99 = |j: &serde_json::Value| j["latency_us"]["p99"].as_u64().unwrap();
    let (lo, hi) = (p99(&parts[0]).min(p99(&parts[1])), p99(&parts[0]).max(p99(&parts[1])));
    assert!((lo..=hi).contains(&p99(&merged)), "merged p99 {} not in {lo}..={hi}", p99(&merged));
    assert!(merged["latency_histogram"].as_str().is_some_and(|h| h.starts_with("HISTFAAA")), "{merged}");
}

#[test]
fn ignored_or_impossible_flags_exit_2_with_one_line() {
    for (args, needle) in [
        (vec!["--size", "1000", "http://127.0.0.1:1/"], "--size 1000 applies to echo mode"),
        (vec!["-H", "X: 1", "127.0.0.1:1"], "apply to http mode"),
        (vec!["--body", "x", "127.0.0.1:1"], "apply to http mode"),
        (vec!["--pin", "0", "-t", "2", "-c", "2", "127.0.0.1:1"], "--pin lists 1 CPU(s) for 2 threads"),
        (vec!["-m", "HEAD", "http://127.0.0.1:1/"], "-m HEAD"),
        (vec!["https://127.0.0.1:1/"], "https targets are not supported"),
    ] {
        let (code, _, err) = load(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn echo_against_an_http_server_fails_honestly() {
    let http = ServerProc::start("epoll", "http", &[]);
    let out = Command::new(BIN)
        .args(["load", "--mode", "echo", "-c", "2", "-d", "400ms"])
        .arg(http.addr.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("No successful requests"), "{stdout}");
    assert!(!stdout.contains("Latency"), "no latency figures: {stdout}");
    assert!(stderr.contains("no successful request"), "{stderr}");
}

#[test]
fn warm_up_is_announced_as_not_measured() {
    let echo = ServerProc::start("epoll", "echo", &[]);
    let out = Command::new(BIN)
        .args(["load", "-c", "2", "-d", "200ms", "--warmup", "200ms"])
        .arg(echo.addr.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("after a 0.2s warm-up, not measured"), "{stdout}");
    assert!(stdout.contains("after a 0.2s warm-up\n"), "{stdout}");
}

//! `ringpoll compare` on a reduced matrix: one backend, one short workload. Checks the
//! outputs and their documented fields, not the figures (performance is judged by running the
//! benchmark, never by a test).

mod common;

use std::process::Command;

use common::BIN;

#[test]
fn quick_compare_on_a_reduced_matrix_writes_every_output() {
    let out = std::env::temp_dir().join(format!("ringpoll-compare-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new(BIN)
        .args(["compare", "--quick", "--backends", "epoll", "--workloads", "echo-64B-c64", "--duration", "700ms"])
        .args(["--warmup", "200ms", "--no-pin", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "compare failed: {}", String::from_utf8_lossy(&status.stderr));
    assert!(stdout.contains("echo-64B-c64") && stdout.contains("epoll"), "table: {stdout}");
    for f in ["results.json", "report.md", "throughput.svg", "cpu.svg", "latency.svg"] {
        let p = out.join(f);
        assert!(p.is_file() && std::fs::metadata(&p).unwrap().len() > 100, "{f} missing or empty");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    for key in ["suite", "command", "machine", "duration_s", "repeat", "cells", "skipped"] {
        assert!(json.get(key).is_some(), "results.json lacks {key}");
    }
    let cells = json["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 1);
    let cell = &cells[0];
    assert_eq!(cell["label"], "epoll");
    assert!(cell["error"].is_null(), "{cell}");
    let m = &cell["median"];
    for key in ["rps", "p50_us", "p99_us", "p999_us", "cpu_us_per_req", "syscalls_per_req", "user_share", "requests"] {
        assert!(m.get(key).is_some(), "median lacks {key}: {m}");
    }
    assert!(m["requests"].as_u64().unwrap() > 0, "no requests measured: {m}");
    assert!(m["cpu_us_per_req"].as_f64().unwrap() > 0.0, "no server CPU measured: {m}");
    assert!(m["syscalls_per_req"].as_f64().unwrap() > 0.0, "no syscalls counted: {m}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("command: `") && md.contains("| epoll |") && md.contains("cpu.svg"), "{md}");
    let svg = std::fs::read_to_string(out.join("throughput.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("echo-64B-c64"));
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn unknown_backend_is_refused_with_the_list() {
    let out = Command::new(BIN).args(["compare", "--quick", "--backends", "kqueue"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("available: epoll"), "{err}");
}

#[test]
fn compare_knows_the_servers_backends_and_its_other_relay_mode() {
    // compare runs the binary and imports nothing from the server: its lists must match.
    let names: Vec<&str> = ringpoll_server::Backend::ALL.iter().map(|b| b.name()).collect();
    assert_eq!(names, ringpoll_compare::BACKENDS);
    let other = if ringpoll_server::UringConfig::default().zero_copy_relay { "copy" } else { "zero-copy" };
    assert_eq!(ringpoll_compare::URING_OTHER_RELAY, other);
}

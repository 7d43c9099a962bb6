//! `ringpoll compare` on reduced matrices with tiny durations: the outputs and their fields,
//! flag validation, saving as it goes, Ctrl-C, resuming, custom workloads, sweeps and the
//! veth path. Never the figures themselves (performance is judged by running the benchmark,
//! never by a test).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{running_as_root, signal, wait_exit, BIN};

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringpoll-compare-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Tiny runs: 300 ms measured after 100 ms warm-up, unpinned.
const TINY: [&str; 5] = ["--duration", "300ms", "--warmup", "100ms", "--no-pin"];

fn compare(args: &[&str], out: &Path) -> Output {
    Command::new(BIN).arg("compare").args(TINY).args(args).arg("--out").arg(out).output().unwrap()
}

fn json(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

/// (workload, label, rounds measured) of every cell, sorted.
fn cells(j: &serde_json::Value) -> Vec<(String, String, Vec<u64>)> {
    let mut v: Vec<_> = j["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let mut rounds: Vec<u64> =
                c["runs"].as_array().unwrap().iter().map(|r| r["round"].as_u64().unwrap()).collect();
            rounds.sort_unstable();
            (c["workload"]["name"].as_str().unwrap().to_string(), c["label"].as_str().unwrap().to_string(), rounds)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn quick_compare_on_a_reduced_matrix_writes_every_output() {
    let out = out_dir("outputs");
    let o = compare(&["--backends", "epoll,poll", "--workloads", "echo-64B-c64", "--rounds", "2"], &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "compare failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("echo-64B-c64") && stdout.contains("CPU per request"), "{stdout}");
    for f in ["results.json", "report.md", "throughput.svg", "cpu.svg", "latency.svg", "verdicts.svg"] {
        let p = out.join(f);
        assert!(p.is_file() && std::fs::metadata(&p).unwrap().len() > 100, "{f} missing or empty");
    }
    let j = json(&out);
    for key in
        ["suite", "command", "machine", "duration_s", "repeat", "seed", "cells", "verdicts", "progress", "skipped"]
    {
        assert!(j.get(key).is_some(), "results.json lacks {key}");
    }
    assert_eq!(j["complete"], true);
    let c = cells(&j);
    assert_eq!(c.len(), 2, "{c:?}");
    // Two rounds anchored on epoll: `epoll poll epoll` each.
    assert_eq!(j["anchor"], "epoll");
    for (_, label, rounds) in &c {
        let want: &[u64] = if label == "epoll" { &[0, 0, 1, 1] } else { &[0, 1] };
        assert_eq!(rounds, want, "{label}: {c:?}");
    }
    let slots = |label: &str| -> Vec<(u64, u64)> {
        let cell = j["cells"].as_array().unwrap().iter().find(|c| c["label"] == label).unwrap();
        cell["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["round"].as_u64().unwrap(), r["slot"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(slots("epoll"), [(0, 0), (0, 2), (1, 0), (1, 2)]);
    assert_eq!(slots("poll"), [(0, 1), (1, 1)]);
    // Round 0 is measured run by run (it gives the latency figures), round 1 in an
    // interleaved block: both servers running, their load generators taking turns.
    for cell in j["cells"].as_array().unwrap() {
        for r in cell["runs"].as_array().unwrap() {
            let interleaved = r["interleaved"].as_bool().unwrap_or(false);
            assert_eq!(interleaved, r["round"] == 1, "{}: {r}", cell["label"]);
            assert_eq!(r["histogram"].is_string(), !interleaved, "latency only from runs: {r}");
            assert!(r["requests"].as_u64().unwrap() > 0 && r["cpu_us_per_req"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["syscalls_per_req"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    let cell = &j["cells"][0];
    assert!(cell["error"].is_null(), "{cell}");
    let m = &cell["median"];
    for key in ["rps", "p50_us", "p99_us", "p999_us", "cpu_us_per_req", "syscalls_per_req", "user_share", "requests"] {
        assert!(m.get(key).is_some(), "median lacks {key}: {m}");
    }
    assert!(m["requests"].as_u64().unwrap() > 0, "no requests measured: {m}");
    assert!(m["cpu_us_per_req"].as_f64().unwrap() > 0.0, "no server CPU measured: {m}");
    assert!(m["syscalls_per_req"].as_f64().unwrap() > 0.0, "no syscalls counted: {m}");
    assert!(cell["histogram"].as_str().is_some_and(|h| h.starts_with("HISTFAAA")), "merged histogram kept");
    assert!(cell["runs"][0]["histogram"].as_str().is_some(), "each run's histogram kept");
    let v = &j["verdicts"][0];
    assert_eq!(
        (v["a"].as_str(), v["b"].as_str(), v["metric"].as_str()),
        (Some("poll"), Some("epoll"), Some("process_cpu"))
    );
    assert!(v["interval"]["lo"].as_f64().unwrap() <= v["interval"]["hi"].as_f64().unwrap());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("command: `") && md.contains("| epoll |") && md.contains("verdicts.svg"), "{md}");
    assert!(md.contains("95% CI") || md.contains("no difference detectable"), "{md}");
    assert!(md.contains("between two runs of epoll"), "the report says how rounds were run: {md}");
    assert!(md.contains("interleaved block"), "the report says how rounds were measured: {md}");

    // --no-interleave: anchored, every run measured afresh.
    let _ = std::fs::remove_dir_all(&out);
    let o =
        compare(&["--backends", "epoll,poll", "--workloads", "echo-64B-c64", "--rounds", "2", "--no-interleave"], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&out);
    assert_eq!(j["anchor"], "epoll");
    for cell in j["cells"].as_array().unwrap() {
        for r in cell["runs"].as_array().unwrap() {
            assert!(r.get("interleaved").is_none() && r["histogram"].is_string(), "{r}");
        }
    }

    // --no-anchor: every server once per round, no slots.
    let _ = std::fs::remove_dir_all(&out);
    let o = compare(&["--backends", "epoll,poll", "--workloads", "echo-64B-c64", "--rounds", "2", "--no-anchor"], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&out);
    assert!(j.get("anchor").is_none(), "{}", j["anchor"]);
    let c = cells(&j);
    assert!(c.iter().all(|(_, _, r)| r == &[0, 1]), "two paired rounds each: {c:?}");
    assert!(j["cells"][0]["runs"][0].get("slot").is_none());
    assert!(j["verdicts"][0]["interval"]["lo"].as_f64().is_some());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_flags_are_refused_before_anything_runs() {
    let out = out_dir("flags");
    for (args, needle) in [
        (vec!["--backends", "kqueue"], "unknown backend 'kqueue' (valid: epoll"),
        (vec!["--workloads", "echo-1B"], "unknown workload 'echo-1B' (valid: "),
        (vec!["--rounds", "0"], "--rounds must be at least 1"),
        (vec!["--workload", "echo size=lots"], "invalid size"),
        (vec!["--target-ci", "150%"], "between 0% and 100%"),
    ] {
        let o = compare(&args, &out);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.join("results.json").exists(), "{args:?}: nothing may run");
    }
    // CPUs are checked when pinning (without --no-pin).
    let o = Command::new(BIN).args(["compare", "--server-cpu", "4096", "--out"]).arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--server-cpu 4096") || err.contains("one CPU"), "{err}");
    // An --out that cannot be written is refused up front, not after the run.
    let o = Command::new(BIN).args(["compare", "--no-pin", "--out", "/proc/ringpoll-no"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out /proc/ringpoll-no"));
    let _ = std::fs::remove_dir_all(&out);
}

/// Wait (bounded) until results.json in `out` holds at least `runs` measured runs.
fn wait_for_runs(out: &Path, runs: usize) -> bool {
    common::eventually(Duration::from_secs(60), || {
        std::fs::read(out.join("results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|j| cells(&j).iter().map(|c| c.2.len()).sum::<usize>() >= runs)
    })
}

#[test]
fn an_interrupted_run_resumed_gives_the_same_cells_as_an_uninterrupted_one() {
    let args = ["--backends", "epoll,poll", "--workloads", "echo-64B-c64,http-c64", "--rounds", "2", "--seed", "7"];
    let whole = out_dir("whole");
    let o = compare(&args, &whole);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let cut = out_dir("cut");
    let mut child = Command::new(BIN)
        .arg("compare")
        .args(TINY)
        .args(args)
        .arg("--out")
        .arg(&cut)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for_runs(&cut, 2), "no run saved");
    signal(child.id(), "INT");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), Some(130), "Ctrl-C exits 130");
    // The interruption left a valid partial result and a report saying so.
    let partial = json(&cut);
    assert_eq!(partial["complete"], false);
    let measured: usize = cells(&partial).iter().map(|c| c.2.len()).sum();
    // Two workloads, two rounds of `epoll poll epoll`: 12 runs in all.
    assert!((2..12).contains(&measured), "{measured} runs before the interruption");
    let md = std::fs::read_to_string(cut.join("report.md")).unwrap();
    assert!(md.contains("Partial results") && md.contains("--resume"), "{md}");

    let o = Command::new(BIN).args(["compare", "--resume"]).arg(&cut).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let resumed = json(&cut);
    assert_eq!(resumed["complete"], true);
    assert_eq!(cells(&resumed), cells(&json(&whole)), "same cells, same rounds");
    assert_eq!(resumed["seed"], 7);
    // --resume takes no other flags.
    let o = Command::new(BIN).args(["compare", "--rounds", "3", "--resume"]).arg(&cut).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&cut);
}

#[test]
fn a_custom_workload_runs_end_to_end_and_is_reported_with_its_parameters() {
    let out = out_dir("custom");
    let o = compare(&["--backends", "epoll", "--workload", "echo size=1KiB conns=8 depth=4", "--rounds", "1"], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&out);
    let c = &j["cells"][0];
    assert_eq!(c["workload"]["name"], "echo-1KiB-c8-d4");
    assert_eq!((c["workload"]["size"].as_u64(), c["workload"]["conns"].as_u64()), (Some(1024), Some(8)));
    assert!(c["median"]["requests"].as_u64().unwrap() > 0, "{c}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| echo-1KiB-c8-d4 | `echo size=1KiB conns=8 depth=4` (custom) |"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_rate_sweep_writes_curves_and_knees() {
    let out = out_dir("sweep");
    let o = compare(&["--sweep", "rate", "--backends", "epoll", "--workloads", "echo-64B-c64"], &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&out);
    let points = j["sweep"].as_array().unwrap();
    assert_eq!(points.len(), 11, "one probe and ten rates");
    assert_eq!(points[0]["kind"], "probe");
    let rates: Vec<f64> = points[1..].iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert!(rates.windows(2).all(|w| w[0] < w[1]), "rising rates: {rates:?}");
    assert!(points[1]["run"]["offered_rate"].as_f64().is_some());
    assert_eq!(j["knees"][0]["label"], "epoll");
    assert_eq!(j["slo_us"], 1000.0);
    assert!(out.join("curves.svg").is_file());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Knees") && md.contains("| echo-64B-c64 | epoll |"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}

fn have_program(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn netns_list() -> String {
    String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default())
        .into_owned()
}

#[test]
fn veth_is_refused_clearly_without_privilege() {
    if !have_program("setpriv") {
        eprintln!("SKIP: setpriv (util-linux) is not installed");
        return;
    }
    let out = out_dir("veth-refused");
    // Drop CAP_NET_ADMIN and CAP_SYS_ADMIN from every set (works as root and as anyone).
    let o = Command::new("setpriv")
        .args(["--inh-caps=-net_admin,-sys_admin", "--bounding-set=-net_admin,-sys_admin", "--"])
        .arg(BIN)
        .args(["compare", "--net", "veth", "--no-pin", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--net veth needs root") && err.contains("CAP_"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.join("results.json").exists());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn veth_runs_beside_loopback_and_cleans_up() {
    if !running_as_root() {
        eprintln!("SKIP: --net veth needs root");
        return;
    }
    let out = out_dir("veth");
    let child = Command::new(BIN)
        .arg("compare")
        .args(TINY)
        .args(["--net", "veth", "--backends", "epoll", "--workloads", "echo-64B-c64", "--rounds", "1", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let c = cells(&json(&out));
    let names: Vec<&str> = c.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names, ["echo-64B-c64", "echo-64B-c64@veth"]);
    let j = json(&out);
    assert!(j["cells"].as_array().unwrap().iter().all(|c| c["median"]["requests"].as_u64().unwrap_or(0) > 0), "{j}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Loopback and veth side by side"), "{md}");
    let ours = format!("ringpoll-{pid}-");
    assert!(!netns_list().contains(&ours), "namespaces left behind: {}", netns_list());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn compare_knows_the_servers_backends_and_its_other_relay_mode() {
    // compare runs the binary and imports nothing from the server: its lists must match.
    let names: Vec<&str> = ringpoll_server::Backend::ALL.iter().map(|b| b.name()).collect();
    assert_eq!(names, ringpoll_compare::BACKENDS);
    let other = if ringpoll_server::UringConfig::default().zero_copy_relay { "copy" } else { "zero-copy" };
    assert_eq!(ringpoll_compare::URING_OTHER_RELAY, other);
}

/// The processes whose session is `sid` (from /proc/PID/stat: the session is field 6).
fn session_members(sid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        // After the command: state, ppid, pgrp, session.
        if rest.split_whitespace().nth(3).and_then(|s| s.parse::<u32>().ok()) == Some(sid) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn ctrl_c_during_an_interleaved_block_leaves_no_server_or_paused_load_behind() {
    // In a session of its own (setsid execs compare in place: its PID is the session's id),
    // so that every process it starts can be found afterwards.
    let out = out_dir("interleaved-int");
    let mut child = Command::new("setsid")
        .arg(BIN)
        .arg("compare")
        .args(TINY)
        .args(["--backends", "epoll,poll,select", "--workloads", "echo-64B-c64", "--rounds", "50"])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sid = child.id();
    let slots = || {
        std::fs::read(out.join("results.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map_or(0, |j| {
                j["cells"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|c| c["runs"].as_array().unwrap().clone())
                    .filter(|r| r["interleaved"] == true)
                    .count()
            })
    };
    assert!(common::eventually(Duration::from_secs(60), || slots() >= 2), "no interleaved slot saved");
    // Mid-block (each round starts its own): three servers and three load generators, two of
    // them paused, beside compare.
    assert!(
        common::eventually(Duration::from_secs(20), || session_members(sid).len() >= 7),
        "{:?}",
        session_members(sid)
    );
    signal(child.id(), "INT");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), Some(130), "Ctrl-C exits 130");
    assert!(
        common::eventually(Duration::from_secs(10), || session_members(sid).is_empty()),
        "left behind: {:?}",
        session_members(sid)
    );
    let j = json(&out);
    assert_eq!(j["complete"], false);
    let _ = std::fs::remove_dir_all(&out);
}

//! Measuring one cell: start the server pinned to one CPU, drive it with the load generator
//! pinned to the other, and read the server's CPU time and syscall count over exactly the
//! load's measured window.

use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cpustat::{self, CoreTimes};
use crate::matrix::{LoadGen, Net, Proto, Server, Workload};
use crate::netns;
use crate::procs::{self, Proc};
use crate::results::Run;

/// How to run a cell.
#[derive(Clone, Debug)]
pub struct Setup {
    pub ringpoll: PathBuf,
    pub peers_dir: PathBuf,
    pub server_cpu: Option<usize>,
    pub load_cpu: Option<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    /// `--net veth`: the server's and the load's network namespaces.
    pub netns: Option<(String, String)>,
    /// Set by Ctrl-C: the run in progress is abandoned.
    pub stop: Arc<AtomicBool>,
}

impl Setup {
    fn server_ns(&self, w: &Workload) -> Option<&str> {
        (w.net == Net::Veth).then(|| self.netns.as_ref().map(|n| n.0.as_str())).flatten()
    }

    fn load_ns(&self, w: &Workload) -> Option<&str> {
        (w.net == Net::Veth).then(|| self.netns.as_ref().map(|n| n.1.as_str())).flatten()
    }

    fn server_host(&self, w: &Workload) -> IpAddr {
        if self.server_ns(w).is_some() {
            IpAddr::V4(netns::SERVER_IP)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    }
}

/// The run in progress was abandoned because of Ctrl-C.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    cpu: f64,
    user: f64,
    sys: f64,
    syscalls: Option<u64>,
    rss_kib: u64,
    core: Option<CoreTimes>,
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Sample the server every 50 ms until stopped (from inside its network namespace, where
/// its metrics endpoint is).
fn sampler(
    proc: &Proc,
    core: Option<usize>,
    ns: Option<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    let pid = proc.child.id();
    let metrics = proc.metrics;
    std::thread::spawn(move || {
        let metrics = match ns.as_deref().map(netns::enter) {
            Some(Err(_)) => None,
            _ => metrics,
        };
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let at = now_s();
            if let (Ok(cpu), Ok((user, sys))) = (procs::cpu_total(pid), procs::cpu_times(pid)) {
                // `ringpoll_syscalls_total`; binaries older than that named it `ringpoll_syscalls`.
                let syscalls = metrics.and_then(|m| {
                    procs::scrape_counter(m, "syscalls_total")
                        .ok()
                        .filter(|&n| n > 0)
                        .or_else(|| procs::scrape_counter(m, "syscalls").ok())
                });
                let rss_kib = procs::rss_kib(pid).unwrap_or(0);
                let core = core.and_then(|c| cpustat::read(c).ok());
                out.push(Sample { at, cpu, user, sys, syscalls, rss_kib, core });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        out
    })
}

/// The sample nearest to time `t`.
fn nearest(samples: &[Sample], t: f64) -> Option<Sample> {
    samples.iter().copied().min_by(|a, b| (a.at - t).abs().total_cmp(&(b.at - t).abs()))
}

/// Start the server under test for a workload.
pub fn start_server(setup: &Setup, server: &Server, w: &Workload, upstream: Option<&Proc>) -> Result<Proc> {
    let cpu = setup.server_cpu;
    let ns = setup.server_ns(w);
    let host = setup.server_host(w);
    let listen = format!("{host}:0");
    match server {
        Server::Ringpoll { .. }
        | Server::RingpollSplice
        | Server::RingpollUringRelay { .. }
        | Server::RingpollVariant { .. } => {
            let (backend, extra): (&str, Vec<&str>) = match server {
                Server::Ringpoll { backend } => (backend.as_str(), Vec::new()),
                Server::RingpollUringRelay { relay } => ("uring", vec!["--uring-relay", relay.as_str()]),
                Server::RingpollVariant { backend, args, .. } => (backend.as_str(), args.iter().map(String::as_str).collect()),
                _ => ("epoll", vec!["--splice"]),
            };
            let bin = match server {
                Server::RingpollVariant { bin: Some(b), .. } => std::path::PathBuf::from(b),
                _ => setup.ringpoll.clone(),
            };
            let mut cmd = procs::command(ns, cpu, &bin);
            let mode = w.proto.name();
            cmd.args(["serve", "--listen", &listen, "--workers", "1", "--mode", mode, "--backend", backend]);
            cmd.args(["--metrics", "127.0.0.1:0"]);
            if cpu.is_none() {
                cmd.arg("--no-pin");
            }
            if let Some(up) = upstream {
                cmd.args(["--upstream", &up.addr.to_string()]);
            }
            cmd.args(&extra);
            cmd.env("RINGPOLL_LOG", "warn");
            procs::spawn_announcing(cmd, &server.name(), true)
        }
        Server::TokioEcho | Server::MonoioEcho | Server::TokioHttp => {
            let bin = match server {
                Server::TokioEcho => "tokio-echo",
                Server::MonoioEcho => "monoio-echo",
                _ => "tokio-http",
            };
            let path = setup.peers_dir.join(bin);
            if !path.is_file() {
                bail!("{} not built (run bench-scripts/build-peers.sh)", path.display());
            }
            let mut cmd = procs::command(ns, cpu, &path);
            cmd.args(["--listen", &listen]);
            procs::spawn_announcing(cmd, bin, false)
        }
        Server::Nginx => procs::spawn_nginx(
            cpu,
            ns,
            host,
            "nginx",
            "http {\n access_log off;\n keepalive_requests 100000000;\n server {\n  listen {HOST}:{PORT} reuseport;\n  \
             location / { default_type text/plain; return 200 \"Hello, World!\"; }\n }\n}\n",
            false,
        ),
        Server::NginxStream => {
            let up = upstream.context("the nginx stream proxy needs an upstream")?;
            let body = format!(
                "stream {{\n server {{\n  listen {{HOST}}:{{PORT}} reuseport;\n  proxy_pass {};\n  tcp_nodelay on;\n }}\n}}\n",
                up.addr
            );
            procs::spawn_nginx(cpu, ns, host, "nginx-stream", &body, true)
        }
    }
}

/// The cost fields of a run over a window of `seconds` in which the server answered
/// `requests`: its CPU time `cpu`, the share of it in user space, the system calls it
/// counted, and its core's (busy, steal, total) time.
pub(crate) fn costs(
    requests: f64,
    seconds: f64,
    cpu: f64,
    user_share: f64,
    syscalls: Option<u64>,
    core: Option<(f64, f64, f64)>,
) -> Run {
    Run {
        cpu_us_per_req: cpu * 1e6 / requests,
        core_us_per_req: core.map(|(busy, _, _)| busy * 1e6 / requests),
        core_busy: core.map(|(busy, _, total)| busy / total),
        core_steal: core.map(|(_, steal, total)| steal / total),
        user_share,
        syscalls_per_req: syscalls.map(|n| n as f64 / requests),
        server_util: cpu / seconds,
        window_s: seconds,
        ..Run::default()
    }
}

/// User time's share of `ticks` (user + system), from the user times at both ends.
pub(crate) fn user_share(user_before: f64, user_after: f64, ticks: f64) -> f64 {
    if ticks > 0.0 {
        (user_after - user_before) / ticks
    } else {
        0.0
    }
}

/// How much a counter read at both ends grew (`None` if either read failed or it went back).
pub(crate) fn delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    match (before, after) {
        (Some(x), Some(y)) if y >= x => Some(y - x),
        _ => None,
    }
}

/// The fields of `ringpoll load --json` that the comparison reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoadJson {
    requests: u64,
    rps: f64,
    duration_s: f64,
    latency_us: Option<Percentiles>,
    latency_histogram: Option<String>,
    errors: std::collections::BTreeMap<String, u64>,
    window_start_unix_s: f64,
    window_end_unix_s: f64,
    first_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// Measure one cell once: closed loop, or open loop at `rate` requests/s.
pub fn measure(setup: &Setup, server: &Server, w: &Workload, loadgen: LoadGen, rate: Option<f64>) -> Result<Run> {
    if setup.stop.load(Ordering::Relaxed) {
        return Err(Interrupted.into());
    }
    // The proxy's upstream shares the load generator's CPU (and, over veth, its namespace,
    // so that the proxy's upstream traffic crosses the veth too): only the proxy is measured.
    let upstream = if w.proto == Proto::Proxy {
        let (ns, host) = match setup.load_ns(w) {
            Some(ns) => (Some(ns), IpAddr::V4(netns::LOAD_IP)),
            None => (None, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        let mut cmd = procs::command(ns, setup.load_cpu, &setup.ringpoll);
        cmd.args(["serve", "--listen", &format!("{host}:0"), "--workers", "1", "--mode", "echo", "--no-pin"]);
        cmd.env("RINGPOLL_LOG", "warn");
        Some(procs::spawn_announcing(cmd, "upstream echo", false)?)
    } else {
        None
    };
    let proc = start_server(setup, server, w, upstream.as_ref())?;
    std::thread::sleep(Duration::from_millis(200));

    let stop = Arc::new(AtomicBool::new(false));
    let samples = sampler(&proc, setup.server_cpu, setup.server_ns(w).map(String::from), stop.clone());
    let started = now_s();
    let out = match loadgen {
        LoadGen::Ringpoll => run_ringpoll_load(setup, w, &proc, rate),
        LoadGen::Wrk => run_wrk(setup, w, &proc),
    };
    let ended = now_s();
    stop.store(true, Ordering::Relaxed);
    let samples = samples.join().unwrap_or_default();
    let load = out?;
    if load.requests == 0 {
        bail!(
            "no successful request against {} ({} errors{})",
            proc.name,
            load.errors.values().sum::<u64>(),
            load.first_error.map_or(String::new(), |e| format!("; first: {e}"))
        );
    }

    let (t0, t1) = match (load.window_start_unix_s, load.window_end_unix_s) {
        (a, b) if a > 0.0 && b > a => (a, b),
        _ => {
            let span = if load.duration_s > 0.0 { load.duration_s } else { setup.duration.as_secs_f64() };
            (ended - span, ended)
        }
    };
    let (Some(a), Some(b)) = (nearest(&samples, t0), nearest(&samples, t1)) else {
        bail!("no CPU samples of {} (ran {:.1} s)", proc.name, ended - started);
    };
    let window = (b.at - a.at).max(1e-3);
    let cpu = (b.cpu - a.cpu).max(0.0);
    // Requests over the sampled window (it differs from the load's window by < 50 ms).
    let reqs = load.requests.max(1) as f64;
    let per_window = reqs * window / (t1 - t0).max(1e-3);
    let ticks = (b.user - a.user) + (b.sys - a.sys);
    let core = match (a.core, b.core) {
        (Some(x), Some(y)) if y.total > x.total => Some((y.busy - x.busy, y.steal - x.steal, y.total - x.total)),
        _ => None,
    };
    let lat = load.latency_us.unwrap_or_default();
    Ok(Run {
        round: 0,
        slot: None,
        requests: load.requests,
        rps: load.rps,
        p50_us: lat.p50,
        p90_us: lat.p90,
        p99_us: lat.p99,
        p999_us: lat.p999,
        max_us: lat.max,
        errors: load.errors.values().sum(),
        rss_kib: b.rss_kib,
        offered_rate: rate,
        histogram: load.latency_histogram,
        ..costs(per_window, window, cpu, user_share(a.user, b.user, ticks), delta(a.syscalls, b.syscalls), core)
    })
}

/// Run a load generator to completion, or until Ctrl-C (then SIGINT, and the run is
/// abandoned). Returns its stdout.
fn run_child(mut cmd: Command, what: &str, stop: &AtomicBool) -> Result<(std::process::ExitStatus, Vec<u8>, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut interrupted_at: Option<Instant> = None;
    let status = loop {
        if let Some(st) = child.try_wait().with_context(|| format!("waiting for {what}"))? {
            break st;
        }
        if stop.load(Ordering::Relaxed) {
            match interrupted_at {
                None => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
                        nix::sys::signal::Signal::SIGINT,
                    );
                    interrupted_at = Some(Instant::now());
                }
                Some(t) if t.elapsed() > Duration::from_secs(5) => {
                    let _ = child.kill();
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if interrupted_at.is_some() {
        return Err(Interrupted.into());
    }
    Ok((status, stdout, stderr))
}

fn target(w: &Workload, proc: &Proc) -> String {
    match w.proto {
        Proto::Http => format!("http://{}{}", proc.addr, if w.path.is_empty() { "/" } else { &w.path }),
        Proto::Echo | Proto::Proxy => proc.addr.to_string(),
    }
}

/// `ringpoll load` driving `proc` with workload `w` for `duration` after `warmup`, pinned to
/// the load CPU (without `--json` or the rate).
pub(crate) fn load_command(setup: &Setup, w: &Workload, proc: &Proc, duration: Duration, warmup: Duration) -> Command {
    let mut cmd = procs::command(setup.load_ns(w), setup.load_cpu, &setup.ringpoll);
    cmd.arg("load");
    cmd.args(["-t", "1", "-c", &w.conns.to_string(), "--depth", &w.depth.to_string()]);
    cmd.args(["-d", &format!("{}ms", duration.as_millis())]);
    cmd.args(["--warmup", &format!("{}ms", warmup.as_millis())]);
    if w.proto != Proto::Http {
        cmd.args(["--mode", "echo", "--size", &w.size.to_string()]);
    }
    if w.idle > 0 {
        cmd.args(["--idle", &w.idle.to_string()]);
    }
    cmd.arg(target(w, proc));
    cmd
}

fn run_ringpoll_load(setup: &Setup, w: &Workload, proc: &Proc, rate: Option<f64>) -> Result<LoadJson> {
    // Idle connections are opened at the start: leave them time to connect before the window.
    let warmup = setup.warmup.max(Duration::from_millis(500 + w.idle as u64 / 5));
    let mut cmd = load_command(setup, w, proc, setup.duration, warmup);
    cmd.arg("--json");
    if let Some(r) = rate {
        cmd.args(["--rate", &format!("{r:.0}")]);
    }
    let (status, stdout, stderr) = run_child(cmd, "ringpoll load", &setup.stop)?;
    let parsed: Option<LoadJson> = serde_json::from_slice(&stdout).ok();
    match parsed {
        // Exit 1 with a report: nothing succeeded (the caller says so with the counts).
        Some(j) if status.success() || j.requests == 0 => Ok(j),
        _ => bail!("ringpoll load against {} failed: {}", proc.name, stderr.trim()),
    }
}

/// wrk (HTTP only): parse its summary; the whole run is the window.
fn run_wrk(setup: &Setup, w: &Workload, proc: &Proc) -> Result<LoadJson> {
    let wrk = procs::find_program("wrk").context("wrk is not installed")?;
    let mut cmd = procs::command(setup.load_ns(w), setup.load_cpu, &wrk);
    let secs = setup.duration.as_secs().max(1);
    cmd.args(["-t1", &format!("-c{}", w.conns), &format!("-d{secs}s"), "--latency"]).arg(target(w, proc));
    let start = now_s();
    let (_, stdout, _) = run_child(cmd, "wrk", &setup.stop)?;
    let end = now_s();
    let text = String::from_utf8_lossy(&stdout).into_owned();
    parse_wrk(&text, start, end)
}

fn parse_wrk(text: &str, start: f64, end: f64) -> Result<LoadJson> {
    fn dur_us(s: &str) -> Option<f64> {
        let (num, mult) = if let Some(v) = s.strip_suffix("us") {
            (v, 1.0)
        } else if let Some(v) = s.strip_suffix("ms") {
            (v, 1e3)
        } else if let Some(v) = s.strip_suffix('s') {
            (v, 1e6)
        } else if let Some(v) = s.strip_suffix('m') {
            (v, 60e6)
        } else {
            return None;
        };
        num.parse::<f64>().ok().map(|v| v * mult)
    }
    let mut j = LoadJson::default();
    let mut lat = Percentiles::default();
    for line in text.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => j.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", d, ..] => {
                j.requests = n.parse().unwrap_or(0);
                j.duration_s = dur_us(d.trim_end_matches(',')).map_or(0.0, |u| u / 1e6);
            }
            ["50%", v] => lat.p50 = dur_us(v).unwrap_or(0.0),
            ["90%", v] => lat.p90 = dur_us(v).unwrap_or(0.0),
            ["99%", v] => lat.p99 = dur_us(v).unwrap_or(0.0),
            ["Latency", _avg, _stdev, max, ..] => lat.max = dur_us(max).unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                j.errors.insert("status".into(), n.parse().unwrap_or(0));
            }
            _ => {}
        }
    }
    if j.requests == 0 {
        bail!("could not parse wrk output: {text}");
    }
    j.latency_us = Some(lat);
    // wrk connects before its clock starts; the run's tail is the window.
    j.window_end_unix_s = end;
    j.window_start_unix_s = (end - j.duration_s).max(start);
    Ok(j)
}

/// Probe whether a ringpoll backend can run here (io_uring may be refused by the kernel).
pub fn backend_available(ringpoll: &std::path::Path, backend: &str) -> Result<(), String> {
    let mut cmd = Command::new(ringpoll);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--no-pin", "--backend", backend]);
    cmd.env("RINGPOLL_LOG", "error");
    procs::spawn_announcing(cmd, backend, false).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 5s test @ http://127.0.0.1:8080/\n  1 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   512.00us  100.00us   5.20ms   90.00%\n    Req/Sec   120.00k     5.00k  130.00k    80.00%\n  Latency Distribution\n     50%  500.00us\n     75%  600.00us\n     90%  700.00us\n     99%    1.20ms\n  600000 requests in 5.00s, 80.00MB read\nRequests/sec: 120000.00\nTransfer/sec:     16.00MB\n";
        let j = parse_wrk(text, 100.0, 106.0).unwrap();
        assert_eq!(j.requests, 600_000);
        assert!((j.rps - 120_000.0).abs() < 1e-6);
        let l = j.latency_us.unwrap();
        assert!((l.p50 - 500.0).abs() < 1e-6);
        assert!((l.p99 - 1200.0).abs() < 1e-6);
        assert!((l.max - 5200.0).abs() < 1e-6);
        assert_eq!(j.window_start_unix_s, 101.0);
    }

    #[test]
    fn costs_are_per_request_and_per_second_of_the_window() {
        let r = costs(1000.0, 0.5, 0.004, 0.25, Some(3000), Some((0.005, 0.001, 0.5)));
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(r.cpu_us_per_req, 4.0) && close(r.core_us_per_req.unwrap(), 5.0), "{r:?}");
        assert!(close(r.core_busy.unwrap(), 0.01) && close(r.core_steal.unwrap(), 0.002), "{r:?}");
        assert!(close(r.syscalls_per_req.unwrap(), 3.0) && close(r.server_util, 0.008), "{r:?}");
        assert!(close(r.user_share, 0.25) && close(r.window_s, 0.5), "{r:?}");
        assert_eq!((delta(Some(5), Some(9)), delta(Some(9), Some(5)), delta(None, Some(5))), (Some(4), None, None));
        assert!(close(user_share(1.0, 1.5, 2.0), 0.25) && user_share(1.0, 1.0, 0.0) == 0.0);
    }

    #[test]
    fn nearest_sample_is_picked() {
        let s = |at| Sample { at, cpu: at, user: 0.0, sys: 0.0, syscalls: None, rss_kib: 0, core: None };
        let v = vec![s(1.0), s(1.05), s(1.1)];
        assert_eq!(nearest(&v, 1.06).unwrap().at, 1.05);
        assert!(nearest(&[], 1.0).is_none());
    }
}
